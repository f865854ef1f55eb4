package catalog

import (
	"context"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"testing"
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
	for _, r := range []struct{ off, n int64 }{
		{0, 1}, {1, extent - 1}, {extent + 100, 4096}, {5 * extent, 1000}, {5*extent + 999, 1}, {2*extent + 1, extent - 2},
	} {
		got, err := v.RangeCRC(f, r.off, r.n)
		if want := crc32.Checksum(data[r.off:r.off+r.n], tab); err != nil || got != want {
			t.Errorf("RangeCRC(%d, %d) = %08x, %v; want %08x", r.off, r.n, got, err, want)
		}
	}
	for i := range v.Extents() {
		off, n := v.ExtentRange(i)
		if got, err := v.RangeCRC(failingReader{}, off, n); err != nil || got != v.CRCs[i] {
			t.Errorf("whole extent %d: %08x, %v; want the stored %08x without a read", i, got, err, v.CRCs[i])
		}
	}
	for _, r := range []struct{ off, n int64 }{{extent - 1, 2}, {-1, 1}, {0, 0}, {5*extent + 1000, 1}, {0, v.Size + 1}} {
		if _, err := v.RangeCRC(f, r.off, r.n); !errors.Is(err, ErrInvalid) {
			t.Errorf("RangeCRC(%d, %d): %v, want ErrInvalid", r.off, r.n, err)
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
		if _, err := v.RangeCRC(f, r.off, r.n); !errors.Is(err, ErrDataCorrupt) {
			t.Errorf("RangeCRC(%d, %d) over a corrupt extent: %v, want ErrDataCorrupt", r.off, r.n, err)
		}
	}
	// The extents beside it are intact.
	if _, err := v.RangeCRC(f, 100, 200); err != nil {
		t.Errorf("intact extent: %v", err)
	}
}
