package ec

import (
	"errors"
	"testing"
)

func TestLayoutPlacement(t *testing.T) {
	for _, l := range []Layout{
		{Size: 1, K: 1, M: 1, Unit: 4096, Servers: 2},
		{Size: 40 << 20, K: 4, M: 2, Unit: 1 << 20, Servers: 6},
		{Size: 40<<20 + 1, K: 4, M: 2, Unit: 1 << 20, Servers: 9},
		{Size: 123456789, K: 3, M: 2, Unit: 64 << 10, Servers: 7},
		{Size: 5 << 20, K: 10, M: 4, Unit: 4096, Servers: 14},
	} {
		if err := l.Validate(); err != nil {
			t.Fatal(err)
		}
		n, w := l.Servers, l.Shards()
		held := make([]int64, n)
		data := make([]int64, n)
		var covered int64
		for i := range l.Stripes() {
			used := map[int]bool{}
			for j := range w {
				s := l.Server(i, j)
				if used[s] {
					t.Fatalf("%+v: stripe %d puts two shards on server %d", l, i, s)
				}
				used[s] = true
				if l.ShardOf(i, s) != j {
					t.Fatalf("%+v: ShardOf(%d, %d) = %d, want %d", l, i, s, l.ShardOf(i, s), j)
				}
				if got := l.LocalIndex(i, j); got != held[s] {
					t.Fatalf("%+v: LocalIndex(%d, %d) = %d, want %d (stripe order)", l, i, j, got, held[s])
				}
				held[s]++
				if j < l.K {
					data[s]++
					off, k := l.DataRange(i, j)
					if k > 0 && off != covered {
						t.Fatalf("%+v: data shard %d of stripe %d starts at %d, want %d", l, j, i, off, covered)
					}
					covered += k
				}
			}
			for s := range n {
				if !used[s] && l.ShardOf(i, s) != -1 {
					t.Fatalf("%+v: ShardOf(%d, %d) names a shard the server does not hold", l, i, s)
				}
			}
			// Over every N consecutive stripes each server holds
			// exactly K data and M parity shards.
			if (i+1)%int64(n) == 0 {
				for s := range n {
					if held[s] != (i+1)/int64(n)*int64(w) || data[s] != (i+1)/int64(n)*int64(l.K) {
						t.Fatalf("%+v: after %d stripes server %d holds %d shards (%d data), want %d (%d)",
							l, i+1, s, held[s], data[s], (i+1)/int64(n)*int64(w), (i+1)/int64(n)*int64(l.K))
					}
				}
			}
		}
		if covered != l.Size {
			t.Fatalf("%+v: data shards cover %d bytes", l, covered)
		}
		lo, hi := held[0], held[0]
		for s := range n {
			if l.Held(s) != held[s] {
				t.Fatalf("%+v: Held(%d) = %d, counted %d", l, s, l.Held(s), held[s])
			}
			lo, hi = min(lo, held[s]), max(hi, held[s])
		}
		if hi-lo > int64(w) {
			t.Fatalf("%+v: servers hold %d..%d shards", l, lo, hi)
		}
	}
}

func TestLayoutValidate(t *testing.T) {
	for _, l := range []Layout{
		{Size: 1, K: 0, M: 1, Unit: 4096, Servers: 2},
		{Size: 1, K: 1, M: 0, Unit: 4096, Servers: 2},
		{Size: 1, K: 4, M: 2, Unit: 4096, Servers: 5},
		{Size: 1, K: 200, M: 57, Unit: 4096, Servers: 257},
		{Size: 1, K: 1, M: 1, Unit: 4095, Servers: 2},
		{Size: 1, K: 1, M: 1, Unit: 128 << 20, Servers: 2},
		{Size: 0, K: 1, M: 1, Unit: 4096, Servers: 2},
		{Size: 1, K: 1, M: 1, Unit: 4096, Servers: MaxServers + 1},
	} {
		if err := l.Validate(); !errors.Is(err, ErrLayout) {
			t.Errorf("%+v: Validate = %v, want ErrLayout", l, err)
		}
	}
}
