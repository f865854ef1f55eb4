package providers

import (
	"context"
	"fmt"
	"testing"

	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
)

var boundarySizes = []int{4 << 20, 16 << 20, 64 << 20}

// benchProviders returns hostmem twice: in process, and behind the plugin
// boundary (served by the test plugin), so the difference is the boundary's
// cost.
func benchProviders(b *testing.B) map[string]memory.Provider {
	h := hostmem.New()
	b.Cleanup(func() { h.Close() })
	return map[string]memory.Provider{
		"plugin":    load(b, testPath, nil),
		"inprocess": h,
	}
}

func sizeName(n int) string { return fmt.Sprintf("%dMiB", n>>20) }

// BenchmarkBoundaryCopyIn copies host bytes into a provider buffer: through
// the plugin (host copy into staging, plugin copy out, pipelined per 4 MiB
// slot) and in process (one copy).
func BenchmarkBoundaryCopyIn(b *testing.B) {
	ctx := context.Background()
	provs := benchProviders(b)
	for _, size := range boundarySizes {
		src := pattern(size, 1)
		for _, name := range []string{"inprocess", "plugin"} {
			p := provs[name]
			b.Run(sizeName(size)+"/"+name, func(b *testing.B) {
				buf, err := p.Alloc(ctx, int64(size), false)
				if err != nil {
					b.Fatal(err)
				}
				defer p.Free(ctx, buf.ID)
				if err := p.CopyIn(ctx, buf.ID, 0, src); err != nil { // warm up pages and staging
					b.Fatal(err)
				}
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					if err := p.CopyIn(ctx, buf.ID, 0, src); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkBoundaryCopyInStaged copies into a plugin buffer from bytes
// that are already in lent staging buffers (AcquireStaging), as when the
// engine receives into staging: one copy, in the plugin, per 4 MiB RPC.
func BenchmarkBoundaryCopyInStaged(b *testing.B) {
	ctx := context.Background()
	p := load(b, testPath, nil)
	var stages [2]*Staging
	for i := range stages {
		st, err := p.AcquireStaging(ctx)
		if err != nil {
			b.Fatal(err)
		}
		copy(st.Bytes, pattern(len(st.Bytes), byte(i)))
		stages[i] = st
	}
	slot := len(stages[0].Bytes)
	for _, size := range boundarySizes {
		b.Run(sizeName(size), func(b *testing.B) {
			buf, err := p.Alloc(ctx, int64(size), false)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Free(ctx, buf.ID)
			run := func() {
				for i, off := 0, 0; off < size; i, off = i+1, off+slot {
					if err := p.CopyIn(ctx, buf.ID, int64(off), stages[i%2].Bytes); err != nil {
						b.Fatal(err)
					}
				}
			}
			run()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				run()
			}
		})
	}
}

// BenchmarkBoundaryReadBack is CopyIn's reverse.
func BenchmarkBoundaryReadBack(b *testing.B) {
	ctx := context.Background()
	provs := benchProviders(b)
	for _, size := range boundarySizes {
		dst := make([]byte, size)
		for _, name := range []string{"inprocess", "plugin"} {
			p := provs[name]
			b.Run(sizeName(size)+"/"+name, func(b *testing.B) {
				buf, err := p.Alloc(ctx, int64(size), false)
				if err != nil {
					b.Fatal(err)
				}
				defer p.Free(ctx, buf.ID)
				if err := p.ReadBack(ctx, buf.ID, 0, dst); err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					if err := p.ReadBack(ctx, buf.ID, 0, dst); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkBoundaryGather gathers size bytes between two buffers in 4 KiB
// fragments (reversed, as scattered devmem frags would be) and as one copy:
// through the plugin only the copy list crosses the boundary.
func BenchmarkBoundaryGather(b *testing.B) {
	ctx := context.Background()
	provs := benchProviders(b)
	for _, size := range boundarySizes {
		for _, frag := range []int{4096, size} {
			fragName := "frag4KiB"
			if frag == size {
				fragName = "whole"
			}
			for _, name := range []string{"inprocess", "plugin"} {
				p := provs[name]
				b.Run(sizeName(size)+"/"+fragName+"/"+name, func(b *testing.B) {
					src, err := p.Alloc(ctx, int64(size), false)
					if err != nil {
						b.Fatal(err)
					}
					defer p.Free(ctx, src.ID)
					dst, err := p.Alloc(ctx, int64(size), false)
					if err != nil {
						b.Fatal(err)
					}
					defer p.Free(ctx, dst.ID)
					n := size / frag
					copies := make([]memory.Copy, n)
					for i := range copies {
						copies[i] = memory.Copy{Src: src.ID, SrcOff: int64((n - 1 - i) * frag), Dst: dst.ID, DstOff: int64(i * frag), Len: int64(frag)}
					}
					if err := p.Gather(ctx, copies); err != nil {
						b.Fatal(err)
					}
					b.SetBytes(int64(size))
					b.ReportAllocs()
					for b.Loop() {
						if err := p.Gather(ctx, copies); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}
