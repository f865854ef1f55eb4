package ec_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/klauspost/reedsolomon"

	"github.com/blockxfer/blockxfer/ec"
	"github.com/blockxfer/blockxfer/engine"
)

// benchShards returns an encoded 4+2 stripe of 1 MiB shards.
func benchShards(b *testing.B, k, m, unit int) [][]byte {
	data := randomBytes(k*unit, 9)
	shards := make([][]byte, k+m)
	for j := range shards {
		shards[j] = make([]byte, unit)
		if j < k {
			copy(shards[j], data[j*unit:])
		}
	}
	codec, err := ec.NewCodec(k, m)
	if err != nil {
		b.Fatal(err)
	}
	if err := codec.Encode(shards); err != nil {
		b.Fatal(err)
	}
	return shards
}

// BenchmarkReconstruct compares the codec the reader uses with
// reedsolomon's own ReconstructData for the same shape: 4+2, 1 MiB shards,
// two data shards lost. Bytes are the stripe's data bytes.
func BenchmarkReconstruct(b *testing.B) {
	const k, m, unit = 4, 2, 1 << 20
	lose := []int{1, 3}
	run := func(b *testing.B, reconstruct func([][]byte) error) {
		shards := benchShards(b, k, m, unit)
		work := make([][]byte, len(shards))
		spare := make([][]byte, len(lose))
		for i := range spare {
			spare[i] = make([]byte, unit)
		}
		b.SetBytes(k * unit)
		b.ResetTimer()
		for b.Loop() {
			copy(work, shards)
			for i, j := range lose {
				work[j] = spare[i][:0]
			}
			if err := reconstruct(work); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		for _, j := range lose {
			if !bytes.Equal(work[j], shards[j]) {
				b.Fatalf("shard %d reconstructed wrong", j)
			}
		}
	}
	b.Run("ec.Codec", func(b *testing.B) {
		codec, _ := ec.NewCodec(k, m)
		run(b, codec.ReconstructData)
	})
	b.Run("reedsolomon", func(b *testing.B) {
		enc, _ := reedsolomon.New(k, m)
		run(b, enc.ReconstructData)
	})
}

// BenchmarkRead reads the same 48 MiB volume striped 4+2 over six
// in-process servers, and whole from one server, in the same run.
func BenchmarkRead(b *testing.B) {
	const size, unit = 48 << 20, 1 << 20
	data := randomBytes(size, 10)
	c := newCluster(b, 7)
	single := c.nodes[6]
	c.nodes = c.nodes[:6]
	man := c.importVolume("vol", data, 4, 2, unit)
	ctx := context.Background()
	buf, err := c.p.Alloc(ctx, size, false)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("striped-4+2", func(b *testing.B) {
		r, err := ec.NewReader(man, ec.ReaderConfig{Dial: c.dial, Provider: c.p})
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		b.SetBytes(size)
		for b.Loop() {
			res, err := r.Read(ctx, 0, size, buf, 0)
			if err != nil || len(res.Degraded) != 0 {
				b.Fatal(err, res)
			}
		}
	})
	b.Run("single-server", func(b *testing.B) {
		s, err := c.dial(ctx, ec.ManifestServer{Addr: single.addr})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Put(ctx, "vol", size, unit, bytes.NewReader(data), true); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(size)
		for b.Loop() {
			hs := s.Submit(ctx, []engine.Request{{Volume: "vol", Length: size, Dst: buf}})
			if r := hs[0].Result(); r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	})
	mem, _ := c.p.Bytes(buf.ID)
	if !bytes.Equal(mem, data) {
		b.Fatal("bytes differ")
	}
}
