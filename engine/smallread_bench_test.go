package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/engine"
)

// BenchmarkSmallReads keeps depth random reads of 4 KiB (and 64 KiB) in
// flight over loopback, refilling each slot as soon as it completes, as
// `blockcat bench` does: the per-read cost of the server and the client
// together. Profile the server's share with
//
//	go test -run - -bench SmallReads -cpuprofile cpu.out ./engine/
//	go tool pprof -top -focus 'engine.\(\*srvSession\)' engine.test cpu.out
func BenchmarkSmallReads(b *testing.B) {
	ctx := context.Background()
	store, err := catalog.OpenStore(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	const volSize = 64 << 20
	if _, err := store.Create(ctx, "small", volSize, 0, catalog.FillRandom); err != nil {
		b.Fatal(err)
	}
	s, p := benchServe(b, store, 0)
	for _, size := range []int64{4 << 10, 64 << 10} {
		for _, depth := range []int{1, 8} {
			b.Run(fmt.Sprintf("size=%dKiB/depth=%d", size>>10, depth), func(b *testing.B) {
				buf, err := p.Alloc(ctx, size*int64(depth), false)
				if err != nil {
					b.Fatal(err)
				}
				defer p.Free(ctx, buf.ID)
				rng := rand.New(rand.NewPCG(1, 2))
				submit := func(slot int) *engine.Handle {
					off := rng.Int64N(volSize/size) * size
					return s.Submit(ctx, []engine.Request{{Volume: "small", Offset: off, Length: size,
						Dst: buf, DstOff: int64(slot) * size}})[0]
				}
				b.SetBytes(size)
				b.ResetTimer()
				benchDepth(b, depth, submit)
			})
		}
	}
}

// benchDepth runs b.N reads, depth at a time, starting the next one in
// whichever slot finished first.
func benchDepth(b *testing.B, depth int, submit func(slot int) *engine.Handle) {
	type done struct {
		slot int
		res  engine.Result
	}
	finished := make(chan done, depth)
	start := func(slot int) {
		h := submit(slot)
		go func() { finished <- done{slot, h.Result()} }()
	}
	started := 0
	for ; started < min(depth, b.N); started++ {
		start(started)
	}
	for completed := 0; completed < b.N; completed++ {
		d := <-finished
		if d.res.Err != nil {
			b.Fatal(d.res.Err)
		}
		if started < b.N {
			start(d.slot)
			started++
		}
	}
}
