//go:build !linux

package providers

import (
	"context"
	"fmt"
)

// procRunner stands in for the plugin process on systems without plugins.
type procRunner struct {
	pid  int
	life *lifeline
}

func (r *procRunner) closePipes() {}

// Load returns an error wrapping ErrNotSupported: provider plugins need
// Linux.
func Load(ctx context.Context, path string, opts *LoadOptions) (*Plugin, error) {
	return nil, fmt.Errorf("providers: load %s: %w", path, ErrNotSupported)
}
