package main

import (
	"bytes"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/cmd/internal/cli"
)

func TestCatalogCommands(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data dir") // a path that needs quoting
	for _, name := range []string{"a", "b"} {
		if code, _, stderr := runBlockd(t, "volume", "create", name, "--size", "64KiB", "--extent-size", "4KiB", "--fill", "random", "--data", data); code != 0 {
			t.Fatalf("create: %s", stderr)
		}
	}
	code, stdout, stderr := runBlockd(t, "catalog", "check", "--verify", "--data", data)
	if code != 0 || !strings.Contains(stdout, "volume a: ok") || !strings.Contains(stdout, "healthy") {
		t.Fatalf("check: exit %d\n%s%s", code, stdout, stderr)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	if code, stdout, stderr := runBlockd(t, "catalog", "backup", backup, "--data", data); code != 0 || !strings.Contains(stdout, "2 volumes") {
		t.Fatalf("backup: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := runBlockd(t, "catalog", "recover", "--data", data); code != 1 || !strings.Contains(stderr, "is healthy: nothing to recover") {
		t.Fatalf("recover of a healthy catalog: exit %d\n%s", code, stderr)
	}

	dbPath := filepath.Join(data, "catalog.db")
	if err := os.Truncate(dbPath, 0); err != nil {
		t.Fatal(err)
	}
	quoted := "'" + data + "'"
	code, _, stderr = runBlockd(t, "volume", "list", "--data", data)
	for _, want := range []string{"catalog " + dbPath + " is damaged: the file is empty",
		"'blockd catalog check --data " + quoted + "'", "'blockd catalog recover --data " + quoted + "'", "restore a backup"} {
		if code != 1 || !strings.Contains(stderr, want) {
			t.Errorf("list of a damaged catalog: exit %d, want 1 and %q:\n%s", code, want, stderr)
		}
	}
	code, stdout, _ = runBlockd(t, "catalog", "check", "--data", data)
	if code != 1 || !strings.Contains(stdout, "DAMAGED: the file is empty") || !strings.Contains(stdout, "2 (128.0 KiB): a.vol b.vol") {
		t.Fatalf("check of a damaged catalog: exit %d\n%s", code, stdout)
	}
	code, stdout, stderr = runBlockd(t, "catalog", "recover", "--data", data)
	for _, want := range []string{"recovered 2 volumes (128.0 KiB)", "catalog.db.damaged-", "bless whatever", "linked volumes"} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("recover: exit %d, want %q:\n%s%s", code, want, stdout, stderr)
		}
	}
	if code, stdout, stderr := runBlockd(t, "catalog", "check", "--verify", "--data", data); code != 0 {
		t.Fatalf("check after recover: exit %d\n%s%s", code, stdout, stderr)
	}

	// A problem with a backing fails the check, naming the volume.
	os.Remove(filepath.Join(data, "volumes", "b.vol"))
	code, stdout, stderr = runBlockd(t, "catalog", "check", "--data", data)
	if code != 1 || !strings.Contains(stdout, "volume b: check \"b\": backing missing") || !strings.Contains(stderr, "problems found: 1") {
		t.Fatalf("check with a missing backing: exit %d\n%s%s", code, stdout, stderr)
	}
}

func TestCatalogLocked(t *testing.T) {
	data := t.TempDir()
	s, err := catalog.OpenStore(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, args := range [][]string{
		{"volume", "list", "--data", data},
		{"catalog", "backup", filepath.Join(t.TempDir(), "b.db"), "--data", data},
		{"catalog", "recover", "--data", data},
	} {
		code, _, stderr := runBlockd(t, args...)
		if code != 1 || !strings.Contains(stderr, "is locked by another process") || !strings.Contains(stderr, "Stop that blockd") ||
			!strings.Contains(stderr, "blockcat upload") {
			t.Errorf("%v: exit %d\n%s", args, code, stderr)
		}
	}
}

func TestCatalogUsage(t *testing.T) {
	if code, stdout, _ := runBlockd(t, "catalog", "-h"); code != 0 || !strings.Contains(stdout, "blockd catalog recover [--extent-size SIZE]") {
		t.Errorf("catalog -h: exit %d\n%s", code, stdout)
	}
	for _, sub := range []string{"check", "recover", "backup"} {
		code, _, stderr := runBlockd(t, "catalog", sub, "-h")
		if code != 0 || !strings.Contains(stderr, "usage: blockd catalog "+sub+" ") || !strings.Contains(stderr, "-data") {
			t.Errorf("catalog %s -h: exit %d\n%s", sub, code, stderr)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "want check, recover, migrate or backup"},
		{[]string{"fix"}, `unknown command "fix"`},
		{[]string{"check"}, "--data is required"},
		{[]string{"backup", "--data", "x"}, "usage: blockd catalog backup FILE --data DIR"},
		{[]string{"recover", "--data", "x", "--extent-size", "1000"}, "extent size 1000"},
	} {
		code, _, stderr := runBlockd(t, append([]string{"catalog"}, tc.args...)...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("catalog %v: exit %d, want %q:\n%s", tc.args, code, tc.want, stderr)
		}
	}
}

func TestLoadKeyModes(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "blockd.key")
	if err := cli.WriteKeyFile(key); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		os.Chmod(key, mode)
		if _, err := cli.LoadKey(key); err != nil {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
	for mode, want := range map[os.FileMode]string{
		0o644: "readable by others (mode 0644)", 0o640: "readable by others (mode 0640)",
		0o604: "readable by others (mode 0604)", 0o620: "writable by others (mode 0620)",
	} {
		os.Chmod(key, mode)
		_, err := cli.LoadKey(key)
		if err == nil || !strings.Contains(err.Error(), "key file "+key+" is "+want+": run 'chmod 600 "+key+"'") {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
	if _, err := cli.LoadKey(dir); err == nil || !strings.Contains(err.Error(), "is not a regular file (a directory)") {
		t.Errorf("directory: %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.LoadKey(fifo); err == nil || !strings.Contains(err.Error(), "a named pipe") {
		t.Errorf("fifo: %v", err)
	}
}

func TestPrintRecoverReport(t *testing.T) {
	old := &catalog.Volume{Name: "a", Size: 8192, ExtentSize: 4096, Generation: 3, CRCs: []uint32{1, 2}}
	rep := &catalog.RecoverReport{
		Catalog: "/d/catalog.db", Damage: errors.New("catalog: open /d/catalog.db: the file is empty (0 bytes): catalog corrupt"),
		MovedTo: "/d/catalog.db.damaged-20260101T000000Z", Bytes: 8192, Scanned: true,
		Recovered: []catalog.RecoveredVolume{{Volume: &catalog.Volume{Name: "a", Size: 8192, ExtentSize: 4096,
			Backing: "/d/volumes/a.vol", Owned: true, CRCs: []uint32{1, 5}, Generation: 99}, Old: old, Compared: true, Changed: []int{1}}},
		Skipped: []catalog.SkippedFile{{Path: "/d/volumes/.tmp-b-1", Reason: "temporary file"}},
		Linked:  []*catalog.Volume{{Name: "disk0", Backing: "/dev/my disk", ExtentSize: 64 << 10}},
		Missing: []*catalog.Volume{{Name: "gone"}},
	}
	var b bytes.Buffer
	printRecoverReport(&b, "/d", rep)
	for _, want := range []string{
		"old catalog: the file is empty (0 bytes): catalog corrupt\n",
		"old catalog kept as /d/catalog.db.damaged-20260101T000000Z\n",
		"recovered 1 volumes (8.0 KiB) into /d/catalog.db:\n",
		"  a: 8.0 KiB, 2 extents of 4.0 KiB, generation 99, /d/volumes/a.vol; DIFFERS from the old record (generation 3) in 1 extents: [1]\n",
		"  /d/volumes/.tmp-b-1: temporary file\n",
		"no file in volumes/ (removed before, or lost): gone\n",
		"bless whatever",
		"    blockd volume import disk0 '/dev/my disk' --link --extent-size 64KiB --data /d\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

// TestCatalogMigrate: a volume an older blockd wrote (no block CRCs) is
// migrated; a second run finds nothing to do.
func TestCatalogMigrate(t *testing.T) {
	data := t.TempDir()
	store, err := catalog.OpenStore(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	backing := filepath.Join(data, "old.bin")
	content := bytes.Repeat([]byte("blockxfer"), 10000)
	if err := os.WriteFile(backing, content, 0o600); err != nil {
		t.Fatal(err)
	}
	tab := crc32.MakeTable(crc32.Castagnoli)
	v := &catalog.Volume{Name: "old", Size: int64(len(content)), ExtentSize: 8192, Backing: backing}
	for off := 0; off < len(content); off += 8192 {
		v.CRCs = append(v.CRCs, crc32.Checksum(content[off:min(off+8192, len(content))], tab))
	}
	if err := store.Catalog().Put(v); err != nil { // no Blocks: as an older blockd stored it
		t.Fatal(err)
	}
	store.Close()
	code, stdout, stderr := runBlockd(t, "catalog", "migrate", "--data", data)
	if code != 0 || !strings.Contains(stdout, "volume old: 22 block CRCs of 4.0 KiB stored") {
		t.Fatalf("migrate: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, _ := runBlockd(t, "catalog", "migrate", "--data", data); code != 0 || !strings.Contains(stdout, "nothing to migrate") {
		t.Fatalf("second migrate: exit %d\n%s", code, stdout)
	}
}
