package tcp

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCached asks the kernel (cachestat) about a file's pages as they are
// written, dropped from the page cache and read back one at a time:
// cached must say yes only for ranges whose every page is in the cache,
// since a raw sendfile of any other range could wait for the disk.
func TestCached(t *testing.T) {
	const size = 64 << 10
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	got := cached(fd, 0, size)
	if noCachestat.Load() {
		t.Skip("this kernel has no cachestat(2) (Linux 6.5 and later): small extents are sent with ordinary sendfile calls")
	}
	if !got {
		t.Fatal("cached = false for a file just written")
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if cached(fd, 0, size) {
		t.Skip("FADV_DONTNEED kept the pages (a tmpfs TMPDIR?): cannot make an uncached range here")
	}
	page := int64(os.Getpagesize())
	if _, err := f.ReadAt(make([]byte, 1), page); err != nil { // brings back the second page (and maybe read-ahead)
		t.Fatal(err)
	}
	for _, c := range []struct {
		off, n int64
		want   bool
	}{
		{page, page, true},
		{page + 100, page - 200, true}, // inside the page
		{page + 100, page, false},      // runs into the third page unless read ahead
		{0, page, false},               // the first page was not read
		{0, size, false},
		{page - 1, 2, false}, // straddles the first page
		{page, 0, false},     // nothing to send
	} {
		if c.off+c.n > 2*page && c.want == false && cached(fd, 2*page, page) {
			continue // read-ahead brought the third page back: this case says nothing
		}
		if got := cached(fd, c.off, c.n); got != c.want {
			t.Errorf("cached(%d, %d) = %v, want %v", c.off, c.n, got, c.want)
		}
	}
}
