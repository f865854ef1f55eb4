package catalog

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// failingReader fails every read: RangeCRC of a whole extent must not read.
type failingReader struct{}

func (failingReader) ReadAt([]byte, int64) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestRangeCRC(t *testing.T) {
	s := newStore(t)
	const extent = 12 << 10 // 3 pages: chunks of the read buffer do not divide it
	path, data := writeSource(t, 5*extent+1000)
	v, err := s.Import(context.Background(), "v", path, extent, false)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(v.Backing)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab := crc32.MakeTable(crc32.Castagnoli)
	if v.Blocks == nil || v.Blocks.Size != 4096 || len(v.Blocks.CRCs) != 5*3+1 {
		t.Fatalf("import stored blocks %+v, want 16 of 4096 bytes", v.Blocks)
	}
	stored, err := s.Blocks("v", v.Generation)
	if err != nil || stored == nil || !slices.Equal(stored.CRCs, v.Blocks.CRCs) {
		t.Fatalf("Blocks: %v, %v", stored, err)
	}
	for _, b := range []*Blocks{nil, v.Blocks} {
		for _, r := range []struct{ off, n int64 }{
			{0, 1}, {1, extent - 1}, {extent + 100, 4096}, {5 * extent, 1000}, {5*extent + 999, 1}, {2*extent + 1, extent - 2},
			{extent + 4096, 4096}, {extent + 4095, 4098}, {3*extent + 4096, 8192},
		} {
			got, err := v.RangeCRC(f, r.off, r.n, b)
			if want := crc32.Checksum(data[r.off:r.off+r.n], tab); err != nil || got != want {
				t.Errorf("blocks %v: RangeCRC(%d, %d) = %08x, %v; want %08x", b != nil, r.off, r.n, got, err, want)
			}
		}
		for i := range v.Extents() {
			off, n := v.ExtentRange(i)
			if got, err := v.RangeCRC(failingReader{}, off, n, b); err != nil || got != v.CRCs[i] {
				t.Errorf("whole extent %d: %08x, %v; want the stored %08x without a read", i, got, err, v.CRCs[i])
			}
		}
		for _, r := range []struct{ off, n int64 }{{extent - 1, 2}, {-1, 1}, {0, 0}, {5*extent + 1000, 1}, {0, v.Size + 1}} {
			if _, err := v.RangeCRC(f, r.off, r.n, b); !errors.Is(err, ErrInvalid) {
				t.Errorf("RangeCRC(%d, %d): %v, want ErrInvalid", r.off, r.n, err)
			}
		}
	}
	// A range of whole blocks reads nothing.
	if got, err := v.RangeCRC(failingReader{}, extent+4096, 4096, v.Blocks); err != nil || got != crc32.Checksum(data[extent+4096:extent+8192], tab) {
		t.Errorf("whole block: %08x, %v", got, err)
	}
}

// TestBlocksFollowTheVolume: block CRCs are stored under the generation of
// the volume they describe, dropped with it, and never served for another.
func TestBlocksFollowTheVolume(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	v, err := s.Create(ctx, "z", 100000, 8192, FillZero)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Blocks("z", v.Generation)
	if err != nil || b == nil || b.Size != 4096 || len(b.CRCs) != 25 || b.CRCs[24] != zeroCRC(100000-24*4096) {
		t.Fatalf("zero volume blocks %+v, %v", b, err)
	}
	if b, err := s.Blocks("z", v.Generation+1); err != nil || b != nil {
		t.Fatalf("blocks of another generation: %+v, %v", b, err)
	}
	w, err := s.Write(ctx, "z", 4096, 4096, bytes.NewReader(make([]byte, 4096)), true)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := s.Blocks("z", v.Generation); b != nil {
		t.Fatal("the replaced volume's blocks are still served")
	}
	if b, _ := s.Blocks("z", w.Generation); b == nil || len(b.CRCs) != 1 {
		t.Fatalf("replacement blocks %+v", b)
	}
	if err := s.Remove(ctx, "z"); err != nil {
		t.Fatal(err)
	}
	if b, _ := s.Blocks("z", w.Generation); b != nil {
		t.Fatal("a removed volume's blocks are still served")
	}
	for _, es := range []int64{4096, 8192, 12288, 3 << 20, 64 << 20} {
		for _, size := range []int64{1, 1 << 30, 4 << 30, 4<<30 + 1, 20 << 30, 64 << 30, 1 << 40} {
			if bs := BlockSizeFor(size, es); es%bs != 0 || bs > MaxBlockSize || bs < 4096 {
				t.Errorf("BlockSizeFor(%d, %d) = %d", size, es, bs)
			}
		}
	}
	for _, c := range []struct{ size, extent, want int64 }{
		{1 << 20, 4 << 20, 4 << 10},       // small volumes: 4 KiB blocks
		{1 << 30, 4 << 20, 4 << 10},       // 256Ki blocks of 4 KiB
		{1<<30 + 1, 4 << 20, 8 << 10},     // one more byte: 8 KiB blocks
		{5 << 30, 4 << 20, 32 << 10},      // at most 256Ki blocks
		{16 << 30, 4 << 20, 64 << 10},     // 256Ki blocks of 64 KiB
		{1 << 40, 4 << 20, 64 << 10},      // never above 64 KiB
		{1 << 40, 12 << 10, 4 << 10},      // dividing the extent size
		{100 << 30, 3 << 20, 64 << 10},    // 3 MiB extents: 64 KiB divides
		{3 << 30, 4<<20 + 8<<10, 8 << 10}, // 16 KiB wanted, 8 KiB divides
	} {
		if got := BlockSizeFor(c.size, c.extent); got != c.want {
			t.Errorf("BlockSizeFor(%d, %d) = %d, want %d", c.size, c.extent, got, c.want)
		}
	}
}

// TestRangeCRCCorruptDisk is the defect where a partial read "verified" bytes
// corrupted on disk: the CRC announced for part of an extent came from the
// disk as it is now. A flipped bit anywhere in the extent must fail it.
func TestRangeCRCCorruptDisk(t *testing.T) {
	s := newStore(t)
	const extent = 64 << 10
	path, _ := writeSource(t, 3*extent)
	v, err := s.Import(context.Background(), "v", path, extent, false)
	if err != nil {
		t.Fatal(err)
	}
	flipBit(t, v.Backing, extent+5000)
	f, err := os.Open(v.Backing)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, r := range []struct{ off, n int64 }{{extent + 4096, 4096}, {extent + 10000, 100}, {extent, extent - 1}} {
		if _, err := v.RangeCRC(f, r.off, r.n, nil); !errors.Is(err, ErrDataCorrupt) {
			t.Errorf("RangeCRC(%d, %d) over a corrupt extent: %v, want ErrDataCorrupt", r.off, r.n, err)
		}
	}
	// With block CRCs: a corrupt edge block fails the range; a corrupt
	// block inside it gives the CRC of the bytes as written, which the
	// receiver then finds does not match what it got.
	if _, err := v.RangeCRC(f, extent+4096+100, 1000, v.Blocks); !errors.Is(err, ErrDataCorrupt) {
		t.Errorf("range in the corrupt block: %v, want ErrDataCorrupt", err)
	}
	// The extents beside it are intact.
	if _, err := v.RangeCRC(f, 100, 200, nil); err != nil {
		t.Errorf("intact extent: %v", err)
	}

	// Blocks of 4 KiB: a corrupt block wholly inside the range is not read;
	// the range's CRC is that of the bytes as written, which the receiver
	// then finds does not match what it got.
	path2, orig := writeSource(t, 4*12<<10)
	w, err := s.Import(context.Background(), "w", path2, 12<<10, false)
	if err != nil {
		t.Fatal(err)
	}
	flipBit(t, w.Backing, 16<<10+5) // block 4, [16K, 20K)
	g, err := os.Open(w.Backing)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	off, n := int64(12<<10+100), int64(3*4096-200)
	got, err := w.RangeCRC(g, off, n, w.Blocks)
	if want := crc32.Checksum(orig[off:off+n], crc32.MakeTable(crc32.Castagnoli)); err != nil || got != want {
		t.Errorf("range over the corrupt block: %08x, %v; want the CRC of the bytes as written %08x", got, err, want)
	}
}

// dropBlocks makes name look like a volume written before block CRCs.
func dropBlocks(t *testing.T, s *Store, name string) {
	t.Helper()
	if err := s.cat.updateTx(func(tx *bolt.Tx) error { return deleteBlocks(tx, name) }); err != nil {
		t.Fatal(err)
	}
}

// TestAddBlocks: volumes written before block CRCs are listed and migrated;
// a volume whose bytes no longer match its extent CRCs is not.
func TestAddBlocks(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	for _, name := range []string{"a", "b", "c"} {
		if _, err := s.Create(ctx, name, 100<<10, 8192, FillRandom); err != nil {
			t.Fatal(err)
		}
	}
	dropBlocks(t, s, "a")
	dropBlocks(t, s, "c")
	if names, err := s.Catalog().WithoutBlocks(); err != nil || !slices.Equal(names, []string{"a", "c"}) {
		t.Fatalf("WithoutBlocks: %v, %v", names, err)
	}
	b, err := s.AddBlocks(ctx, "a")
	if err != nil || b == nil || b.Size != 4096 || len(b.CRCs) != 25 {
		t.Fatalf("AddBlocks a: %+v, %v", b, err)
	}
	c, _ := s.Get("c")
	flipBit(t, c.Backing, 5000)
	if _, err := s.AddBlocks(ctx, "c"); !errors.Is(err, ErrDataCorrupt) || !strings.Contains(err.Error(), "extents [0]") {
		t.Fatalf("AddBlocks of a corrupt volume: %v, want ErrDataCorrupt naming extent 0", err)
	}
	if names, _ := s.Catalog().WithoutBlocks(); !slices.Equal(names, []string{"c"}) {
		t.Fatalf("after migrating: %v without blocks, want [c]", names)
	}
	// The migrated CRCs serve partial reads as written ones do.
	a, _ := s.Get("a")
	f, err := os.Open(a.Backing)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, _ := os.ReadFile(a.Backing)
	got, err := a.RangeCRC(f, 8192+100, 5000, b)
	if want := crc32.Checksum(data[8192+100:8192+5100], crc32.MakeTable(crc32.Castagnoli)); err != nil || got != want {
		t.Fatalf("RangeCRC with migrated blocks: %08x, %v; want %08x", got, err, want)
	}
}
