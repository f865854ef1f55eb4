//go:build !linux

package providers

import (
	"fmt"
	"os"

	"github.com/blockxfer/blockxfer/providers/memory"
)

// Serve prints that provider plugins need Linux and exits with status 1.
func Serve(impl memory.Provider, cfg *ServeConfig) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", impl.Name(), ErrNotSupported)
	os.Exit(1)
}
