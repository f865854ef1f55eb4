//go:build !linux

package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/blockxfer/blockxfer/providers/memory"
)

func newProvider() memory.Provider {
	fmt.Fprintf(os.Stderr, "blockxfer-provider-example: memfd is not supported on %s\n", runtime.GOOS)
	os.Exit(1)
	return nil
}
