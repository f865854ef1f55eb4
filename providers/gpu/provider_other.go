//go:build !linux || !cgo

package main

import (
	"context"
	"fmt"
	"runtime"

	"github.com/blockxfer/blockxfer/providers"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// provider stands in where the CUDA provider cannot be built (not Linux, or
// cgo disabled): it serves, and reports itself unusable.
type provider struct{ why string }

func newProvider(cfg config) *provider {
	return &provider{why: fmt.Sprintf("the gpu provider needs Linux and cgo; this build is %s/%s with cgo disabled or unavailable", runtime.GOOS, runtime.GOARCH)}
}

func (p *provider) err() error { return fmt.Errorf("gpu: %w: %s", providers.ErrUnusable, p.why) }

func (p *provider) Name() string           { return "gpu" }
func (p *provider) UnusableReason() string { return p.why }
func (p *provider) Capabilities() memory.Capabilities {
	return memory.Capabilities{Kind: memory.GPU}
}
func (p *provider) Alloc(context.Context, int64, bool) (memory.Buffer, error) {
	return memory.Buffer{DmabufFD: -1}, p.err()
}
func (p *provider) Free(context.Context, memory.BufferID) error                  { return p.err() }
func (p *provider) CopyIn(context.Context, memory.BufferID, int64, []byte) error { return p.err() }
func (p *provider) Gather(context.Context, []memory.Copy) error                  { return p.err() }
func (p *provider) ReadBack(context.Context, memory.BufferID, int64, []byte) error {
	return p.err()
}
func (p *provider) Checksum(context.Context, memory.BufferID, int64, int64) (uint32, error) {
	return 0, p.err()
}
func (p *provider) Close() error { return nil }
