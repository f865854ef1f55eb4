//go:build !linux || !cgo

package main

import (
	"context"
	"fmt"
	"runtime"

	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers"
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
func (p *provider) Capabilities() engine.Capabilities {
	return engine.Capabilities{Kind: engine.MemoryGPU}
}
func (p *provider) Alloc(context.Context, int64, bool) (engine.Buffer, error) {
	return engine.Buffer{DmabufFD: -1}, p.err()
}
func (p *provider) Free(context.Context, engine.BufferID) error                  { return p.err() }
func (p *provider) CopyIn(context.Context, engine.BufferID, int64, []byte) error { return p.err() }
func (p *provider) Gather(context.Context, []engine.Copy) error                  { return p.err() }
func (p *provider) ReadBack(context.Context, engine.BufferID, int64, []byte) error {
	return p.err()
}
func (p *provider) Checksum(context.Context, engine.BufferID, int64, int64) (uint32, error) {
	return 0, p.err()
}
func (p *provider) Close() error { return nil }
