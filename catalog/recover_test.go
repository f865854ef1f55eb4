package catalog

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// catalogDamages are the kinds of damage done to catalog.db by the recovery
// tests, as TestDamagedCatalog does them.
var catalogDamages = []struct {
	name   string
	damage func(t *testing.T, path string)
}{
	{"empty", func(t *testing.T, path string) {
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
	}},
	{"truncated", truncateInUse},
	{"zeroed pages", func(t *testing.T, path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		clear(b[3*os.Getpagesize():])
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}},
	{"random bytes", func(t *testing.T, path string) {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, st.Size())
		rand.NewChaCha8([32]byte{7}).Read(b)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}},
	{"deleted", func(t *testing.T, path string) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}},
}

// volumeGens returns the generation of each volume in the store at dir.
func volumeGens(t *testing.T, dir string) map[string]uint64 {
	t.Helper()
	s, err := OpenStore(dir, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	vs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	gens := map[string]uint64{}
	for _, v := range vs {
		gens[v.Name] = v.Generation
	}
	return gens
}

func TestRecoverDamaged(t *testing.T) {
	for _, tc := range catalogDamages {
		t.Run(tc.name, func(t *testing.T) {
			var oldGens map[string]uint64
			dir := damagedCatalog(t, func(t *testing.T, path string) {
				oldGens = volumeGens(t, filepath.Dir(path))
				tc.damage(t, path)
			})
			path := filepath.Join(dir, "catalog.db")
			damaged, _ := os.ReadFile(path)
			var last, total int64
			rep, err := Recover(context.Background(), dir, nil, WithProgress(func(done, tot int64) { last, total = done, tot }))
			if err != nil {
				t.Fatal(err)
			}
			if tc.name == "deleted" {
				if rep.MovedTo != "" || rep.Damage != nil {
					t.Fatalf("no catalog, but moved to %q, damage %v", rep.MovedTo, rep.Damage)
				}
			} else {
				if !errors.Is(rep.Damage, ErrCorrupt) {
					t.Fatalf("damage %v, want ErrCorrupt", rep.Damage)
				}
				if !strings.HasPrefix(filepath.Base(rep.MovedTo), "catalog.db.damaged-") {
					t.Fatalf("moved to %q", rep.MovedTo)
				}
				if kept, err := os.ReadFile(rep.MovedTo); err != nil || !bytes.Equal(kept, damaged) {
					t.Fatalf("the damaged catalog was not kept as it was (%v)", err)
				}
			}
			if total != 128<<10 || last != total || rep.Bytes != total {
				t.Fatalf("progress %d of %d, report %d bytes; want 128 KiB", last, total, rep.Bytes)
			}
			if len(rep.Recovered) != 2 || rep.Recovered[0].Name != "a" || rep.Recovered[1].Name != "b" || len(rep.Skipped) != 0 {
				t.Fatalf("recovered %+v, skipped %+v", rep.Recovered, rep.Skipped)
			}
			for _, rv := range rep.Recovered {
				if rv.Compared && len(rv.Changed) != 0 {
					t.Errorf("%s: extents %v differ from the old record", rv.Name, rv.Changed)
				}
			}
			s, err := OpenStore(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.Catalog().Check(); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"a", "b"} {
				v, err := s.Get(name)
				if err != nil {
					t.Fatal(err)
				}
				if !v.Owned || v.ExtentSize != DefaultExtentSize && v.ExtentSize != 4096 || v.Generation <= oldGens[name] {
					t.Errorf("%s: %+v (old generation %d)", name, v, oldGens[name])
				}
				if bad, err := s.Verify(context.Background(), name); err != nil || bad != nil {
					t.Errorf("verify %s: %v %v", name, bad, err)
				}
				if err := s.CheckBacking(name); err != nil {
					t.Error(err)
				}
				if b, err := s.Blocks(name, v.Generation); err != nil || b == nil {
					t.Errorf("%s: no block CRCs (%v)", name, err)
				}
			}
		})
	}
}

func TestRecoverHealthyAndForce(t *testing.T) {
	dir := damagedCatalog(t, func(*testing.T, string) {})
	_, err := Recover(context.Background(), dir, nil)
	if !errors.Is(err, ErrHealthy) {
		t.Fatalf("recover of a healthy catalog: %v, want ErrHealthy", err)
	}
	// Change a byte of a: a forced recovery blesses it, and says which
	// extent no longer matches the old record.
	f, err := os.OpenFile(filepath.Join(dir, "volumes", "a.vol"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{'!'}, 5*4096+7)
	f.Close()
	rep, err := Recover(context.Background(), dir, &RecoverOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Damage != nil || !strings.Contains(rep.MovedTo, "catalog.db.replaced-") || rep.Scanned || rep.OldRecords != 2 {
		t.Fatalf("report %+v", rep)
	}
	a := rep.Recovered[0]
	if a.Name != "a" || a.ExtentSize != 4096 || !a.Compared || !slices.Equal(a.Changed, []int{5}) {
		t.Fatalf("a: extent size %d, compared %v, changed %v", a.ExtentSize, a.Compared, a.Changed)
	}
}

func TestRecoverLocked(t *testing.T) {
	dir := damagedCatalog(t, func(*testing.T, string) {})
	s, err := OpenStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Recover(context.Background(), dir, &RecoverOptions{Force: true}); !errors.Is(err, ErrLocked) {
		t.Fatalf("recover while open: %v, want ErrLocked", err)
	}
	if ents, _ := filepath.Glob(filepath.Join(dir, "catalog.db.*")); len(ents) != 0 {
		t.Fatalf("left %v", ents)
	}
}

func TestRecoverFiles(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := OpenStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	src, _ := writeSource(t, 3*4096)
	if _, err := s.Import(ctx, "linked", src, 4096, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "gone", 8192, 4096, FillRandom); err != nil {
		t.Fatal(err)
	}
	// r is replaced once: its backing is r.vol.1; an r.vol left behind
	// must not be taken for it.
	if _, err := s.Create(ctx, "r", 8192, 4096, FillRandom); err != nil {
		t.Fatal(err)
	}
	v, err := s.Write(ctx, "r", 3*4096, 4096, bytes.NewReader(randomBytes(3*4096, 3)), true)
	if err != nil || filepath.Base(v.Backing) != "r.vol.1" {
		t.Fatalf("replace: %v, %v", v, err)
	}
	s.Close()
	vols := filepath.Join(dir, "volumes")
	os.WriteFile(filepath.Join(vols, "r.vol"), randomBytes(8192, 4), 0o600)
	os.Remove(filepath.Join(vols, "gone.vol"))
	for name, data := range map[string][]byte{
		".tmp-x-123": {1}, "bad name.vol": {1}, "notes.txt": {1}, "e.vol": nil, "big.vol": randomBytes(4096, 5),
	} {
		os.WriteFile(filepath.Join(vols, name), data, 0o600)
	}
	os.Mkdir(filepath.Join(vols, "d.vol"), 0o700)
	// Zero both meta pages: bbolt cannot open the file, but every record
	// is still in it.
	damaged, err := os.ReadFile(filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	clear(damaged[:2*os.Getpagesize()])
	os.WriteFile(filepath.Join(dir, "catalog.db"), damaged, 0o600)

	rep, err := Recover(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Scanned || !errors.Is(rep.Damage, ErrCorrupt) {
		t.Fatalf("report %+v: want old records scanned", rep)
	}
	var got []string
	for _, rv := range rep.Recovered {
		got = append(got, rv.Name+"="+filepath.Base(rv.Backing))
	}
	if want := []string{"big=big.vol", "r=r.vol.1"}; !slices.Equal(got, want) {
		t.Fatalf("recovered %v, want %v", got, want)
	}
	if r := rep.Recovered[1]; !r.Compared || len(r.Changed) != 0 || r.Old.Backing != r.Backing {
		t.Errorf("r: compared %v, changed %v, old record %+v", r.Compared, r.Changed, r.Old)
	}
	skipped := map[string]string{}
	for _, sk := range rep.Skipped {
		skipped[filepath.Base(sk.Path)] = sk.Reason
	}
	for file, reason := range map[string]string{
		".tmp-x-123": "temporary file", "bad name.vol": "not a valid volume name", "notes.txt": "not named NAME.vol",
		"e.vol": "empty", "d.vol": "not a regular file", "r.vol": "a second backing of volume r",
	} {
		if !strings.Contains(skipped[file], reason) {
			t.Errorf("%s: skipped because %q, want %q", file, skipped[file], reason)
		}
	}
	if len(rep.Skipped) != 6 {
		t.Errorf("skipped %+v", rep.Skipped)
	}
	// The surviving records name the linked volume and the lost one.
	if len(rep.Linked) != 1 || rep.Linked[0].Name != "linked" || rep.Linked[0].Backing != src {
		t.Errorf("linked %+v, want %s", rep.Linked, src)
	}
	if len(rep.Missing) != 1 || rep.Missing[0].Name != "gone" {
		t.Errorf("missing %+v, want gone", rep.Missing)
	}
	for _, p := range []string{".tmp-x-123", "r.vol", "notes.txt"} {
		if _, err := os.Stat(filepath.Join(vols, p)); err != nil {
			t.Errorf("recover removed %s: %v", p, err)
		}
	}
}

func TestSalvageRecords(t *testing.T) {
	old := sampleVolume("vol", 3)
	old.Generation = 4
	newer := sampleVolume("vol", 3)
	newer.Generation = 9
	other := sampleVolume("other", 1)
	var b []byte
	b = append(b, randomBytes(100, 1)...)
	b = append(b, mustEncode(t, newer)...)
	b = append(b, 1, 1, 1)
	b = append(b, mustEncode(t, old)...)
	b = append(b, mustEncode(t, other)[:20]...) // cut short
	got := salvageRecords(b)
	if len(got) != 1 || got[0].Name != "vol" || got[0].Generation != 9 {
		t.Fatalf("salvaged %+v", got)
	}
	if got := salvageRecords(nil); len(got) != 0 {
		t.Fatalf("salvaged %+v from nothing", got)
	}
}

func TestCheck(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	for _, name := range []string{"a", "b", "c"} {
		if _, err := s.Create(ctx, name, 8192, 4096, FillRandom); err != nil {
			t.Fatal(err)
		}
	}
	src, _ := writeSource(t, 8192)
	if _, err := s.Import(ctx, "l", src, 4096, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Catalog().Check(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b", "c", "l"} {
		if err := s.CheckBacking(name); err != nil {
			t.Fatal(err)
		}
	}
	vols := filepath.Join(s.Dir(), "volumes")
	os.Remove(filepath.Join(vols, "a.vol"))
	os.Truncate(filepath.Join(vols, "b.vol"), 4096)
	os.Truncate(filepath.Join(vols, "c.vol"), 3*4096)
	os.Truncate(src, 3*4096) // a linked backing may be larger
	for name, want := range map[string]string{"a": "no such file", "b": "is 4096 bytes", "c": "is 12288 bytes, the volume 8192", "l": ""} {
		err := s.CheckBacking(name)
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if !errors.Is(err, ErrBacking) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want ErrBacking and %q", name, err, want)
		}
	}
	if err := s.CheckBacking("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing volume: %v", err)
	}

	// Bad records are all reported, by key.
	err := s.Catalog().updateTx(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVolumes)
		if err := b.Put([]byte("x"), []byte{1, 2, 3}); err != nil {
			return err
		}
		return b.Put([]byte("y"), []byte("garbage"))
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Catalog().Check()
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `volume "x"`) || !strings.Contains(err.Error(), `volume "y"`) {
		t.Fatalf("check: %v", err)
	}
	// So are bad block CRC records.
	err = s.Catalog().updateTx(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketBlocks)
		if err != nil {
			return err
		}
		return b.Put([]byte("c"), []byte("not a block record"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Catalog().Check(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `block CRCs of "c"`) {
		t.Fatalf("check: %v", err)
	}
}

func TestBackup(t *testing.T) {
	dir := damagedCatalog(t, func(*testing.T, string) {})
	s, err := OpenStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := filepath.Join(t.TempDir(), "backup.db")
	// Backup works on the read-write catalog of this process.
	n, err := s.Catalog().Backup(out)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(out)
	if err != nil || st.Size() != n || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup: %d bytes written, %v, %v", n, st, err)
	}
	if _, err := s.Catalog().Backup(out); !errors.Is(err, os.ErrExist) {
		t.Fatalf("backup over an existing file: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 1 {
		t.Fatalf("left %v", ents)
	}
	c, err := Open(out, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
	got, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := s.List()
	if len(got) != 2 || names(got)[0] != names(want)[0] || got[1].Generation != want[1].Generation {
		t.Fatalf("backup lists %v, the catalog %v", names(got), names(want))
	}
}
