package engine

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/blockxfer/blockxfer/catalog"
)

// openFilesOf counts this process's file descriptors open on path.
func openFilesOf(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd: cannot count open files")
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}

// TestVolumeHandlesShareOneFile is the defect where every parked read held
// an open file of its own, so many reads ran the server out of
// descriptors: reads of one generation share one file, closed after the
// last; a new generation gets its own while the old one's reads finish.
func TestVolumeHandlesShareOneFile(t *testing.T) {
	store, err := catalog.OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	v1, err := store.Create(ctx, "vol", 64<<10, 4096, catalog.FillRandom)
	if err != nil {
		t.Fatal(err)
	}
	var h volumeHandles
	var held []*volumeHandle
	for range 20 {
		vh, err := h.acquire(store, "vol")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, vh)
	}
	if n := openFilesOf(t, v1.Backing); n != 1 {
		t.Fatalf("20 reads hold %d files of the volume, want 1", n)
	}
	// Replace the volume: new reads get the new generation's file.
	v2, err := store.Write(ctx, "vol", 4096, 4096, bytes.NewReader(make([]byte, 4096)), true)
	if err != nil {
		t.Fatal(err)
	}
	nv, err := h.acquire(store, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if nv.v.Generation != v2.Generation || nv == held[0] {
		t.Fatalf("after replace: generation %d, want %d on a handle of its own", nv.v.Generation, v2.Generation)
	}
	for _, vh := range held {
		h.release(vh)
	}
	if n := openFilesOf(t, v1.Backing); n != 0 {
		t.Fatalf("%d files of the old generation open after its last read", n)
	}
	h.release(nv)
	if n := openFilesOf(t, v2.Backing); n != 0 || len(h.open) != 0 {
		t.Fatalf("%d files open after every read ended (%d handles)", n, len(h.open))
	}
}
