package catalog

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the catalog schema this build writes, and the newest it
// reads. A catalog with a higher version is refused with [ErrNewerSchema].
const SchemaVersion = 1

// DefaultLockTimeout is how long [Open] waits for the catalog's file lock
// when Options.LockTimeout is 0.
const DefaultLockTimeout = time.Second

// Bucket and key names. They are part of the on-disk format.
var (
	bucketMeta    = []byte("meta")
	bucketVolumes = []byte("volumes")
	keySchema     = []byte("schema")
)

// Options configures [Open] and [OpenStore]. The zero value (or a nil
// *Options) opens read-write and waits DefaultLockTimeout for the lock.
type Options struct {
	// ReadOnly opens the catalog without write access. Several read-only
	// opens may share a catalog, but not with a read-write open. Methods
	// that would change it return ErrReadOnly, and a Store neither creates
	// directories nor cleans up temporary files.
	ReadOnly bool

	// LockTimeout is how long Open waits for the file lock held by another
	// process before failing with ErrLocked. 0 means DefaultLockTimeout;
	// a negative value tries once.
	LockTimeout time.Duration
}

// Catalog is an open catalog database: the volumes a blockd serves, keyed by
// name. It holds the database's file lock until Close.
//
// A Catalog is safe for concurrent use. Volumes it returns are copies that
// the caller owns.
type Catalog struct {
	db       *bolt.DB
	path     string
	readOnly bool
	changes  atomic.Uint64 // read-write transactions ended; see Changes
}

// Changes counts the read-write transactions this Catalog has run. It grows
// after every change is committed (and after attempts that were not), so a
// caller that remembers a value from before it read the catalog knows its
// copy is still current while Changes returns the same value. It costs one
// atomic load: a server checks it per read instead of a transaction. Only
// this Catalog's own changes are counted, which is all of them while it is
// open read-write (it holds the file lock).
func (c *Catalog) Changes() uint64 { return c.changes.Load() }

// Open opens the catalog database at path, creating it (and its schema) if
// it does not exist and opts does not say ReadOnly.
//
// If another process has the catalog open for writing (or, for a read-write
// open, at all), Open waits up to Options.LockTimeout and then fails with an
// error wrapping [ErrLocked]. A catalog written by a newer blockd fails with
// [ErrNewerSchema]; a file that is not a catalog fails with [ErrCorrupt].
func Open(path string, opts *Options) (*Catalog, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	timeout := o.LockTimeout
	switch {
	case timeout == 0:
		timeout = DefaultLockTimeout
	case timeout < 0:
		timeout = time.Nanosecond
	}
	if err := preflight(path); err != nil {
		return nil, fmt.Errorf("catalog: open %s: %w", path, err)
	}
	if !o.ReadOnly {
		// Check an existing file read-only first: opened read-write, bbolt
		// loads the freelist at once and panics on a damaged one while
		// the file is mapped, which keeps its lock until the process
		// exits. Read-only, the check reports damage as an error.
		if err := checkFile(path, timeout); err != nil {
			return nil, err
		}
	}
	db, err := openBolt(path, timeout, o.ReadOnly)
	if err != nil {
		return nil, boltOpenError(path, timeout, err)
	}
	c := &Catalog{db: db, path: path, readOnly: o.ReadOnly}
	if o.ReadOnly {
		if err := c.check(); err != nil {
			db.Close()
			return nil, fmt.Errorf("catalog: open %s: %w", path, err)
		}
	}
	if err := c.initSchema(); err != nil {
		db.Close()
		return nil, fmt.Errorf("catalog: open %s: %w", path, err)
	}
	return c, nil
}

// initSchema checks the schema of an existing catalog, or writes the
// current schema into an empty, writable one.
func (c *Catalog) initSchema() error {
	empty := false
	err := c.view(func(tx *bolt.Tx) error {
		var err error
		empty, err = checkSchema(tx)
		return err
	})
	if err != nil || !empty || c.readOnly {
		// A read-only catalog with no buckets reads as empty.
		return err
	}
	return c.updateTx(func(tx *bolt.Tx) error {
		if empty, err := checkSchema(tx); err != nil || !empty {
			return err
		}
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if err := meta.Put(keySchema, binary.BigEndian.AppendUint32(nil, SchemaVersion)); err != nil {
			return err
		}
		_, err = tx.CreateBucket(bucketVolumes)
		return err
	})
}

// checkSchema reports whether the database holds no buckets at all, and
// otherwise whether its schema is one this build reads.
func checkSchema(tx *bolt.Tx) (empty bool, err error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		if k, _ := tx.Cursor().First(); k != nil {
			return false, fmt.Errorf("no schema metadata in a non-empty database: %w", ErrCorrupt)
		}
		return true, nil
	}
	raw := meta.Get(keySchema)
	if len(raw) != 4 {
		return false, fmt.Errorf("schema version is %d bytes, want 4: %w", len(raw), ErrCorrupt)
	}
	switch v := binary.BigEndian.Uint32(raw); {
	case v > SchemaVersion:
		return false, fmt.Errorf("schema version %d is newer than this build's %d; upgrade blockd: %w",
			v, SchemaVersion, ErrNewerSchema)
	case v == 0:
		return false, fmt.Errorf("schema version 0: %w", ErrCorrupt)
	}
	if tx.Bucket(bucketVolumes) == nil {
		return false, fmt.Errorf("no volumes bucket: %w", ErrCorrupt)
	}
	return false, nil
}

// Path returns the path of the catalog database file.
func (c *Catalog) Path() string { return c.path }

// ReadOnly reports whether the catalog was opened read-only.
func (c *Catalog) ReadOnly() bool { return c.readOnly }

// Close releases the database and its file lock. Volumes already returned
// stay valid; every method called after Close fails.
func (c *Catalog) Close() error {
	if err := c.db.Close(); err != nil {
		return fmt.Errorf("catalog: close %s: %w", c.path, err)
	}
	return nil
}

// Put adds v to the catalog. It fails with [ErrExists] if a volume of that
// name is already there, [ErrBadName] or [ErrInvalid] if v cannot be stored,
// and [ErrReadOnly] on a read-only catalog.
//
// On success Put sets v.Generation to the value it assigned, and v.Created,
// if it was zero, to the current time; v.Created is stored in UTC.
func (c *Catalog) Put(v *Volume) error {
	return c.put("put", v)
}

// put is Put with op in the error messages.
func (c *Catalog) put(op string, v *Volume) error {
	if err := checkName(op, v.Name); err != nil {
		return err
	}
	var stored *Volume
	err := c.update(op, v.Name, func(b *bolt.Bucket) error {
		if b.Get([]byte(v.Name)) != nil {
			return ErrExists
		}
		nv := v.clone()
		if nv.Created.IsZero() {
			nv.Created = time.Now()
		}
		nv.Created = nv.Created.UTC().Round(0)
		if err := putVolume(b, nv); err != nil {
			return err
		}
		stored = nv
		return nil
	})
	if err != nil {
		return err
	}
	v.Generation, v.Created = stored.Generation, stored.Created
	return nil
}

// Replace overwrites the stored volume of v's name with v, for a volume
// whose data was rewritten. It fails with [ErrNotFound] if there is no such
// volume. On success it sets v.Generation to a new value, greater than any
// generation the catalog assigned before; a zero v.Created is taken from the
// stored volume.
func (c *Catalog) Replace(v *Volume) error {
	if err := checkName("replace", v.Name); err != nil {
		return err
	}
	var stored *Volume
	err := c.update("replace", v.Name, func(b *bolt.Bucket) error {
		raw := b.Get([]byte(v.Name))
		if raw == nil {
			return ErrNotFound
		}
		nv := v.clone()
		if nv.Created.IsZero() {
			old, err := decodeVolume(raw)
			if err != nil {
				return err
			}
			nv.Created = old.Created
		}
		nv.Created = nv.Created.UTC().Round(0)
		if err := putVolume(b, nv); err != nil {
			return err
		}
		stored = nv
		return nil
	})
	if err != nil {
		return err
	}
	v.Generation, v.Created = stored.Generation, stored.Created
	return nil
}

// putVolume assigns v the bucket's next generation and stores it.
func putVolume(b *bolt.Bucket, v *Volume) error {
	gen, err := b.NextSequence()
	if err != nil {
		return err
	}
	v.Generation = gen
	rec, err := encodeVolume(v)
	if err != nil {
		return err
	}
	if err := b.Put([]byte(v.Name), rec); err != nil {
		return err
	}
	return putBlocks(b.Tx(), v)
}

// Get returns the named volume, or an error wrapping [ErrNotFound].
func (c *Catalog) Get(name string) (*Volume, error) {
	return c.get("get", name)
}

// get is Get with op in the error messages.
func (c *Catalog) get(op, name string) (*Volume, error) {
	if err := checkName(op, name); err != nil {
		return nil, err
	}
	var v *Volume
	err := c.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVolumes)
		if b == nil {
			return ErrNotFound
		}
		var err error
		v, err = getVolume(b, name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: %s %q: %w", op, name, err)
	}
	return v, nil
}

// getVolume decodes the named volume from b.
func getVolume(b *bolt.Bucket, name string) (*Volume, error) {
	raw := b.Get([]byte(name))
	if raw == nil {
		return nil, ErrNotFound
	}
	return decodeKeyed([]byte(name), raw)
}

// decodeKeyed decodes the record stored under key, which must match the name
// inside it.
func decodeKeyed(key, raw []byte) (*Volume, error) {
	v, err := decodeVolume(raw)
	if err != nil {
		return nil, err
	}
	if v.Name != string(key) {
		return nil, fmt.Errorf("record for %q stored under key %q: %w", v.Name, key, ErrCorrupt)
	}
	return v, nil
}

// List returns every volume, sorted by name (bytewise).
func (c *Catalog) List() ([]*Volume, error) {
	return c.ListAfter("", 0)
}

// ListAfter returns, sorted by name (bytewise), up to limit volumes whose
// names sort strictly after after; limit <= 0 means no limit. An empty after
// lists from the first volume. after need not name a volume, nor be a valid
// name: it is only a position in the order. The volumes come from one read
// transaction, and ListAfter reads only the records it returns, so a caller
// can page through a large catalog by passing the last name of one page as
// the after of the next.
func (c *Catalog) ListAfter(after string, limit int) ([]*Volume, error) {
	var vs []*Volume
	err := c.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVolumes)
		if b == nil {
			return nil
		}
		cur := b.Cursor()
		k, raw := cur.Seek([]byte(after))
		if k != nil && string(k) == after {
			k, raw = cur.Next()
		}
		for ; k != nil && (limit <= 0 || len(vs) < limit); k, raw = cur.Next() {
			v, err := decodeKeyed(k, raw)
			if err != nil {
				return fmt.Errorf("%q: %w", k, err)
			}
			vs = append(vs, v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: list: %w", err)
	}
	return vs, nil
}

// PutMany adds every volume of vs to the catalog in one transaction, as Put
// would one by one but with a single commit (and fsync): either all are
// stored or, on error, none is. It fails with [ErrExists] if a name is
// already in the catalog or appears twice in vs, [ErrBadName] or
// [ErrInvalid] if a volume cannot be stored, and [ErrReadOnly] on a
// read-only catalog; the error names the first volume at fault.
//
// On success PutMany sets each volume's Generation, in the order of vs, and
// Created as Put does. On error it changes none of them.
func (c *Catalog) PutMany(vs []*Volume) error {
	for _, v := range vs {
		if err := checkName("put", v.Name); err != nil {
			return err
		}
	}
	if c.readOnly {
		return fmt.Errorf("catalog: put %d volumes: %w", len(vs), ErrReadOnly)
	}
	stored := make([]*Volume, len(vs))
	var at string
	err := c.updateTx(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVolumes)
		if b == nil {
			return fmt.Errorf("no volumes bucket: %w", ErrCorrupt)
		}
		now := time.Now()
		for i, v := range vs {
			at = v.Name
			if b.Get([]byte(v.Name)) != nil {
				return ErrExists
			}
			nv := v.clone()
			if nv.Created.IsZero() {
				nv.Created = now
			}
			nv.Created = nv.Created.UTC().Round(0)
			if err := putVolume(b, nv); err != nil {
				return err
			}
			stored[i] = nv
		}
		at = ""
		return nil
	})
	if err != nil {
		if at != "" {
			return fmt.Errorf("catalog: put %q: %w", at, err)
		}
		return fmt.Errorf("catalog: put %d volumes: %w", len(vs), err)
	}
	for i, v := range vs {
		v.Generation, v.Created = stored[i].Generation, stored[i].Created
	}
	return nil
}

// Delete removes the named volume from the catalog and returns what it was.
// It does not touch the backing; [Store.Remove] does. It fails with
// [ErrNotFound] if there is no such volume, and with [ErrCorrupt] (deleting
// nothing) if its record cannot be decoded.
func (c *Catalog) Delete(name string) (*Volume, error) {
	if err := checkName("delete", name); err != nil {
		return nil, err
	}
	var v *Volume
	err := c.update("delete", name, func(b *bolt.Bucket) error {
		var err error
		if v, err = getVolume(b, name); err != nil {
			return err
		}
		if err := deleteBlocks(b.Tx(), name); err != nil {
			return err
		}
		return b.Delete([]byte(name))
	})
	if err != nil {
		return nil, err
	}
	return v, nil
}

// update runs fn on the volumes bucket in a read-write transaction. Errors
// get the "catalog: op name:" prefix.
func (c *Catalog) update(op, name string, fn func(b *bolt.Bucket) error) error {
	if c.readOnly {
		return fmt.Errorf("catalog: %s %q: %w", op, name, ErrReadOnly)
	}
	err := c.updateTx(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVolumes)
		if b == nil {
			return fmt.Errorf("no volumes bucket: %w", ErrCorrupt)
		}
		return fn(b)
	})
	if err != nil {
		return fmt.Errorf("catalog: %s %q: %w", op, name, err)
	}
	return nil
}
