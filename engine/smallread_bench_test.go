package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
)

// BenchmarkSmallReads keeps depth random reads of 4 KiB (and 64 KiB) in
// flight over loopback, refilling each slot as soon as it completes, as
// `blockcat bench` does: the per-read cost of the server and the client
// together, on a volume with the default block CRCs (64 KiB) and on one
// with 4 KiB blocks (`--crc-block 4KiB`). Profile the server's share with
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
	crcBlocks := []int64{64 << 10, 4 << 10}
	for _, bs := range crcBlocks {
		if _, err := store.Create(ctx, fmt.Sprint("small", bs), volSize, 0, catalog.FillRandom, catalog.WithBlockSize(bs)); err != nil {
			b.Fatal(err)
		}
	}
	s, p := benchServe(b, store, 0)
	for _, bs := range crcBlocks {
		for _, size := range []int64{4 << 10, 64 << 10} {
			for _, depth := range []int{1, 8} {
				benchSmallReads(b, s, p, fmt.Sprint("small", bs), volSize, bs, size, depth)
			}
		}
	}
}

// benchSmallReads runs one case of BenchmarkSmallReads.
func benchSmallReads(b *testing.B, s *engine.Session, p *hostmem.Provider, vol string, volSize, bs, size int64, depth int) {
	ctx := context.Background()
	b.Run(fmt.Sprintf("crc=%dKiB/size=%dKiB/depth=%d", bs>>10, size>>10, depth), func(b *testing.B) {
		buf, err := p.Alloc(ctx, size*int64(depth), false)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Free(ctx, buf.ID)
		rng := rand.New(rand.NewPCG(1, 2))
		submit := func(slot int) *engine.Handle {
			off := rng.Int64N(volSize/size) * size
			return s.Submit(ctx, []engine.Request{{Volume: vol, Offset: off, Length: size,
				Dst: buf, DstOff: int64(slot) * size}})[0]
		}
		b.SetBytes(size)
		b.ResetTimer()
		benchDepth(b, depth, submit)
	})
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
