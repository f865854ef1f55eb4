package catalog

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

func TestCRCCombine(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 5))
	for _, n := range [][2]int{{0, 0}, {0, 7}, {5, 0}, {1, 1}, {3, 4096}, {65536, 65536}, {100000, 12345}} {
		a := make([]byte, n[0])
		b := make([]byte, n[1])
		for i := range a {
			a[i] = byte(rng.Uint32())
		}
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		want := crc32.Checksum(append(append([]byte(nil), a...), b...), castagnoli)
		got := crcCombine(crc32.Checksum(a, castagnoli), crc32.Checksum(b, castagnoli), int64(len(b)))
		if got != want {
			t.Errorf("combine(%d, %d bytes) = %08x, want %08x", n[0], n[1], got, want)
		}
	}
	// The operator for a length composes with itself: two 64 KiB shifts
	// are one 128 KiB shift.
	op64 := zerosOp(64 << 10)
	twice := op64.then(&op64)
	if twice != zerosOp(128<<10) {
		t.Error("zerosOp(64K) twice differs from zerosOp(128K)")
	}
}

// TestBlockTables: each block size's byte table appends that many zero
// bytes to a CRC, as its operator does (and as the bytes would); other
// sizes have none.
func TestBlockTables(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 7))
	for bs := int64(MinBlockSize); bs <= MaxBlockSize; bs <<= 1 {
		tab := blockTable(bs)
		if tab == nil {
			t.Fatalf("no table for %d-byte blocks", bs)
		}
		op := zerosOp(bs)
		a, b := make([]byte, 100), make([]byte, bs)
		for i := range a {
			a[i] = byte(rng.Uint32())
		}
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		want := crc32.Checksum(append(append([]byte(nil), a...), b...), castagnoli)
		if got := tab.times(crc32.Checksum(a, castagnoli)) ^ crc32.Checksum(b, castagnoli); got != want {
			t.Errorf("%d-byte table: combined %08x, want %08x", bs, got, want)
		}
		for range 1000 {
			v := rng.Uint32()
			if tab.times(v) != op.times(v) {
				t.Fatalf("%d-byte table and operator differ at %08x", bs, v)
			}
		}
	}
	for _, bs := range []int64{1, 2048, 12 << 10, 128 << 10} {
		if blockTable(bs) != nil {
			t.Errorf("a table for %d-byte blocks", bs)
		}
	}
}
