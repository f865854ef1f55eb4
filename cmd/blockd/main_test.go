package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/ec"
)

// runBlockd runs one blockd command line in process.
func runBlockd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestServeHelp: serve has one flag set, so -h lists the cluster flags too,
// and it exits 0 without opening anything or dialling etcd (192.0.2.1 is
// a documentation address nobody answers on).
func TestServeHelp(t *testing.T) {
	start := time.Now()
	code, _, stderr := runBlockd(t, "serve", "--etcd", "192.0.2.1:2379", "--server-id", "s1", "-h")
	if code != 0 {
		t.Fatalf("serve -h: exit %d\n%s", code, stderr)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("serve -h took %v", d)
	}
	for _, flag := range []string{"--data", "--listen", "--ready-file", "--devmem", "--etcd", "--etcd-ttl", "--server-id", "--advertise"} {
		if !strings.Contains(stderr, "\n  "+flag+" ") {
			t.Errorf("serve -h does not list %s:\n%s", flag, stderr)
		}
	}
}

func TestServeUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "127.0.0.1:0"}, "--data is required"},
		{[]string{"--data", t.TempDir(), "--server-id", "s1"}, "--server-id and --advertise need --etcd"},
		{[]string{"--data", t.TempDir(), "--advertise", "10.0.0.1:7070"}, "--server-id and --advertise need --etcd"},
		{[]string{"--data", t.TempDir(), "--etcd", "192.0.2.1:2379", "--etcd-ttl", "500ms"}, `--etcd-ttl "500ms": want a duration of at least 1s`},
		{[]string{"--data", t.TempDir(), "--etcd", "192.0.2.1:2379", "--devmem", "sometimes"}, "sometimes"},
		{[]string{"--data", t.TempDir(), "--etcd", "192.0.2.1:2379", "--log-level", "loud"}, `bad log level "loud"`},
		{[]string{"--data", t.TempDir(), "stray"}, "usage: blockd serve"},
	} {
		code, _, stderr := runBlockd(t, append([]string{"serve"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("serve %v: exit %d, want 2 and %q:\n%s", tc.args, code, tc.want, stderr)
		}
	}
}

func TestVolumeSubcommands(t *testing.T) {
	data := t.TempDir()
	mustRun := func(want string, args ...string) string {
		t.Helper()
		code, stdout, stderr := runBlockd(t, append([]string{"volume"}, args...)...)
		if code != 0 || !strings.Contains(stdout, want) {
			t.Fatalf("volume %v: exit %d, want %q in:\n%s%s", args, code, want, stdout, stderr)
		}
		return stdout
	}
	mustRun("created vol: 64.0 KiB in 1 extents of 64.0 KiB", "create", "vol", "--size", "64KiB", "--extent-size", "64KiB", "--fill", "random", "--data", data)
	mustRun("vol ", "list", "--data", data)
	mustRun(`"name": "vol"`, "list", "--json", "--data", data)
	mustRun("all 1 extents match their crc32c", "inspect", "vol", "--verify", "--data", data)
	mustRun(`"verified": true`, "inspect", "vol", "--verify", "--json", "--data", data)
	mustRun("removed vol", "rm", "vol", "--data", data)
	if out := mustRun("NAME", "list", "--data", data); strings.Contains(out, "vol") {
		t.Fatalf("list after rm:\n%s", out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "volume: want create, import, list, inspect or rm"},
		{[]string{"grow", "vol"}, `volume: unknown command "grow"`},
		{[]string{"create", "vol", "--size", "4KiB"}, "--data is required"},
		{[]string{"create", "vol", "--data", data}, "--size is required"},
		{[]string{"create", "vol", "--size", "4KiB", "--fill", "ones", "--data", data}, "ones"},
		{[]string{"import", "vol", "--data", data}, "usage: blockd volume import NAME SRC"},
		{[]string{"rm", "--data", data}, "usage: blockd volume rm NAME"},
	} {
		code, _, stderr := runBlockd(t, append([]string{"volume"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("volume %v: exit %d, want 2 and %q:\n%s", tc.args, code, tc.want, stderr)
		}
	}
	if code, _, stderr := runBlockd(t, "volume", "inspect", "nope", "--data", data); code != 1 {
		t.Errorf("inspect of a missing volume: exit %d\n%s", code, stderr)
	}
	if code, _, _ := runBlockd(t, "volume", "list", "-h"); code != 0 {
		t.Errorf("volume list -h: exit %d", code)
	}
}

func TestScrubArguments(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := cli.WriteKeyFile(key); err != nil {
		t.Fatal(err)
	}
	man := filepath.Join(dir, "manifest")
	m := &ec.Manifest{Name: "vol", Size: 3 * 4096, K: 2, M: 1, Unit: 4096, Placement: ec.PlacementRotate, Generation: 1,
		Servers: []ec.ManifestServer{{ID: "a", Addr: "127.0.0.1:1"}, {ID: "b", Addr: "127.0.0.1:2"}, {ID: "c", Addr: "127.0.0.1:3"}}}
	l := m.Layout()
	m.CRCs = make([]uint32, l.Stripes()*int64(l.Shards()))
	if err := ec.WriteManifestFile(man, m); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "give exactly one of --manifest and --etcd"},
		{[]string{"--manifest", man, "--etcd", "192.0.2.1:2379", "vol"}, 2, "give exactly one of --manifest and --etcd"},
		{[]string{"--etcd", "192.0.2.1:2379"}, 2, "usage: blockd scrub (--manifest FILE | --etcd E VOLUME)"},
		{[]string{"--manifest", man, "a", "b"}, 2, "usage: blockd scrub"},
		{[]string{"--manifest", man, "other", "--key-file", key}, 1, `manifest ` + man + ` is for volume "vol", not "other"`},
	} {
		code, _, stderr := runBlockd(t, append([]string{"scrub"}, tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("scrub %v: exit %d, want %d and %q:\n%s", tc.args, code, tc.code, tc.want, stderr)
		}
	}
}

func TestPrintScrubReport(t *testing.T) {
	lost := ec.ManifestServer{ID: "s2", Addr: "10.0.0.2:7070"}
	rep := &ec.ScrubReport{Volume: "vol", Checked: 12, Generation: 4,
		Bad:     []ec.ShardFault{{Stripe: 3, Shard: 1, Server: "s2", Addr: "10.0.0.2:7070", Reason: ec.ReasonDown}},
		Repairs: []ec.Repair{{Server: ec.ManifestServer{ID: "s9", Addr: "10.0.0.9:7070", Generation: 1}, Replaced: &lost, Rebuilt: 1}}}
	var b bytes.Buffer
	if err := printScrubReport(&b, rep, ec.ManifestSource{File: "m"}, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"scrubbed vol: 12 shards checked, 1 bad, 1 shard volumes rebuilt, generation 4\n",
		"  bad: stripe 3 ",
		"  rebuilt 1 shards onto s9 (10.0.0.9:7070), shard volume generation 1, in place of lost s2 (10.0.0.2:7070)\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
