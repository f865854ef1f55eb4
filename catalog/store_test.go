package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// newStore opens a Store on a fresh data directory, closed at the end of the
// test.
func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := OpenStore(filepath.Join(t.TempDir(), "data"), nil)
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// independentCRCs computes the extent CRCs of data with a table of its own,
// in one call per extent.
func independentCRCs(data []byte, extentSize int) []uint32 {
	tab := crc32.MakeTable(crc32.Castagnoli)
	var crcs []uint32
	for off := 0; off < len(data); off += extentSize {
		crcs = append(crcs, crc32.Checksum(data[off:min(off+extentSize, len(data))], tab))
	}
	return crcs
}

// volumeFiles lists the entries of the store's volumes directory.
func volumeFiles(t *testing.T, s *Store) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(s.Dir(), "volumes"))
	if err != nil {
		t.Fatal(err)
	}
	var ns []string
	for _, e := range ents {
		ns = append(ns, e.Name())
	}
	return ns
}

// checkPrefix checks that err starts with prefix and has exactly one
// "catalog: " in it.
func checkPrefix(t *testing.T, err error, prefix string) {
	t.Helper()
	if err == nil {
		return
	}
	if msg := err.Error(); !strings.HasPrefix(msg, prefix) || strings.Count(msg, "catalog: ") != 1 {
		t.Errorf("error %q: want one prefix %q", msg, prefix)
	}
}

// writeSource writes n bytes of seeded pseudo-random data to a new file.
func writeSource(t *testing.T, n int) (string, []byte) {
	t.Helper()
	data := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(n), 1, 2, 3}).Read(data)
	path := filepath.Join(t.TempDir(), "src.bin")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, data
}

// flipBit flips one bit of the file at off.
func flipBit(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestCreateRandomVerify(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	const extent = 2 << 20 // larger than the 1 MiB chunk, so extents span chunks
	const size = 2*extent + 12345
	v, err := s.Create(ctx, "rnd", size, extent, FillRandom)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	wantPath := filepath.Join(s.Dir(), "volumes", "rnd.vol")
	if v.Backing != wantPath || !v.Owned || v.Size != size || v.ExtentSize != extent || v.Extents() != 3 {
		t.Errorf("Create returned %+v", v)
	}
	data, err := os.ReadFile(wantPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != size {
		t.Fatalf("backing is %d bytes, want %d", len(data), size)
	}
	if bytes.Count(data[:4096], []byte{0}) > 100 {
		t.Error("random volume looks mostly zero")
	}
	if diff := cmp.Diff(independentCRCs(data, extent), v.CRCs); diff != "" {
		t.Errorf("CRCs differ from an independent computation (-want +got):\n%s", diff)
	}
	if off, n := v.ExtentRange(2); v.ExtentCRC(2) != crc32.Checksum(data[off:off+n], crc32.MakeTable(crc32.Castagnoli)) || n != 12345 {
		t.Errorf("last short extent (%d bytes at %d) CRC %#08x is wrong", n, off, v.ExtentCRC(2))
	}
	stored, err := s.Catalog().Get("rnd")
	if err != nil {
		t.Fatal(err)
	}
	// Get leaves the block CRCs out; they are stored apart.
	if diff := cmp.Diff(v, stored, cmpopts.IgnoreFields(Volume{}, "Blocks")); diff != "" {
		t.Errorf("catalog entry differs from the returned volume (-returned +stored):\n%s", diff)
	}
	if b, err := s.Blocks("rnd", v.Generation); err != nil || !cmp.Equal(b, v.Blocks) {
		t.Errorf("stored blocks %+v, %v; want %+v", b, err, v.Blocks)
	}

	bad, err := s.Verify(ctx, "rnd")
	if err != nil || bad != nil {
		t.Fatalf("Verify of a fresh volume = %v, %v; want nil, nil", bad, err)
	}
	flipBit(t, wantPath, extent+777)
	if bad, err := s.Verify(ctx, "rnd"); err != nil || !cmp.Equal(bad, []int{1}) {
		t.Errorf("Verify after flipping a bit in extent 1 = %v, %v; want [1]", bad, err)
	}
	flipBit(t, wantPath, size-1)
	if bad, err := s.Verify(ctx, "rnd"); err != nil || !cmp.Equal(bad, []int{1, 2}) {
		t.Errorf("Verify after flipping the last byte = %v, %v; want [1 2]", bad, err)
	}

	// Two random volumes differ.
	v2, err := s.Create(ctx, "rnd2", 4096, 4096, FillRandom)
	if err != nil {
		t.Fatal(err)
	}
	data2, _ := os.ReadFile(v2.Backing)
	if bytes.Equal(data[:4096], data2) {
		t.Error("two random volumes start with the same bytes")
	}
	if diff := cmp.Diff([]string{"rnd.vol", "rnd2.vol"}, volumeFiles(t, s)); diff != "" {
		t.Errorf("volumes/ (-want +got):\n%s", diff)
	}
}

func TestCreateZero(t *testing.T) {
	s := newStore(t)
	const size = 3*8192 + 4000
	v, err := s.Create(context.Background(), "z", size, 8192, FillZero)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(v.Backing)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != size || bytes.ContainsFunc(data, func(r rune) bool { return r != 0 }) {
		t.Fatalf("zero volume has %d bytes, not all zero", len(data))
	}
	if diff := cmp.Diff(independentCRCs(data, 8192), v.CRCs); diff != "" {
		t.Errorf("CRCs (-want +got):\n%s", diff)
	}
	if v.CRCs[0] == v.CRCs[3] {
		t.Error("short last extent has the CRC of a full one")
	}
	if bad, err := s.Verify(context.Background(), "z"); err != nil || bad != nil {
		t.Errorf("Verify = %v, %v", bad, err)
	}
}

func TestCreateDefaultExtentAndProgress(t *testing.T) {
	s := newStore(t)
	const size = DefaultExtentSize + 3<<20 + 1
	var calls [][2]int64
	v, err := s.Create(context.Background(), "p", size, 0, FillRandom,
		WithProgress(func(done, total int64) { calls = append(calls, [2]int64{done, total}) }))
	if err != nil {
		t.Fatal(err)
	}
	if v.ExtentSize != DefaultExtentSize || v.Extents() != 2 {
		t.Errorf("extent size %d, %d extents; want %d, 2", v.ExtentSize, v.Extents(), DefaultExtentSize)
	}
	if len(calls) < 2 {
		t.Fatalf("progress called %d times", len(calls))
	}
	var last int64
	for _, c := range calls {
		if c[1] != size || c[0] <= last || c[0]-last > bufSize {
			t.Fatalf("progress call %v after %d (total %d)", c, last, size)
		}
		last = c[0]
	}
	if last != size {
		t.Errorf("last progress %d, want %d", last, size)
	}
}

func TestCreateRejects(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	tests := []struct {
		name       string
		size, ext  int64
		fill       Fill
		want       error
		volumeName string
	}{
		{"zero size", 0, 4096, FillZero, ErrInvalid, "v"},
		{"negative size", -4096, 4096, FillZero, ErrInvalid, "v"},
		{"small extent", 4096, 2048, FillZero, ErrInvalid, "v"},
		{"unaligned extent", 1 << 20, 4096 + 512, FillZero, ErrInvalid, "v"},
		{"huge extent", 1 << 30, 128 << 20, FillZero, ErrInvalid, "v"},
		{"too many extents", MaxExtents*4096 + 1, 4096, FillZero, ErrInvalid, "v"},
		{"unknown fill", 4096, 4096, Fill(9), ErrInvalid, "v"},
		{"dotdot", 4096, 4096, FillZero, ErrBadName, "../x"},
		{"absolute", 4096, 4096, FillZero, ErrBadName, "/etc"},
		{"hidden", 4096, 4096, FillZero, ErrBadName, ".hidden"},
		{"empty", 4096, 4096, FillZero, ErrBadName, ""},
		{"long", 4096, 4096, FillZero, ErrBadName, strings.Repeat("l", 129)},
		{"slash", 4096, 4096, FillZero, ErrBadName, "a/b"},
		{"NUL", 4096, 4096, FillZero, ErrBadName, "a\x00b"},
	}
	for _, tt := range tests {
		_, err := s.Create(ctx, tt.volumeName, tt.size, tt.ext, tt.fill)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: Create = %v, want %v", tt.name, err, tt.want)
		}
		checkPrefix(t, err, "catalog: create ")
	}
	if _, err := s.Create(ctx, "dup", 4096, 4096, FillZero); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "dup", 8192, 4096, FillRandom); !errors.Is(err, ErrExists) {
		t.Errorf("Create of an existing name: %v, want ErrExists", err)
	}
	if fi, err := os.Stat(filepath.Join(s.Dir(), "volumes", "dup.vol")); err != nil || fi.Size() != 4096 {
		t.Errorf("existing volume's file after a refused Create: %v, %v", fi, err)
	}
	if diff := cmp.Diff([]string{"dup.vol"}, volumeFiles(t, s)); diff != "" {
		t.Errorf("volumes/ (-want +got):\n%s", diff)
	}
	if list, _ := s.Catalog().List(); len(list) != 1 {
		t.Errorf("catalog has %v", names(list))
	}
}

func TestCreateCancel(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sawTemp bool
	_, err := s.Create(ctx, "half", 8<<20, 1<<20, FillRandom, WithProgress(func(done, total int64) {
		if done == 3<<20 {
			// Mid-way: the data is in a temporary file, not the volume's.
			for _, n := range volumeFiles(t, s) {
				sawTemp = sawTemp || strings.HasPrefix(n, ".tmp-half-")
				if n == "half.vol" {
					t.Error("half.vol exists before the write finished")
				}
			}
			cancel()
		}
	}))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Create with cancelled ctx: %v, want context.Canceled", err)
	}
	checkPrefix(t, err, `catalog: create "half": `)
	if !sawTemp {
		t.Error("no temporary file seen during Create")
	}
	if files := volumeFiles(t, s); len(files) != 0 {
		t.Errorf("volumes/ after cancel holds %v", files)
	}
	if _, err := s.Catalog().Get("half"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after cancelled Create: %v, want ErrNotFound", err)
	}
	// The name is free again.
	if _, err := s.Create(context.Background(), "half", 8192, 4096, FillZero); err != nil {
		t.Errorf("Create after a cancelled one: %v", err)
	}
}

func TestCreateBusyName(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	var inner, innerRemove error
	_, err := s.Create(ctx, "busy", 2<<20, 1<<20, FillRandom, WithProgress(func(done, total int64) {
		if done == 1<<20 {
			_, inner = s.Create(ctx, "busy", 4096, 4096, FillZero)
			innerRemove = s.Remove(ctx, "busy")
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(inner, ErrExists) {
		t.Errorf("concurrent Create of the same name: %v, want ErrExists", inner)
	}
	if !errors.Is(innerRemove, ErrNotFound) {
		t.Errorf("Remove during Create: %v, want ErrNotFound", innerRemove)
	}
	if bad, err := s.Verify(ctx, "busy"); err != nil || bad != nil {
		t.Errorf("Verify = %v, %v", bad, err)
	}
}

func TestImportCopy(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	src, data := writeSource(t, 3*65536+100)
	var last int64
	v, err := s.Import(ctx, "cp", src, 65536, false, WithProgress(func(done, total int64) { last = done }))
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	if last != int64(len(data)) {
		t.Errorf("last progress %d, want %d", last, len(data))
	}
	if !v.Owned || v.Backing != filepath.Join(s.Dir(), "volumes", "cp.vol") || v.Size != int64(len(data)) {
		t.Errorf("Import returned %+v", v)
	}
	got, err := os.ReadFile(v.Backing)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("copied backing differs from the source (err %v)", err)
	}
	if diff := cmp.Diff(independentCRCs(data, 65536), v.CRCs); diff != "" {
		t.Errorf("CRCs (-want +got):\n%s", diff)
	}
	// The copy does not depend on the source.
	flipBit(t, src, 10)
	if bad, err := s.Verify(ctx, "cp"); err != nil || bad != nil {
		t.Errorf("Verify of the copy after changing the source = %v, %v", bad, err)
	}
	if err := s.Remove(ctx, "cp"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(v.Backing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("owned backing after Remove: %v, want gone", err)
	}
	if _, err := os.Stat(src); err != nil {
		t.Errorf("source after Remove of its copy: %v", err)
	}
	if _, err := s.Catalog().Get("cp"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Remove: %v", err)
	}
	if err := s.Remove(ctx, "cp"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove: %v, want ErrNotFound", err)
	}
}

func TestImportLink(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	src, data := writeSource(t, 5*4096+1)
	t.Chdir(filepath.Dir(src))
	v, err := s.Import(ctx, "ln", filepath.Base(src), 4096, true)
	if err != nil {
		t.Fatalf("Import link: %v", err)
	}
	if v.Owned || v.Backing != src {
		t.Errorf("linked volume: Owned %v, Backing %q; want false, %q", v.Owned, v.Backing, src)
	}
	if diff := cmp.Diff(independentCRCs(data, 4096), v.CRCs); diff != "" {
		t.Errorf("CRCs (-want +got):\n%s", diff)
	}
	if files := volumeFiles(t, s); len(files) != 0 {
		t.Errorf("link import wrote %v into volumes/", files)
	}
	f, ov, err := s.Open("ln")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	f.Close()
	if ov.Backing != src {
		t.Errorf("Open volume backing %q", ov.Backing)
	}
	flipBit(t, src, 4*4096)
	if bad, err := s.Verify(ctx, "ln"); err != nil || !cmp.Equal(bad, []int{4}) {
		t.Errorf("Verify after changing the linked source = %v, %v; want [4]", bad, err)
	}
	if err := s.Remove(ctx, "ln"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(src); err != nil {
		t.Errorf("linked source after Remove: %v, want it left alone", err)
	}
	if _, err := s.Catalog().Get("ln"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Remove: %v", err)
	}
}

func TestOpenBackingChanged(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	src, _ := writeSource(t, 3*4096)
	if _, err := s.Import(ctx, "shrink", src, 4096, true); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(src, 2*4096); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.Open("shrink")
	if !errors.Is(err, ErrBacking) || !strings.Contains(err.Error(), "8192 bytes") {
		t.Errorf("Open of a shrunk backing: %v, want ErrBacking saying its size", err)
	}
	checkPrefix(t, err, `catalog: open "shrink": `)
	if _, err := s.Verify(ctx, "shrink"); !errors.Is(err, ErrBacking) {
		t.Errorf("Verify of a shrunk backing: %v, want ErrBacking", err)
	}
	if err := os.Remove(src); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Open("shrink")
	if !errors.Is(err, ErrBacking) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open of a vanished backing: %v, want ErrBacking and os.ErrNotExist", err)
	}
	// A grown backing still serves the volume.
	v, err := s.Create(ctx, "grow", 4096, 4096, FillRandom)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(v.Backing, 8192); err != nil {
		t.Fatal(err)
	}
	f, _, err := s.Open("grow")
	if err != nil {
		t.Errorf("Open of a grown backing: %v", err)
	} else {
		f.Close()
	}
	if _, _, err := s.Open("none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open of a missing volume: %v, want ErrNotFound", err)
	}
}

func TestImportRejects(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	src, _ := writeSource(t, 4096)
	if _, err := s.Create(ctx, "inside", 4096, 4096, FillZero); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, vol, src string
		link           bool
		want           error
	}{
		{"directory", "d", t.TempDir(), false, ErrInvalid},
		{"char device", "c", os.DevNull, true, ErrInvalid},
		{"empty file", "e", empty, false, ErrInvalid},
		{"missing", "m", filepath.Join(t.TempDir(), "nope"), false, os.ErrNotExist},
		{"link into volumes", "l", filepath.Join(s.Dir(), "volumes", "inside.vol"), true, ErrInvalid},
		{"existing name", "inside", src, false, ErrExists},
		{"bad name", "../up", src, false, ErrBadName},
	}
	for _, tt := range tests {
		_, err := s.Import(ctx, tt.vol, tt.src, 4096, tt.link)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: Import = %v, want %v", tt.name, err, tt.want)
		}
		checkPrefix(t, err, "catalog: import ")
	}
	if diff := cmp.Diff([]string{"inside.vol"}, volumeFiles(t, s)); diff != "" {
		t.Errorf("volumes/ (-want +got):\n%s", diff)
	}
}

func TestRemoveOwnedKeepsLinked(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	own, err := s.Create(ctx, "own", 8192, 4096, FillRandom)
	if err != nil {
		t.Fatal(err)
	}
	src, _ := writeSource(t, 8192)
	if _, err := s.Import(ctx, "ext", src, 4096, true); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"own", "ext"} {
		if err := s.Remove(ctx, n); err != nil {
			t.Fatalf("Remove(%q): %v", n, err)
		}
	}
	if _, err := os.Stat(own.Backing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("owned backing after Remove: %v", err)
	}
	if _, err := os.Stat(src); err != nil {
		t.Errorf("linked backing after Remove: %v", err)
	}
	if list, err := s.Catalog().List(); err != nil || len(list) != 0 {
		t.Errorf("List after removing all = %v, %v", names(list), err)
	}
	if err := s.Remove(ctx, "../own"); !errors.Is(err, ErrBadName) {
		t.Errorf("Remove of a bad name: %v, want ErrBadName", err)
	}
}

func TestOpenStoreRemovesTemps(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(context.Background(), "keep", 4096, 4096, FillZero); err != nil {
		t.Fatal(err)
	}
	s.Close()
	vols := filepath.Join(dir, "volumes")
	for _, n := range []string{".tmp-crashed-123", "orphan.vol"} {
		if err := os.WriteFile(filepath.Join(vols, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Read-only opens leave the directory alone.
	ro, err := OpenStore(dir, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{".tmp-crashed-123", "keep.vol", "orphan.vol"}, volumeFiles(t, ro)); diff != "" {
		t.Errorf("volumes/ after read-only open (-want +got):\n%s", diff)
	}
	ro.Close()
	s, err = OpenStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if diff := cmp.Diff([]string{"keep.vol", "orphan.vol"}, volumeFiles(t, s)); diff != "" {
		t.Errorf("volumes/ after reopen (-want +got):\n%s", diff)
	}
	// An orphaned volume file is replaced by the next create of its name.
	v, err := s.Create(context.Background(), "orphan", 8192, 4096, FillZero)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(v.Backing); err != nil || fi.Size() != 8192 {
		t.Errorf("recreated orphan: %v, %v", fi, err)
	}
}

func TestStoreReadOnlyAndLocked(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(context.Background(), "v", 8192, 4096, FillRandom); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := OpenStore(dir, &Options{LockTimeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Errorf("second OpenStore: %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second OpenStore took %v", d)
	}
	s.Close()

	ro, err := OpenStore(dir, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	ctx := context.Background()
	if _, err := ro.Create(ctx, "w", 4096, 4096, FillZero); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Create: %v, want ErrReadOnly", err)
	}
	src, _ := writeSource(t, 4096)
	if _, err := ro.Import(ctx, "w", src, 4096, true); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Import: %v, want ErrReadOnly", err)
	}
	if err := ro.Remove(ctx, "v"); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Remove: %v, want ErrReadOnly", err)
	}
	if bad, err := ro.Verify(ctx, "v"); err != nil || bad != nil {
		t.Errorf("Verify: %v, %v", bad, err)
	}
	if _, err := OpenStore(filepath.Join(dir, "nope"), &Options{ReadOnly: true}); err == nil {
		t.Error("read-only OpenStore of a missing directory succeeded")
	}
}

func TestVerifyCancel(t *testing.T) {
	s := newStore(t)
	if _, err := s.Create(context.Background(), "v", 4<<20, 1<<20, FillZero); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := s.Verify(ctx, "v", WithProgress(func(done, total int64) {
		if done == 1<<20 {
			cancel()
		}
	}))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Verify with cancelled ctx: %v, want context.Canceled", err)
	}
}

func TestConcurrentCreates(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	const n = 8
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := s.Create(ctx, fmt.Sprintf("c%d", i), 64<<10, 4096, FillRandom)
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	list, err := s.Catalog().List()
	if err != nil || len(list) != n {
		t.Fatalf("List = %v, %v; want %d volumes", names(list), err, n)
	}
	gens := map[uint64]bool{}
	for _, v := range list {
		gens[v.Generation] = true
		if bad, err := s.Verify(ctx, v.Name); err != nil || bad != nil {
			t.Errorf("Verify(%q) = %v, %v", v.Name, bad, err)
		}
	}
	if len(gens) != n {
		t.Errorf("%d distinct generations for %d volumes", len(gens), n)
	}
}

func TestParseFill(t *testing.T) {
	for _, f := range []Fill{FillZero, FillRandom} {
		got, err := ParseFill(f.String())
		if err != nil || got != f {
			t.Errorf("ParseFill(%q) = %v, %v", f.String(), got, err)
		}
	}
	if _, err := ParseFill("ones"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParseFill(ones): %v, want ErrInvalid", err)
	}
}

// TestImportBlockDevice attaches a loop device, which needs root and changes
// the machine, so it runs only with CATALOG_TEST_LOOP=1.
func TestImportBlockDevice(t *testing.T) {
	if os.Getenv("CATALOG_TEST_LOOP") != "1" {
		t.Skip("set CATALOG_TEST_LOOP=1 to attach a loop device (needs root)")
	}
	src, data := writeSource(t, 3<<20+8192)
	out, err := exec.Command("losetup", "--find", "--show", src).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })

	s := newStore(t)
	ctx := context.Background()
	v, err := s.Import(ctx, "dev", dev, 1<<20, true)
	if err != nil {
		t.Fatalf("Import of %s: %v", dev, err)
	}
	if v.Size != int64(len(data)) || v.Backing != dev || v.Owned {
		t.Errorf("device volume %+v, want size %d", v, len(data))
	}
	if diff := cmp.Diff(independentCRCs(data, 1<<20), v.CRCs); diff != "" {
		t.Errorf("CRCs (-want +got):\n%s", diff)
	}
	f, _, err := s.Open("dev")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if bad, err := s.Verify(ctx, "dev"); err != nil || bad != nil {
		t.Errorf("Verify = %v, %v", bad, err)
	}
	cp, err := s.Import(ctx, "devcopy", dev, 1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(cp.Backing); !bytes.Equal(got, data) {
		t.Error("copy of the device differs from its contents")
	}
	if err := s.Remove(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dev); err != nil {
		t.Errorf("device after Remove: %v", err)
	}
}

func BenchmarkCreate(b *testing.B) {
	for _, bc := range []struct {
		name string
		fill Fill
	}{{"random", FillRandom}, {"zero", FillZero}} {
		b.Run(bc.name+"/64MiB", func(b *testing.B) {
			s, err := OpenStore(b.TempDir(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			const size = 64 << 20
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Create(ctx, "bench", size, DefaultExtentSize, bc.fill); err != nil {
					b.Fatal(err)
				}
				if err := s.Remove(ctx, "bench"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	s, err := OpenStore(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const size = 64 << 20
	if _, err := s.Create(ctx, "bench", size, DefaultExtentSize, FillRandom); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if bad, err := s.Verify(ctx, "bench"); err != nil || bad != nil {
			b.Fatal(bad, err)
		}
	}
}
