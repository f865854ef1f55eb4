package engine

import (
	"bytes"
	"context"
	"errors"
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
	// The newest generation stays open for the next read: no catalog
	// transaction, no open or close per read.
	h.release(nv)
	if n := openFilesOf(t, v2.Backing); n != 1 || len(h.open) != 1 {
		t.Fatalf("%d files open after every read ended (%d handles), want the newest kept", n, len(h.open))
	}
	again, err := h.acquire(store, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if again != nv {
		t.Fatal("the next read of an unchanged volume opened it again")
	}
	h.release(again)
	// Any change to the catalog closes the idle handles (at the next read,
	// or at a sweep), so a removed volume's file is not held open.
	if err := store.Remove(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	h.sweep(store)
	if n := openFilesOf(t, v2.Backing); n != 0 || len(h.open) != 0 {
		t.Fatalf("%d files open after the volume was removed (%d handles)", n, len(h.open))
	}
	if _, err := h.acquire(store, "vol"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("acquire after remove: %v, want not found", err)
	}
}

// uncounted hides the store's change counter: a source that cannot say
// whether it changed.
type uncounted struct{ Volumes }

// TestVolumeHandlesUncountedSource: a source that does not count its
// changes is opened per read, and its files close after their last read.
func TestVolumeHandlesUncountedSource(t *testing.T) {
	store, err := catalog.OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	v, err := store.Create(context.Background(), "vol", 64<<10, 4096, catalog.FillRandom)
	if err != nil {
		t.Fatal(err)
	}
	var h volumeHandles
	src := uncounted{store}
	a, err := h.acquire(src, "vol")
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.acquire(src, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if a != b || openFilesOf(t, v.Backing) != 1 {
		t.Fatal("two reads of one generation do not share one file")
	}
	h.release(a)
	h.release(b)
	if n := openFilesOf(t, v.Backing); n != 0 || len(h.open) != 0 {
		t.Fatalf("%d files open after every read ended (%d handles)", n, len(h.open))
	}
}

// TestVolumeHandlesCloseIdle: closing the server closes the cached files.
func TestVolumeHandlesCloseIdle(t *testing.T) {
	store, err := catalog.OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	v, err := store.Create(context.Background(), "vol", 64<<10, 4096, catalog.FillRandom)
	if err != nil {
		t.Fatal(err)
	}
	var h volumeHandles
	busy, err := h.acquire(store, "vol")
	if err != nil {
		t.Fatal(err)
	}
	h.closeIdle()
	if n := openFilesOf(t, v.Backing); n != 1 {
		t.Fatalf("closeIdle closed a file a read holds (%d open)", n)
	}
	h.release(busy)
	if n := openFilesOf(t, v.Backing); n != 0 || len(h.open) != 0 {
		t.Fatalf("%d files open after closeIdle and the last read (%d handles)", n, len(h.open))
	}
}
