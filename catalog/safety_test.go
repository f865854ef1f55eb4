package catalog

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// damagedCatalog makes a data directory holding two volumes, applies damage
// to its catalog.db, and returns the directory.
func damagedCatalog(t *testing.T, damage func(t *testing.T, path string)) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := OpenStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		if _, err := s.Create(context.Background(), name, 64<<10, 4096, FillRandom); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	damage(t, filepath.Join(dir, "catalog.db"))
	return dir
}

// TestDamagedCatalog is the defect where a damaged catalog.db was silently
// replaced by an empty one (empty file), crashed blockd with SIGBUS
// (truncated file) or panicked (zeroed page). Every kind of damage must
// give an error wrapping ErrCorrupt, read-write and read-only, and leave the
// file as it was.
func TestDamagedCatalog(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"empty", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated", truncateInUse},
		{"zeroed page", func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// Zero every page after the two meta pages and the freelist:
			// the volumes bucket's pages are among them.
			ps := os.Getpagesize()
			for off := 3 * ps; off < len(b); off++ {
				b[off] = 0
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"random bytes", func(t *testing.T, path string) {
			st, _ := os.Stat(path)
			b := make([]byte, st.Size())
			rand.NewChaCha8([32]byte{7}).Read(b)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := damagedCatalog(t, tc.damage)
			path := filepath.Join(dir, "catalog.db")
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, ro := range []bool{false, true} {
				s, err := OpenStore(dir, &Options{ReadOnly: ro})
				if err == nil {
					// Some damage only shows when the records are read.
					_, err = s.List()
					s.Close()
				}
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("read-only %v: %v, want ErrCorrupt", ro, err)
				}
			}
			after, err := os.ReadFile(path)
			if err != nil || string(after) != string(before) {
				t.Fatalf("the damaged catalog was changed (%d bytes before, %d after, %v)", len(before), len(after), err)
			}
		})
	}
}

// truncateInUse cuts the bbolt file at path to half the bytes its pages in
// use span (the meta page's high-water mark). Half the file is not
// enough: bbolt grows the file ahead of its pages, and a file cut only in
// that unused tail is whole.
func truncateInUse(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, boltPageHeader+boltMetaLen)
	var used int64
	for _, off := range []int64{0, 4096} { // both meta pages: the newer counts
		if _, err := f.ReadAt(head, off); err != nil {
			t.Fatal(err)
		}
		if m, ok := parseBoltMeta(head); ok && m.pageSize == 4096 {
			used = max(used, int64(m.pgid)*int64(m.pageSize))
		}
	}
	if used == 0 {
		t.Fatal("no 4 KiB-page meta in the catalog")
	}
	if err := os.Truncate(path, used/2); err != nil {
		t.Fatal(err)
	}
}
