package catalog_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/blockxfer/blockxfer/catalog"
)

// A data directory is opened once per process; volumes are created in it,
// listed from its catalog, verified and removed.
func ExampleStore_Create() {
	dir, err := os.MkdirTemp("", "blockd-data-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	s, err := catalog.OpenStore(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	ctx := context.Background()
	v, err := s.Create(ctx, "weights-0", 10<<20, 0, catalog.FillRandom)
	if err != nil {
		log.Fatal(err)
	}
	off, n := v.ExtentRange(v.Extents() - 1)
	fmt.Printf("%s: %d bytes, %d extents, last at %d (%d bytes)\n", v.Name, v.Size, v.Extents(), off, n)

	bad, err := s.Verify(ctx, "weights-0")
	fmt.Println("bad extents:", bad, err)

	_, err = s.Create(ctx, "weights-0", 4096, 0, catalog.FillZero)
	fmt.Println(errors.Is(err, catalog.ErrExists))

	_, err = s.Create(ctx, "etc/passwd", 4096, 0, catalog.FillZero)
	fmt.Println(err)

	if err := s.Remove(ctx, "weights-0"); err != nil {
		log.Fatal(err)
	}
	list, _ := s.Catalog().List()
	fmt.Println("volumes left:", len(list))
	// Output:
	// weights-0: 10485760 bytes, 3 extents, last at 8388608 (2097152 bytes)
	// bad extents: [] <nil>
	// true
	// catalog: create "etc/passwd": byte 0x2f at offset 3 is not one of [A-Za-z0-9._-]: invalid volume name
	// volumes left: 0
}
