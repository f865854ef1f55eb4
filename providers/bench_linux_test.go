package providers

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
)

var boundarySizes = []int{4 << 20, 16 << 20, 64 << 20}

// benchProviders returns hostmem three times: in process, and behind the
// plugin boundary (served by the test plugin) over the ring and over gRPC
// alone, so the difference is the boundary's cost.
func benchProviders(b *testing.B) map[string]memory.Provider {
	h := hostmem.New()
	b.Cleanup(func() { h.Close() })
	return map[string]memory.Provider{
		"plugin":      load(b, testPath, nil),
		"plugin-grpc": load(b, testPath, &LoadOptions{NoRing: true}),
		"inprocess":   h,
	}
}

// benchNames are benchProviders' names in the order the benchmarks run
// them, alternating so that a shared machine's load falls on all alike.
var benchNames = []string{"inprocess", "plugin", "plugin-grpc"}

func sizeName(n int) string { return fmt.Sprintf("%dMiB", n>>20) }

// BenchmarkBoundaryCopyIn copies host bytes into a provider buffer: through
// the plugin (host copy into staging, plugin copy out, pipelined per 4 MiB
// slot) and in process (one copy).
func BenchmarkBoundaryCopyIn(b *testing.B) {
	ctx := context.Background()
	provs := benchProviders(b)
	for _, size := range boundarySizes {
		src := pattern(size, 1)
		for _, name := range benchNames {
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
		for _, name := range benchNames {
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
			for _, name := range benchNames {
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

// BenchmarkRingGatherDescriptors measures how many gather descriptors the
// ring carries per second: the test plugin's Gather only returns (as a
// device queueing the copies would), so what is measured is the host
// encoding the batch, the doorbells, the plugin decoding and checking every
// copy, and the completion. Batches of 64 and 1024 4 KiB frags, from 1 and
// 4 callers at once; frags/s is the figure to read.
func BenchmarkRingGatherDescriptors(b *testing.B) {
	ctx := context.Background()
	for _, ring := range []bool{true, false} {
		p := load(b, testPath, &LoadOptions{Env: []string{"TESTPLUGIN_GATHER_NOP=1"}, NoRing: !ring})
		src, err := p.Alloc(ctx, 64<<20, false)
		if err != nil {
			b.Fatal(err)
		}
		dst, err := p.Alloc(ctx, 64<<20, false)
		if err != nil {
			b.Fatal(err)
		}
		path := "ring"
		if !ring {
			path = "grpc"
		}
		for _, batch := range []int{64, 256, 1024} { // 256: devmem.RXConfig's default GatherBatch
			for _, callers := range []int{1, 4} {
				b.Run(fmt.Sprintf("%s/batch%d/callers%d", path, batch, callers), func(b *testing.B) {
					copies := make([][]memory.Copy, callers)
					for c := range copies {
						for i := range batch {
							off := int64((c*batch+i)%16384) * 4096
							copies[c] = append(copies[c], memory.Copy{Src: src.ID, SrcOff: off, Dst: dst.ID, DstOff: off, Len: 4096})
						}
					}
					b.ReportAllocs()
					var next atomic.Int64
					start := time.Now()
					b.SetParallelism(1)
					var wg sync.WaitGroup
					for c := range callers {
						wg.Go(func() {
							for next.Add(1) <= int64(b.N) {
								if err := p.Gather(ctx, copies[c]); err != nil {
									b.Error(err)
									return
								}
							}
						})
					}
					wg.Wait()
					b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "frags/s")
				})
			}
		}
	}
}

// BenchmarkBoundaryInterleaved is BenchmarkBoundaryCopyIn and
// BenchmarkBoundaryCopyInStaged at 4 MiB measured in alternation: each
// round copies 4 MiB in once per variant (in process; through the ring
// from a plain slice; through the ring from lent staging; over gRPC), so a
// shared machine's load falls on all alike, and it reports each variant's
// median and its speed relative to in process (x-inprocess: in-process
// time over the variant's, higher is better). Run it with
// -benchtime 200x or more.
func BenchmarkBoundaryInterleaved(b *testing.B) {
	ctx := context.Background()
	const size = 4 << 20
	provs := benchProviders(b)
	src := pattern(size, 1)
	bufs := map[string]memory.BufferID{}
	for _, name := range benchNames {
		buf, err := provs[name].Alloc(ctx, size, false)
		if err != nil {
			b.Fatal(err)
		}
		bufs[name] = buf.ID
	}
	plugin := provs["plugin"].(*Plugin)
	st, err := plugin.AcquireStaging(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Release()
	copy(st.Bytes, src)
	variants := []struct {
		name string
		run  func() error
	}{
		{"inprocess", func() error { return provs["inprocess"].CopyIn(ctx, bufs["inprocess"], 0, src) }},
		{"ring", func() error { return plugin.CopyIn(ctx, bufs["plugin"], 0, src) }},
		{"ring-staged", func() error { return plugin.CopyIn(ctx, bufs["plugin"], 0, st.Bytes[:size]) }},
		{"grpc", func() error { return provs["plugin-grpc"].CopyIn(ctx, bufs["plugin-grpc"], 0, src) }},
	}
	times := make([][]time.Duration, len(variants))
	for _, v := range variants { // warm up pages and staging
		if err := v.run(); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		for i, v := range variants {
			start := time.Now()
			if err := v.run(); err != nil {
				b.Fatal(err)
			}
			times[i] = append(times[i], time.Since(start))
		}
	}
	median := func(d []time.Duration) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[len(s)/2].Nanoseconds())
	}
	base := median(times[0])
	for i, v := range variants {
		m := median(times[i])
		b.ReportMetric(m, v.name+"-ns")
		if i > 0 {
			b.ReportMetric(base/m, v.name+"-x-inprocess")
		}
	}
}
