package catalog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The bbolt file header this package checks before handing a file to bbolt,
// which maps the file and would fault (SIGBUS) on a truncated one. Each of
// the first two pages starts with a 16-byte page header followed by a meta
// record: magic, version, page size, flags, root bucket (16 bytes), freelist
// page, high-water page id, txid, and an FNV-1a 64 checksum of the 56 bytes
// before it.
const (
	boltPageHeader = 16
	boltMagic      = 0xED0CDAED
	boltMetaLen    = 64
	boltMinPage    = 512
	boltMaxPage    = 1 << 16
)

// boltMeta is the part of a bbolt meta page preflight needs.
type boltMeta struct {
	pageSize uint32
	pgid     uint64 // high-water mark: pages in use
	txid     uint64
}

// parseBoltMeta decodes the meta record at the start of b (after the page
// header) and checks its magic and checksum.
func parseBoltMeta(b []byte) (boltMeta, bool) {
	if len(b) < boltPageHeader+boltMetaLen {
		return boltMeta{}, false
	}
	m := b[boltPageHeader : boltPageHeader+boltMetaLen]
	if binary.NativeEndian.Uint32(m[0:]) != boltMagic {
		return boltMeta{}, false
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if h.Sum64() != binary.NativeEndian.Uint64(m[56:]) {
		return boltMeta{}, false
	}
	return boltMeta{
		pageSize: binary.NativeEndian.Uint32(m[8:]),
		pgid:     binary.NativeEndian.Uint64(m[40:]),
		txid:     binary.NativeEndian.Uint64(m[48:]),
	}, true
}

// preflight checks an existing catalog file before bbolt opens it: a file
// that is empty, has no valid meta page, or is shorter than its meta page
// says is corrupt. bbolt would silently start a new database in an empty
// file (hiding every volume) and fault on a truncated one. A missing file is
// fine: Open creates it.
func preflight(path string) error {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if size == 0 {
		return fmt.Errorf("the file is empty (0 bytes): %w", ErrCorrupt)
	}
	head := make([]byte, boltPageHeader+boltMetaLen)
	if _, err := f.ReadAt(head, 0); err != nil && err != io.EOF {
		return err
	}
	best, ok := parseBoltMeta(head)
	if ok && best.pageSize >= boltMinPage && best.pageSize <= boltMaxPage {
		second := make([]byte, len(head))
		if _, err := f.ReadAt(second, int64(best.pageSize)); err == nil {
			if m, ok := parseBoltMeta(second); ok && m.txid > best.txid && m.pageSize == best.pageSize {
				best = m
			}
		}
	} else {
		// The first meta page is damaged: bbolt falls back on the second,
		// at an offset given by the page size it would have had.
		ok = false
		for _, ps := range []int64{4096, 16384, 65536, 8192, 32768, 512, 1024, 2048} {
			second := make([]byte, len(head))
			if _, err := f.ReadAt(second, ps); err != nil {
				continue
			}
			if m, good := parseBoltMeta(second); good && int64(m.pageSize) == ps {
				best, ok = m, true
				break
			}
		}
	}
	if !ok {
		return fmt.Errorf("no valid bbolt meta page in %d bytes: %w", size, ErrCorrupt)
	}
	if need := int64(best.pgid) * int64(best.pageSize); size < need {
		return fmt.Errorf("the file is %d bytes, its metadata says %d (truncated): %w", size, need, ErrCorrupt)
	}
	return nil
}

// guard runs fn, turning a panic or a memory fault inside bbolt (which
// asserts on damaged pages, and faults when the mapped file shrank) into an
// error wrapping ErrCorrupt.
func guard(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged database (%v): %w", r, ErrCorrupt)
		}
	}()
	return fn()
}

// view runs fn in a read-only transaction under guard.
func (c *Catalog) view(fn func(tx *bolt.Tx) error) error {
	return guard(func() error { return c.db.View(fn) })
}

// updateTx runs fn in a read-write transaction under guard, and then counts
// a change (see [Catalog.Changes]), whether or not it committed.
func (c *Catalog) updateTx(fn func(tx *bolt.Tx) error) error {
	defer c.changes.Add(1)
	return guard(func() error { return c.db.Update(fn) })
}

// check walks every page of the database (bbolt's consistency check) and
// returns the first problem found, wrapping ErrCorrupt.
func (c *Catalog) check() error {
	return c.view(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() { // drained: the checker runs on tx
			if first == nil {
				first = fmt.Errorf("%v: %w", err, ErrCorrupt)
			}
		}
		return first
	})
}

// openBolt opens the database under guard.
func openBolt(path string, timeout time.Duration, readOnly bool) (*bolt.DB, error) {
	var db *bolt.DB
	err := guard(func() (err error) {
		db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: readOnly})
		return err
	})
	return db, err
}

// checkFile opens an existing catalog read-only and runs check on it. A
// file that does not exist yet passes.
func checkFile(path string, timeout time.Duration) error {
	if _, err := os.Stat(path); os.IsNotExist(err) {
		return nil
	}
	db, err := openBolt(path, timeout, true)
	if err != nil {
		return boltOpenError(path, timeout, err)
	}
	c := &Catalog{db: db, path: path, readOnly: true}
	err = c.check()
	db.Close()
	if err != nil {
		return fmt.Errorf("catalog: open %s: %w", path, err)
	}
	return nil
}

// boltOpenError maps an error of bolt.Open onto this package's sentinels.
func boltOpenError(path string, timeout time.Duration, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("catalog: open %s: gave up after %s: %w", path, timeout, ErrLocked)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum),
		errors.Is(err, berrors.ErrVersionMismatch):
		return fmt.Errorf("catalog: open %s: %w: %w", path, ErrCorrupt, err)
	}
	return fmt.Errorf("catalog: open %s: %w", path, err)
}
