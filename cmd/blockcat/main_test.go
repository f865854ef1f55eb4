package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockxfer/blockxfer/ec"
)

// runBlockcat runs one blockcat command line in process.
func runBlockcat(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// writeManifest writes the manifest of a striped volume "vol" of size
// bytes on three servers nobody listens on.
func writeManifest(t *testing.T, size int64) string {
	t.Helper()
	m := &ec.Manifest{Name: "vol", Size: size, K: 2, M: 1, Unit: 4096, Placement: ec.PlacementRotate, Generation: 1,
		Servers: []ec.ManifestServer{{ID: "a", Addr: "127.0.0.1:1"}, {ID: "b", Addr: "127.0.0.1:2"}, {ID: "c", Addr: "127.0.0.1:3"}}}
	l := m.Layout()
	m.CRCs = make([]uint32, l.Stripes()*int64(l.Shards()))
	path := filepath.Join(t.TempDir(), "vol.manifest")
	if err := ec.WriteManifestFile(path, m); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPutArguments(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "v", "--ec", "2+1", "--manifest", "m"}, "usage: blockcat put FILE"},
		{[]string{"f", "--name", "v", "--ec", "2", "--manifest", "m", "--peers", "a"}, `--ec "2": want K+M`},
		{[]string{"f", "--name", "v", "--ec", "0+1", "--manifest", "m", "--peers", "a"}, `--ec "0+1": want K+M`},
		{[]string{"f", "--ec", "2+1", "--manifest", "m", "--peers", "a"}, "--name is required"},
		{[]string{"f", "--name", "v", "--ec", "2+1", "--peers", "a"}, "give exactly one of --etcd and --manifest"},
		{[]string{"f", "--name", "v", "--ec", "2+1", "--manifest", "m", "--etcd", "e"}, "give exactly one of --etcd and --manifest"},
		{[]string{"f", "--name", "v", "--ec", "2+1", "--manifest", "m"}, "--peers is required without --etcd"},
	} {
		code, _, stderr := runBlockcat(t, append([]string{"put"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("put %v: exit %d, want 2 and %q:\n%s", tc.args, code, tc.want, stderr)
		}
	}
	// A missing source fails before anything is dialled.
	missing := filepath.Join(t.TempDir(), "missing")
	code, _, stderr := runBlockcat(t, "put", missing, "--name", "v", "--ec", "2+1", "--peers", "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3",
		"--manifest", filepath.Join(t.TempDir(), "m"))
	if code != 1 || !strings.Contains(stderr, "no such file") {
		t.Errorf("put of a missing file: exit %d\n%s", code, stderr)
	}
}

func TestStripedGetArguments(t *testing.T) {
	man := writeManifest(t, 5*4096+100)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--manifest", man, "--etcd", "192.0.2.1:2379", "vol"}, 2, "give exactly one of --manifest and --etcd"},
		{[]string{"--etcd", "192.0.2.1:2379"}, 2, "--etcd needs a VOLUME"},
		{[]string{"--manifest", man, "--window", "0"}, 2, "--window must be positive"},
		{[]string{"--manifest", man, "vol", "extra"}, 2, "usage: blockcat get (--manifest FILE [VOLUME] | --etcd E VOLUME)"},
		{[]string{"--manifest", man, "other"}, 1, `manifest ` + man + ` is for volume "vol", not "other"`},
		{[]string{"--manifest", filepath.Join(t.TempDir(), "none")}, 1, "ec: read manifest"},
		{[]string{"--manifest", man, "--offset", "20580"}, 1, "offset 20580 is past the end of vol (20580 bytes)"},
		// --verify is accepted, as the README writes it: striped reads
		// always check.
		{[]string{"--manifest", man, "vol", "--verify", "--offset", "20580"}, 1, "offset 20580 is past the end"},
		{[]string{"--manifest", man, "--offset", "20000", "--length", "1000"}, 1, "range [20000,+1000) is past the end of vol (20580 bytes)"},
	} {
		code, _, stderr := runBlockcat(t, append([]string{"get"}, tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("get %v: exit %d, want %d and %q:\n%s", tc.args, code, tc.code, tc.want, stderr)
		}
	}
}

func TestVolumeRange(t *testing.T) {
	for _, tc := range []struct {
		size, off, length, want int64
		err                     string
	}{
		{100, 0, 0, 100, ""},
		{100, 40, 0, 60, ""},
		{100, 40, 10, 10, ""},
		{100, 101, 0, 0, "offset 101 is past the end of v (100 bytes)"},
		{100, 100, 0, 0, "nothing to fetch: v is empty past offset 100"},
	} {
		n, err := volumeRange("v", tc.size, tc.off, tc.length)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%+v: %v, want %q", tc, err, tc.err)
			}
		} else if err != nil || n != tc.want {
			t.Errorf("%+v: %d, %v", tc, n, err)
		}
	}
}

func TestParseEC(t *testing.T) {
	if k, m, err := parseEC("4+2"); err != nil || k != 4 || m != 2 {
		t.Fatalf("4+2: %d %d %v", k, m, err)
	}
	for _, bad := range []string{"", "4", "4+", "+2", "4+0", "a+b", "4-2"} {
		if _, _, err := parseEC(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
