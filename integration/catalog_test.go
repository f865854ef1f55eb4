package integration

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// damageCatalog damages the catalog.db at path the way catalog's
// TestDamagedCatalog does: "empty", "truncated" (to half its pages in use), "zeroed"
// (every page after the two meta pages and the freelist) or "random"
// (random bytes of the same size).
func damageCatalog(t *testing.T, path, kind string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	switch kind {
	case "empty":
		b = nil
	case "truncated":
		// Half the bytes its pages span: bbolt grows the file ahead of its
		// pages, so a file cut only in that unused tail is whole.
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		var used int64
		db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil })
		db.Close()
		b = b[:used/2]
	case "zeroed":
		clear(b[3*os.Getpagesize():])
	case "random":
		rand.NewChaCha8([32]byte{7}).Read(b)
	default:
		t.Fatalf("unknown damage %q", kind)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// runWithin runs a binary that must exit within d, and fails the test if
// it does not (a blockd serve that started serving, say).
func runWithin(t *testing.T, d time.Duration, env []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, name), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %v did not exit within %v\n%s", name, args, d, errb.String())
	}
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return r
}

// checkDamageReported checks that a command failed on the damaged catalog
// of data the way a user should see it: an exit status of 1, no panic,
// and a message naming the file and the recovery commands.
func checkDamageReported(t *testing.T, what string, r result, data string) {
	t.Helper()
	if r.code != 1 {
		t.Errorf("%s: exit %d, want 1\n%s", what, r.code, r.stderr)
	}
	// A Go panic or fault prints "panic: ..." or "fatal error: ..." at the
	// start of a line and a goroutine dump. (The error text itself may
	// quote what bbolt panicked with, after "blockd: ".)
	for _, line := range strings.Split(r.stderr, "\n") {
		for _, bad := range []string{"panic:", "fatal error:", "goroutine ", "[signal "} {
			if strings.HasPrefix(line, bad) {
				t.Errorf("%s: a panic or fault in the output:\n%s", what, r.stderr)
			}
		}
	}
	if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n != 0 {
		t.Errorf("%s: %d lines of output, want one:\n%s", what, n+1, r.stderr)
	}
	for _, want := range []string{
		"catalog " + filepath.Join(data, "catalog.db") + " is damaged: ",
		"'blockd catalog check --data " + data + "'",
		"'blockd catalog recover --data " + data + "' to rebuild it from volumes/",
		"restore a backup",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("%s: no %q in:\n%s", what, want, r.stderr)
		}
	}
}

// TestDamagedCatalogRecovery: every blockd command refuses a damaged
// catalog with the same message and leaves it as it was; `blockd serve`
// does not start a fresh catalog in its place; `blockd catalog check`
// says it is damaged; `blockd catalog recover` rebuilds it from volumes/,
// keeping the damaged file, and the rebuilt catalog serves every volume
// byte-exact.
func TestDamagedCatalogRecovery(t *testing.T) {
	for _, kind := range []string{"empty", "truncated", "zeroed", "random"} {
		t.Run(kind, func(t *testing.T) {
			data, env := newData(t, map[string]string{"big": "6MiB", "small": "100KiB"})
			dbPath := filepath.Join(data, "catalog.db")
			damageCatalog(t, dbPath, kind)
			damaged, err := os.ReadFile(dbPath)
			if err != nil {
				t.Fatal(err)
			}
			unchanged := func(after string) {
				t.Helper()
				if b, err := os.ReadFile(dbPath); err != nil || !bytes.Equal(b, damaged) {
					t.Fatalf("after %s the damaged catalog changed (%d bytes, was %d; %v)", after, len(b), len(damaged), err)
				}
			}

			checkDamageReported(t, "volume list", runWithin(t, time.Minute, nil, "blockd", "volume", "list", "--data", data), data)
			unchanged("volume list")
			checkDamageReported(t, "volume inspect", runWithin(t, time.Minute, nil, "blockd", "volume", "inspect", "big", "--data", data), data)
			unchanged("volume inspect")
			checkDamageReported(t, "volume create", runWithin(t, time.Minute, nil, "blockd", "volume", "create", "new", "--size", "4KiB", "--data", data), data)
			unchanged("volume create")
			checkDamageReported(t, "serve", runWithin(t, time.Minute, env, "blockd", "serve", "--data", data, "--listen", "127.0.0.1:0"), data)
			unchanged("serve")

			r := runWithin(t, time.Minute, nil, "blockd", "catalog", "check", "--data", data)
			if r.code != 1 || !strings.Contains(r.stdout, "catalog "+dbPath+": DAMAGED") ||
				!strings.Contains(r.stdout, "big.vol small.vol") ||
				!strings.Contains(r.stderr, "'blockd catalog recover --data "+data+"'") {
				t.Fatalf("check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			unchanged("catalog check")

			r = runWithin(t, time.Minute, nil, "blockd", "catalog", "recover", "--data", data)
			if r.code != 0 {
				t.Fatalf("recover: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			for _, want := range []string{"recovered 2 volumes (6.1 MiB)", "  big: 6.0 MiB", "  small: 100.0 KiB",
				"old catalog kept as " + dbPath + ".damaged-", "bless whatever", "linked volumes"} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("recover report lacks %q:\n%s", want, r.stdout)
				}
			}
			kept, _ := filepath.Glob(dbPath + ".damaged-*")
			if len(kept) != 1 {
				t.Fatalf("damaged catalogs kept: %v", kept)
			}
			if b, err := os.ReadFile(kept[0]); err != nil || !bytes.Equal(b, damaged) {
				t.Fatalf("the damaged catalog was not kept as it was: %v", err)
			}
			if r := runWithin(t, time.Minute, nil, "blockd", "catalog", "check", "--verify", "--data", data); r.code != 0 || !strings.Contains(r.stdout, "healthy") {
				t.Fatalf("check after recover: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}

			s := startServer(t, data, env)
			for _, name := range []string{"big", "small"} {
				out := filepath.Join(t.TempDir(), name)
				mustRun(t, env, "blockcat", "get", s.addr, name, "--verify", "-o", out)
				if got, _ := os.ReadFile(out); !bytes.Equal(got, s.volumeBytes(t, name)) {
					t.Fatalf("%s fetched after recovery differs from its file", name)
				}
			}
		})
	}
}

// TestCatalogRecoverMissing: a lost catalog.db is rebuilt too, and recover
// refuses a healthy one.
func TestCatalogRecoverMissing(t *testing.T) {
	data, _ := newData(t, map[string]string{"vol": "1MiB"})
	if r := runCmd(t, nil, "blockd", "catalog", "recover", "--data", data); r.code != 1 || !strings.Contains(r.stderr, "is healthy: nothing to recover") {
		t.Fatalf("recover of a healthy catalog: exit %d\n%s", r.code, r.stderr)
	}
	if err := os.Remove(filepath.Join(data, "catalog.db")); err != nil {
		t.Fatal(err)
	}
	r := runCmd(t, nil, "blockd", "catalog", "check", "--data", data)
	if r.code != 1 || !strings.Contains(r.stdout, "MISSING") || !strings.Contains(r.stdout, "vol.vol") {
		t.Fatalf("check of a missing catalog: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	out := mustRun(t, nil, "blockd", "catalog", "recover", "--data", data)
	if !strings.Contains(out, "old catalog: none") || !strings.Contains(out, "recovered 1 volumes (1.0 MiB)") {
		t.Fatalf("recover:\n%s", out)
	}
	if out := mustRun(t, nil, "blockd", "volume", "inspect", "vol", "--verify", "--data", data); !strings.Contains(out, "all 1 extents match") {
		t.Fatalf("inspect after recover:\n%s", out)
	}
}

// TestCatalogBackup: a backup placed as the catalog.db of a copy of the data
// directory lists the same volumes; while blockd serve runs, backup and
// recover are refused with the fix and the server's pid.
func TestCatalogBackup(t *testing.T) {
	data, env := newData(t, map[string]string{"a": "1MiB", "b": "300KiB", "c": "5MiB"})
	backup := filepath.Join(t.TempDir(), "catalog.backup")
	if out := mustRun(t, nil, "blockd", "catalog", "backup", backup, "--data", data); !strings.Contains(out, "(3 volumes,") {
		t.Fatalf("backup: %s", out)
	}
	if r := runCmd(t, nil, "blockd", "catalog", "backup", backup, "--data", data); r.code != 1 || !strings.Contains(r.stderr, "file already exists") {
		t.Fatalf("backup over an existing file: exit %d\n%s", r.code, r.stderr)
	}
	cp := t.TempDir()
	if err := os.Mkdir(filepath.Join(cp, "volumes"), 0o750); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cp, "catalog.db"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	// The same volumes; data_dir names each directory.
	want := strings.Replace(mustRun(t, nil, "blockd", "volume", "list", "--json", "--data", data), data, cp, 1)
	if got := mustRun(t, nil, "blockd", "volume", "list", "--json", "--data", cp); got != want {
		t.Fatalf("the backup lists\n%s\nthe catalog\n%s", got, want)
	}

	s := startServer(t, data, env)
	pid := "process " + strconv.Itoa(s.cmd.Process.Pid) + " (blockd)"
	for _, args := range [][]string{
		{"catalog", "backup", filepath.Join(t.TempDir(), "b"), "--data", data},
		{"catalog", "recover", "--force", "--data", data},
		{"catalog", "check", "--data", data},
		{"volume", "create", "d", "--size", "4KiB", "--data", data},
	} {
		r := runWithin(t, time.Minute, nil, "blockd", args...)
		if r.code != 1 || !strings.Contains(r.stderr, "is locked by "+pid) || !strings.Contains(r.stderr, "Stop that blockd") ||
			!strings.Contains(r.stderr, "blockcat upload") {
			t.Errorf("%v while serving: exit %d\n%s", args, r.code, r.stderr)
		}
	}
	if ents, _ := filepath.Glob(filepath.Join(data, "catalog.db.*")); len(ents) != 0 {
		t.Fatalf("recover while serving left %v", ents)
	}
}

// TestKeyFileModes: both binaries refuse a key file others may read, with
// the chmod that fixes it, and accept modes 0600 and 0400.
func TestKeyFileModes(t *testing.T) {
	data, env := newData(t, map[string]string{"vol": "64KiB"})
	key := filepath.Join(data, "blockd.key")
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		if err := os.Chmod(key, mode); err != nil {
			t.Fatal(err)
		}
		want := "key file " + key + " is readable by others (mode " + "0" + strconv.FormatUint(uint64(mode), 8) + "): run 'chmod 600 " + key + "'"
		r := runWithin(t, time.Minute, nil, "blockd", "serve", "--data", data, "--listen", "127.0.0.1:0", "--key-file", key)
		if r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("blockd serve, key mode %04o: exit %d, want %q:\n%s", mode, r.code, want, r.stderr)
		}
		r = runWithin(t, time.Minute, env, "blockcat", "ls", "127.0.0.1:1")
		if r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("blockcat ls, key mode %04o: exit %d, want %q:\n%s", mode, r.code, want, r.stderr)
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		if err := os.Chmod(key, mode); err != nil {
			t.Fatal(err)
		}
		s := startServer(t, data, env, "--key-file", key)
		if out := mustRun(t, env, "blockcat", "ls", s.addr); !strings.Contains(out, "vol") {
			t.Errorf("key mode %04o: ls %q", mode, out)
		}
		s.cmd.Process.Kill()
		<-s.exited
		s.exited <- nil
	}
}
