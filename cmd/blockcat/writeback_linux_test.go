package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/blockxfer/blockxfer/internal/mincore"
	"golang.org/x/sys/unix"
)

// TestOutputDropsSettledPages writes 64 MiB at their places in a partial
// file and asks the kernel (mincore) which of its pages the page cache
// holds: by default all but the last cacheWindow bytes were waited for and
// dropped; with keepCache all stay. The file is right either way.
func TestOutputDropsSettledPages(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		t.Skip("the test directory is on tmpfs, whose pages are the file and cannot be dropped")
	}
	const chunk, size = 4 << 20, 64 << 20
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	src := source{Volume: "v", Server: "s:1", Generation: 1, Size: size, ExtentSize: chunk, Length: size}
	for _, keep := range []bool{false, true} {
		file := filepath.Join(dir, "out")
		o := mustOpen(t, file, src, false)
		o.keepCache = keep
		// Out of order, as extents land: odd chunks first.
		for _, first := range []int{1, 0} {
			for at := int64(first * chunk); at < size; at += 2 * chunk {
				if err := o.writeAt(data[at:at+chunk], at, true); err != nil {
					t.Fatal(err)
				}
			}
		}
		resident := residentPages(t, o.f, size)
		o.mu.Lock()
		good := o.good
		o.mu.Unlock()
		if good != size {
			t.Fatalf("keep %v: %d bytes good, want %d", keep, good, size)
		}
		if err := o.finish(nil); err != nil {
			t.Fatal(err)
		}
		wantFile(t, file, data)
		pages := size / os.Getpagesize()
		window := cacheWindow / os.Getpagesize()
		if keep && resident < pages*99/100 {
			t.Errorf("--keep-cache: %d of %d pages in the page cache, want all", resident, pages)
		}
		if !keep && resident > window {
			t.Errorf("default: %d of %d pages in the page cache, want at most %d (cacheWindow)", resident, pages, window)
		}
		t.Logf("keep %v: %d of %d pages cached", keep, resident, pages)
	}
}

// residentPages counts the pages of the first n bytes of f that are in the
// page cache.
func residentPages(t *testing.T, f *os.File, n int) int {
	t.Helper()
	m, err := unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	c, err := mincore.Resident(m)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
