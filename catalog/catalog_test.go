package catalog

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
)

// openCatalog opens a fresh catalog in a temporary directory, closed at the
// end of the test.
func openCatalog(t *testing.T) (*Catalog, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "catalog.db")
	c, err := Open(path, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, path
}

func names(vs []*Volume) []string {
	var ns []string
	for _, v := range vs {
		ns = append(ns, v.Name)
	}
	return ns
}

func TestCatalogRoundTrip(t *testing.T) {
	c, path := openCatalog(t)
	in := map[string]*Volume{}
	for _, name := range []string{"c", "a", "b-2", "B"} {
		v := sampleVolume(name, 3)
		v.Generation = 0
		if err := c.Put(v); err != nil {
			t.Fatalf("Put(%q): %v", name, err)
		}
		in[name] = v
	}
	// Generations come from one growing counter.
	if g := []uint64{in["c"].Generation, in["a"].Generation, in["b-2"].Generation, in["B"].Generation}; !(g[0] < g[1] && g[1] < g[2] && g[2] < g[3]) {
		t.Errorf("generations %v are not increasing", g)
	}
	for name, want := range in {
		got, err := c.Get(name)
		if err != nil {
			t.Fatalf("Get(%q): %v", name, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Get(%q) mismatch (-want +got):\n%s", name, diff)
		}
	}
	list, err := c.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if diff := cmp.Diff([]string{"B", "a", "b-2", "c"}, names(list)); diff != "" {
		t.Errorf("List names (-want +got):\n%s", diff)
	}

	if err := c.Put(sampleVolume("a", 1)); !errors.Is(err, ErrExists) {
		t.Errorf("Put of existing name: %v, want ErrExists", err)
	}

	// Replace bumps the generation and keeps Created when not given.
	old := in["b-2"]
	r := sampleVolume("b-2", 5)
	r.Created = time.Time{}
	if err := c.Replace(r); err != nil {
		t.Fatalf("Replace: %v", err)
	}
	if r.Generation <= in["B"].Generation {
		t.Errorf("Replace gave generation %d, not above the newest %d", r.Generation, in["B"].Generation)
	}
	if !r.Created.Equal(old.Created) {
		t.Errorf("Replace changed Created from %v to %v", old.Created, r.Created)
	}
	if got, _ := c.Get("b-2"); got == nil || got.Extents() != 5 || got.Generation != r.Generation {
		t.Errorf("after Replace, Get = %+v", got)
	}
	if err := c.Replace(sampleVolume("nope", 1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Replace of missing volume: %v, want ErrNotFound", err)
	}

	del, err := c.Delete("a")
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if diff := cmp.Diff(in["a"], del); diff != "" {
		t.Errorf("Delete returned (-want +got):\n%s", diff)
	}
	_, err = c.Get("a")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"a"`) {
		t.Errorf("Get after Delete: %v, want ErrNotFound naming the volume", err)
	}
	if _, err := c.Delete("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete: %v, want ErrNotFound", err)
	}

	// A recreated volume never reuses an old generation.
	again := sampleVolume("a", 1)
	if err := c.Put(again); err != nil {
		t.Fatal(err)
	}
	if again.Generation <= r.Generation {
		t.Errorf("recreated volume got generation %d, not above %d", again.Generation, r.Generation)
	}

	// Everything survives a reopen.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c2, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	list, err = c2.List()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"B", "a", "b-2", "c"}, names(list)); diff != "" {
		t.Errorf("List after reopen (-want +got):\n%s", diff)
	}
}

func TestPutSetsCreated(t *testing.T) {
	c, _ := openCatalog(t)
	v := sampleVolume("t", 1)
	v.Created = time.Time{}
	before := time.Now()
	if err := c.Put(v); err != nil {
		t.Fatal(err)
	}
	if v.Created.Before(before.Add(-time.Second)) || v.Created.After(time.Now().Add(time.Second)) {
		t.Errorf("Created = %v, want about %v", v.Created, before)
	}
	if v.Created.Location() != time.UTC {
		t.Errorf("Created location %v, want UTC", v.Created.Location())
	}
	got, err := c.Get("t")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Created.Equal(v.Created) {
		t.Errorf("stored Created %v, Put reported %v", got.Created, v.Created)
	}
}

func TestCatalogRejects(t *testing.T) {
	c, _ := openCatalog(t)
	for _, name := range []string{"../x", "/etc", ".hidden", "", strings.Repeat("x", 129), "a/b", "a\x00"} {
		v := sampleVolume("ok", 1)
		v.Name = name
		if err := c.Put(v); !errors.Is(err, ErrBadName) {
			t.Errorf("Put(%q): %v, want ErrBadName", name, err)
		}
		if _, err := c.Get(name); !errors.Is(err, ErrBadName) {
			t.Errorf("Get(%q): %v, want ErrBadName", name, err)
		}
		if _, err := c.Delete(name); !errors.Is(err, ErrBadName) {
			t.Errorf("Delete(%q): %v, want ErrBadName", name, err)
		}
		if err := c.Replace(v); !errors.Is(err, ErrBadName) {
			t.Errorf("Replace(%q): %v, want ErrBadName", name, err)
		}
	}
	v := sampleVolume("bad", 2)
	v.CRCs = nil
	err := c.Put(v)
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("Put with no CRCs: %v, want ErrInvalid", err)
	}
	if want := `catalog: put "bad": `; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q does not start with %q", err, want)
	}
	if list, err := c.List(); err != nil || len(list) != 0 {
		t.Errorf("List after rejected puts = %v, %v; want empty", names(list), err)
	}
}

// writeRawDB builds a bbolt file with the given buckets and keys, bypassing
// this package.
func writeRawDB(t *testing.T, path string, fill func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fill); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	writeRawDB(t, path, func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if err := meta.Put(keySchema, binary.BigEndian.AppendUint32(nil, 2)); err != nil {
			return err
		}
		_, err = tx.CreateBucket(bucketVolumes)
		return err
	})
	for _, opts := range []*Options{nil, {ReadOnly: true}} {
		c, err := Open(path, opts)
		if err == nil {
			c.Close()
			t.Fatalf("Open(%+v) of a schema 2 catalog succeeded", opts)
		}
		if !errors.Is(err, ErrNewerSchema) {
			t.Errorf("Open: %v, want ErrNewerSchema", err)
		}
		for _, want := range []string{"catalog: open ", "version 2", "build's 1", "upgrade blockd"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		}
	}
	// The refused catalog is left as it was.
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if got := binary.BigEndian.Uint32(tx.Bucket(bucketMeta).Get(keySchema)); got != 2 {
			t.Errorf("schema after refused Open = %d, want 2", got)
		}
		return nil
	})
}

func TestCorruptDatabases(t *testing.T) {
	tests := []struct {
		name string
		fill func(tx *bolt.Tx) error
	}{
		{"volumes without meta", func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket(bucketVolumes)
			return err
		}},
		{"other bucket without meta", func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket([]byte("something"))
			return err
		}},
		{"meta without schema", func(tx *bolt.Tx) error {
			if _, err := tx.CreateBucket(bucketVolumes); err != nil {
				return err
			}
			_, err := tx.CreateBucket(bucketMeta)
			return err
		}},
		{"schema 0", func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucket(bucketMeta)
			if err != nil {
				return err
			}
			if _, err := tx.CreateBucket(bucketVolumes); err != nil {
				return err
			}
			return meta.Put(keySchema, []byte{0, 0, 0, 0})
		}},
		{"schema of 2 bytes", func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucket(bucketMeta)
			if err != nil {
				return err
			}
			return meta.Put(keySchema, []byte{0, 1})
		}},
		{"no volumes bucket", func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucket(bucketMeta)
			if err != nil {
				return err
			}
			return meta.Put(keySchema, []byte{0, 0, 0, 1})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "catalog.db")
			writeRawDB(t, path, tt.fill)
			c, err := Open(path, nil)
			if err == nil {
				c.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("Open: %v, want ErrCorrupt", err)
			}
		})
	}

	t.Run("not a bbolt file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "catalog.db")
		if err := os.WriteFile(path, []byte(strings.Repeat("garbage!", 2048)), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(path, nil); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Open: %v, want ErrCorrupt", err)
		}
	})

	t.Run("record under the wrong key", func(t *testing.T) {
		c, path := openCatalog(t)
		c.Close()
		writeRawDB(t, path, func(tx *bolt.Tx) error {
			return tx.Bucket(bucketVolumes).Put([]byte("other"), mustEncode(t, sampleVolume("real", 1)))
		})
		c, err := Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Get("other"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Get: %v, want ErrCorrupt", err)
		}
		if _, err := c.List(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("List: %v, want ErrCorrupt", err)
		}
	})
}

func TestLockTimeout(t *testing.T) {
	c, path := openCatalog(t)
	if err := c.Put(sampleVolume("held", 1)); err != nil {
		t.Fatal(err)
	}
	for _, opts := range []*Options{{LockTimeout: 50 * time.Millisecond}, {LockTimeout: -1}, {ReadOnly: true, LockTimeout: 50 * time.Millisecond}} {
		start := time.Now()
		c2, err := Open(path, opts)
		elapsed := time.Since(start)
		if err == nil {
			c2.Close()
			t.Fatalf("second Open(%+v) succeeded while the catalog was open", opts)
		}
		if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "catalog locked by another process") {
			t.Errorf("second Open(%+v): %v, want ErrLocked", opts, err)
		}
		if elapsed > 5*time.Second {
			t.Errorf("second Open(%+v) took %v", opts, elapsed)
		}
	}
	// The holder is unaffected, and once it closes the lock is free.
	if _, err := c.Get("held"); err != nil {
		t.Errorf("Get on the holder: %v", err)
	}
	c.Close()
	c3, err := Open(path, &Options{LockTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	c3.Close()
}

func TestReadOnly(t *testing.T) {
	c, path := openCatalog(t)
	if err := c.Put(sampleVolume("r", 2)); err != nil {
		t.Fatal(err)
	}
	c.Close()

	ro1, err := Open(path, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro1.Close()
	ro2, err := Open(path, &Options{ReadOnly: true, LockTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("second read-only Open: %v", err)
	}
	defer ro2.Close()
	if !ro1.ReadOnly() {
		t.Error("ReadOnly() = false")
	}
	if _, err := ro2.Get("r"); err != nil {
		t.Errorf("Get: %v", err)
	}
	if err := ro1.Put(sampleVolume("new", 1)); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Put: %v, want ErrReadOnly", err)
	}
	if _, err := ro1.Delete("r"); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Delete: %v, want ErrReadOnly", err)
	}
	if err := ro1.Replace(sampleVolume("r", 1)); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Replace: %v, want ErrReadOnly", err)
	}
	// A writer cannot join readers.
	if _, err := Open(path, &Options{LockTimeout: -1}); !errors.Is(err, ErrLocked) {
		t.Errorf("read-write Open beside readers: %v, want ErrLocked", err)
	}

	if _, err := Open(filepath.Join(t.TempDir(), "missing.db"), &Options{ReadOnly: true}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("read-only Open of a missing file: %v, want os.ErrNotExist", err)
	}
}
