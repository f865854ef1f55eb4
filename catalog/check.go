package catalog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// Check runs bbolt's consistency check over every page of the database,
// checks the schema and decodes every volume record and every record of
// block CRCs. It returns nil for a
// healthy catalog, and otherwise every problem it found, joined with
// [errors.Join], each wrapping [ErrCorrupt] (or [ErrNewerSchema]). It does
// not look at the backings; [Store.CheckBacking] does.
func (c *Catalog) Check() error {
	var problems []error
	err := c.view(func(tx *bolt.Tx) error {
		for err := range tx.Check() { // drained: the checker runs on tx
			problems = append(problems, fmt.Errorf("%v: %w", err, ErrCorrupt))
		}
		if len(problems) > 0 {
			// Walking the buckets of a database whose pages are
			// inconsistent could fault; the page problems say enough.
			return nil
		}
		if empty, err := checkSchema(tx); err != nil || empty {
			if err != nil {
				problems = append(problems, err)
			}
			return nil
		}
		vols := map[string]*Volume{}
		err := tx.Bucket(bucketVolumes).ForEach(func(k, raw []byte) error {
			v, err := decodeKeyed(k, raw)
			if err != nil {
				problems = append(problems, fmt.Errorf("volume %q: %w", k, err))
			} else {
				vols[v.Name] = v
			}
			return nil
		})
		if err != nil {
			return err
		}
		bk := tx.Bucket(bucketBlocks)
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, rec []byte) error {
			gen, b, err := decodeBlocks(rec)
			if err != nil {
				problems = append(problems, fmt.Errorf("block CRCs of %q: %w", k, err))
				return nil
			}
			if v := vols[string(k)]; v != nil && v.Generation == gen {
				if p := v.blocksFit(b); p != "" {
					problems = append(problems, fmt.Errorf("block CRCs of %q: %s: %w", k, p, ErrCorrupt))
				}
			}
			return nil
		})
	})
	if err != nil {
		problems = append(problems, err)
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("catalog: check %s: %w", c.path, errors.Join(problems...))
}

// WriteTo writes a consistent copy of the whole database to w, from one
// read transaction, so that writers may go on meanwhile. The copy is a
// bbolt file that [Open] accepts; it returns the bytes written.
func (c *Catalog) WriteTo(w io.Writer) (int64, error) {
	var n int64
	err := c.view(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("catalog: copy %s: %w", c.path, err)
	}
	return n, nil
}

// Backup writes a consistent copy of the catalog to the new file path (mode
// 0600) and returns its size. The copy is written under a temporary name in
// path's directory, fsynced, opened and checked like [Catalog.Check], then
// renamed to path and the directory fsynced; on any failure nothing is left
// behind. Backup refuses to overwrite an existing path.
//
// A read-only Catalog is enough, but opening one needs the file lock, which
// a process that has the catalog open read-write (a running blockd serve)
// holds until it closes it.
func (c *Catalog) Backup(path string) (int64, error) {
	fail := func(err error) (int64, error) {
		return 0, fmt.Errorf("catalog: backup %s to %s: %w", c.path, path, err)
	}
	if _, err := os.Lstat(path); err == nil {
		return fail(os.ErrExist)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fail(err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fail(err)
	}
	tmp := f.Name()
	n, err := c.WriteTo(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = checkCopy(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fail(err)
	}
	if err := syncDir(dir); err != nil {
		return fail(err)
	}
	return n, nil
}

// checkCopy opens the catalog copy at path read-only and checks it.
func checkCopy(path string) error {
	cp, err := Open(path, &Options{ReadOnly: true, LockTimeout: -1})
	if err != nil {
		return fmt.Errorf("the copy does not open: %w", err)
	}
	err = cp.Check()
	if cerr := cp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("the copy fails its check: %w", err)
	}
	return nil
}

// CheckBacking checks that the named volume's backing is there and fits
// it: a regular file or block device at least as large as the volume, and
// for an owned volume exactly as large and inside this store's volumes
// directory. Problems wrap [ErrBacking]; a volume that is not in the
// catalog wraps [ErrNotFound].
func (s *Store) CheckBacking(name string) error {
	const op = "check"
	f, v, err := s.open(op, name)
	if err != nil {
		return err
	}
	defer f.Close()
	if !v.Owned {
		return nil
	}
	if filepath.Dir(v.Backing) != s.volDir {
		return fmt.Errorf("catalog: %s %q: owned backing %s is outside %s (was the data directory moved?): %w",
			op, name, v.Backing, s.volDir, ErrBacking)
	}
	size, err := sizeOf(f)
	if err != nil {
		return fmt.Errorf("catalog: %s %q: backing %s: %w: %w", op, name, v.Backing, ErrBacking, err)
	}
	if size != v.Size {
		return fmt.Errorf("catalog: %s %q: owned backing %s is %d bytes, the volume %d: %w",
			op, name, v.Backing, size, v.Size, ErrBacking)
	}
	return nil
}
