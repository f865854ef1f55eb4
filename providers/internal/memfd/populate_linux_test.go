package memfd

import (
	"bytes"
	"os"
	"testing"

	"github.com/blockxfer/blockxfer/internal/mincore"
)

// resident counts the pages of mem that are in memory.
func resident(t *testing.T, mem []byte) int {
	t.Helper()
	n, err := mincore.Resident(mem)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// mapped returns a new mapped memfd of pages pages, unmapped at cleanup.
func mapped(t *testing.T, pages int) []byte {
	t.Helper()
	size := int64(pages * os.Getpagesize())
	fd, err := Create("populate-test", size, SealShrink|SealGrow)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fd)
	mem, err := Map(fd, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Unmap(mem) })
	return mem
}

// TestPopulate checks both ways of populating: madvise and the touch
// fallback make every page resident and keep the bytes.
func TestPopulate(t *testing.T) {
	const pages = 64
	for name, populate := range map[string]func([]byte) error{
		"madvise": Populate,
		"touch":   func(mem []byte) error { touch(mem); return nil },
	} {
		t.Run(name, func(t *testing.T) {
			mem := mapped(t, pages)
			if n := resident(t, mem); n != 0 {
				t.Fatalf("%d pages resident before populating, want 0", n)
			}
			mem[5*os.Getpagesize()+3] = 0xab // the bytes present stay
			want := bytes.Clone(mem)
			if err := populate(mem); err != nil {
				t.Fatal(err)
			}
			if n := resident(t, mem); n != pages {
				t.Errorf("%d of %d pages resident after populating", n, pages)
			}
			if !bytes.Equal(mem, want) {
				t.Error("populating changed the bytes")
			}
		})
	}
	if err := Populate(nil); err != nil {
		t.Errorf("Populate(nil): %v", err)
	}
}
