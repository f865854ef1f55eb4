package catalog

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
)

// TestWithBlockSize: a volume created, imported or written with
// WithBlockSize stores block CRCs of that size, which survive a reopen,
// pass Check and give the right range CRCs; a size that is not a power of
// two from MinBlockSize dividing the extent size is refused, leaving no
// volume.
func TestWithBlockSize(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	const extent = 64 << 10
	const size = 3*extent + 5000
	path, data := writeSource(t, size)
	made := map[string]*Volume{}
	if made["c"], err = s.Create(ctx, "c", size, extent, FillZero, WithBlockSize(4<<10)); err != nil {
		t.Fatal(err)
	}
	if made["i"], err = s.Import(ctx, "i", path, extent, false, WithBlockSize(8<<10)); err != nil {
		t.Fatal(err)
	}
	if made["w"], err = s.Write(ctx, "w", size, extent, bytes.NewReader(data), false, WithBlockSize(4<<10)); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"c": 4 << 10, "i": 8 << 10, "w": 4 << 10}
	for name, v := range made {
		if v.Blocks == nil || v.Blocks.Size != want[name] || int64(len(v.Blocks.CRCs)) != (size+want[name]-1)/want[name] {
			t.Errorf("%s: blocks of %d (%d CRCs), want %d", name, v.Blocks.Size, len(v.Blocks.CRCs), want[name])
		}
	}
	for _, bad := range []int64{2 << 10, 3 << 10, 6 << 10, 128 << 10} {
		if _, err := s.Create(ctx, "bad", size, extent, FillZero, WithBlockSize(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("block size %d: %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := s.Create(ctx, "bad", 3*12<<10, 12<<10, FillZero, WithBlockSize(8<<10)); !errors.Is(err, ErrInvalid) {
		t.Errorf("8 KiB blocks of 12 KiB extents: %v, want ErrInvalid", err)
	}
	if _, err := s.Get("bad"); !errors.Is(err, ErrNotFound) {
		t.Errorf("refused volume: Get says %v, want ErrNotFound", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "volumes", "bad*")); len(left) != 0 {
		t.Errorf("refused volume left %v", left)
	}
	s.Close()

	s, err = OpenStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Catalog().Check(); err != nil {
		t.Fatal(err)
	}
	v, err := s.Get("w")
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Blocks("w", v.Generation)
	if err != nil || b == nil || b.Size != 4<<10 {
		t.Fatalf("reopened: blocks %+v, %v; want blocks of 4 KiB", b, err)
	}
	f, err := os.Open(v.Backing)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab := crc32.MakeTable(crc32.Castagnoli)
	for _, r := range []struct{ off, n int64 }{{4096, 4096}, {100, 4096}, {extent + 100, 200}, {8192 + 7, 3*4096 + 11}, {3 * extent, 5000}} {
		got, err := v.RangeCRC(f, r.off, r.n, b)
		if want := crc32.Checksum(data[r.off:r.off+r.n], tab); err != nil || got != want {
			t.Errorf("RangeCRC(%d, %d) with 4 KiB blocks: %08x, %v; want %08x", r.off, r.n, got, err, want)
		}
	}
	// A corrupt byte fails a range whose edge block holds it.
	flipBit(t, v.Backing, 4096+10)
	if _, err := v.RangeCRC(f, 4096+100, 100, b); !errors.Is(err, ErrDataCorrupt) {
		t.Errorf("range in a corrupt 4 KiB block: %v, want ErrDataCorrupt", err)
	}
}
