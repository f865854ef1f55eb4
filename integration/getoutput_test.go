package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// partialOf is where blockcat get -o file keeps the bytes of a get that
// did not finish, and its record.
func partialOf(file string) (partial, record string) {
	p := filepath.Join(filepath.Dir(file), "."+filepath.Base(file)+".blockxfer-partial")
	return p, p + ".json"
}

// precious writes a file with known contents for a get to replace or not.
func precious(t *testing.T, dir string) (path string, contents []byte) {
	t.Helper()
	path = filepath.Join(dir, "out")
	contents = []byte("precious contents that only a complete get may replace\n")
	if err := os.WriteFile(path, contents, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, contents
}

// dirHolds checks that dir holds exactly the files named.
func dirHolds(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(names, " ") {
		t.Fatalf("%s holds %q, want %q", dir, got, names)
	}
}

func sameFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(want) {
		t.Fatalf("%s: %d bytes, sha256 %x; want %d bytes, sha256 %x", path, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

// TestGetFailureLeavesFile: a get that fails leaves an existing -o FILE
// byte for byte as it was, and leaves no partial when it fetched nothing.
func TestGetFailureLeavesFile(t *testing.T) {
	data, env := newData(t, map[string]string{"vol": "2MiB"})
	s := startServer(t, data, env)
	dir := t.TempDir()
	out, old := precious(t, dir)
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		// The server refuses the read after FILE's partial was opened
		// (one read, so nothing was fetched).
		{"out of range", []string{"vol", "--offset", "1MiB", "--length", "2MiB", "--window", "2MiB"}, "out-of-range"},
		{"missing volume", []string{"nope"}, `no volume "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCmd(t, env, "blockcat", append([]string{"get", s.addr, "-o", out}, tc.args...)...)
			if r.code != 1 || !strings.Contains(r.stderr, tc.msg) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", r.code, r.stderr, tc.msg)
			}
			if tc.name == "out of range" && !strings.HasSuffix(strings.TrimSpace(r.stderr), "; "+out+" left unchanged") {
				t.Fatalf("stderr does not say the file was left alone: %q", r.stderr)
			}
			sameFile(t, out, old)
			dirHolds(t, dir, "out")
		})
	}
	// A FILE that did not exist is not created.
	fresh := filepath.Join(dir, "fresh")
	r := runCmd(t, env, "blockcat", "get", s.addr, "vol", "--offset", "1MiB", "--length", "2MiB", "--window", "2MiB", "-o", fresh)
	if r.code != 1 || !strings.Contains(r.stderr, fresh+" not created") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	dirHolds(t, dir, "out")
}

// TestGetReplacesFileAtomically: a get that succeeds replaces an existing
// FILE with a new file (renamed over it), keeping its permissions.
func TestGetReplacesFileAtomically(t *testing.T) {
	data, env := newData(t, map[string]string{"vol": "3MiB"})
	s := startServer(t, data, env)
	dir := t.TempDir()
	out, _ := precious(t, dir)
	before, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	text := mustRun(t, env, "blockcat", "get", s.addr, "vol", "--window", "1MiB", "-o", out)
	if !strings.HasPrefix(text, "fetched 3.0 MiB of vol into "+out+" in ") {
		t.Fatalf("summary: %q", text)
	}
	sameFile(t, out, s.volumeBytes(t, "vol"))
	after, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(before, after) {
		t.Fatal("FILE was rewritten in place, not replaced")
	}
	if after.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want the replaced file's 0600", after.Mode())
	}
	dirHolds(t, dir, "out")
}

// keptRE matches what an interrupted get says it kept.
var keptRE = regexp.MustCompile(`left unchanged; the (\d+) bytes fetched so far are kept in (\S+) \(resume with --continue\)`)

// interruptGet starts a rate-limited get of vol into out, waits until its
// partial file holds at least a MiB, stops it with sig and checks that it
// stopped cleanly: exit status 128+sig, out unchanged, the bytes it kept
// named. It returns how many bytes it kept.
func interruptGet(t *testing.T, s *server, env []string, vol, out string, sig syscall.Signal, want string) int64 {
	t.Helper()
	old, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	partial, _ := partialOf(out)
	cmd := exec.Command(filepath.Join(bin, "blockcat"), "get", s.addr, vol, "-o", out,
		"--rate", "4MiB", "--window", "512KiB", "--depth", "2")
	cmd.Env = append(os.Environ(), env...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	// Poll, bounded, for the partial to reach 2 MiB: windows land at
	// their place, paced, so the first MiB is whole by then, and at
	// 4 MiB/s the get is far from done.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(time.Minute)
	for {
		if st, err := os.Stat(partial); err == nil && st.Size() >= 2<<20 {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("get ended (%v) before it was interrupted:\n%s", err, stderr.String())
		case <-deadline:
			t.Fatalf("%s did not reach 1 MiB:\n%s", partial, stderr.String())
		case <-tick.C:
		}
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(time.Minute):
		t.Fatalf("get did not stop after %v:\n%s", sig, stderr.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 128+int(sig) {
		t.Fatalf("exit %d after %v, want %d:\n%s", code, sig, 128+int(sig), stderr.String())
	}
	msg := stderr.String()
	m := keptRE.FindStringSubmatch(msg)
	if !strings.Contains(msg, "blockcat: "+want+"; "+out+" left unchanged") || m == nil || m[2] != partial {
		t.Fatalf("stderr after %v: %q", sig, msg)
	}
	kept, _ := strconv.ParseInt(m[1], 10, 64)
	if st, err := os.Stat(partial); err != nil || st.Size() != kept || kept < 1<<20 {
		t.Fatalf("kept %d bytes; %s: %v %v", kept, partial, st, err)
	}
	sameFile(t, out, old)
	return kept
}

// getJSON is what blockcat get --json prints, in part.
type getJSON struct {
	Bytes    int64 `json:"fetched_bytes"`
	Resumed  int64 `json:"resumed_bytes"`
	Verified bool  `json:"verified"`
}

// TestGetInterruptAndContinue: Ctrl-C stops a get cleanly and keeps what it
// fetched; --continue fetches only the rest.
func TestGetInterruptAndContinue(t *testing.T) {
	data, env := newData(t, map[string]string{"big": "32MiB"})
	s := startServer(t, data, env)
	want := s.volumeBytes(t, "big")
	dir := t.TempDir()
	out, _ := precious(t, dir)
	kept := interruptGet(t, s, env, "big", out, syscall.SIGINT, "interrupted (SIGINT)")
	if kept >= int64(len(want)) {
		t.Fatalf("kept %d bytes of %d", kept, len(want))
	}
	var res getJSON
	js := mustRun(t, env, "blockcat", "get", s.addr, "big", "-o", out, "--continue", "--verify", "--json")
	if err := json.Unmarshal([]byte(js), &res); err != nil {
		t.Fatal(err)
	}
	if res.Resumed != kept || res.Bytes != int64(len(want))-kept || !res.Verified {
		t.Fatalf("continue after %d bytes: %s", kept, js)
	}
	sameFile(t, out, want)
	dirHolds(t, dir, "out")
}

// TestGetContinueRefusesReplacedVolume: the bytes kept from a volume that
// was replaced since are never continued.
func TestGetContinueRefusesReplacedVolume(t *testing.T) {
	data, env := newData(t, map[string]string{"big": "32MiB"})
	s := startServer(t, data, env)
	dir := t.TempDir()
	out, old := precious(t, dir)
	partial, record := partialOf(out)
	kept := interruptGet(t, s, env, "big", out, syscall.SIGTERM, "terminated (SIGTERM)")

	// Replace the volume: same name and size, other bytes.
	src := filepath.Join(t.TempDir(), "src")
	payload := make([]byte, 32<<20)
	rand.NewChaCha8([32]byte{9}).Read(payload)
	if err := os.WriteFile(src, payload, 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, env, "blockcat", "upload", s.addr, "big", src, "--replace")

	r := runCmd(t, env, "blockcat", "get", s.addr, "big", "-o", out, "--continue")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot continue: "+partial+" is a partial of big generation") ||
		!strings.Contains(r.stderr, "the volume was replaced since; remove "+partial+", or run without --continue, to start over") {
		t.Fatalf("continue of a replaced volume: exit %d, %q", r.code, r.stderr)
	}
	sameFile(t, out, old)
	if st, err := os.Stat(partial); err != nil || st.Size() != kept {
		t.Fatalf("the refused continue changed %s: %v %v", partial, st, err)
	}
	if _, err := os.Stat(record); err != nil {
		t.Fatal(err)
	}

	// Once the partial is removed, --continue starts over.
	if err := os.Remove(partial); err != nil {
		t.Fatal(err)
	}
	r = runCmd(t, env, "blockcat", "get", s.addr, "big", "-o", out, "--continue")
	if r.code != 0 || !strings.Contains(r.stderr, "no partial of "+out+" to continue") {
		t.Fatalf("continue after removing the partial: exit %d, %q", r.code, r.stderr)
	}
	sameFile(t, out, payload)
	dirHolds(t, dir, "out")
	if !bytes.Contains([]byte(r.stdout), []byte("into "+out)) {
		t.Fatalf("summary: %q", r.stdout)
	}
}

// TestStripedGetOutput: a striped get shares the output rules: success
// replaces FILE, failure leaves it as it was.
func TestStripedGetOutput(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "blockd.key")
	mustRun(t, nil, "blockd", "keygen", "-o", key)
	env := []string{"BLOCKXFER_KEY_FILE=" + key}
	var servers []*server
	var peers []string
	for range 3 {
		s := startServer(t, t.TempDir(), env, "--key-file", key)
		servers = append(servers, s)
		peers = append(peers, s.addr)
	}
	src := filepath.Join(dir, "src")
	payload := make([]byte, 2<<20+12345)
	rand.NewChaCha8([32]byte{5}).Read(payload)
	if err := os.WriteFile(src, payload, 0o644); err != nil {
		t.Fatal(err)
	}
	man := filepath.Join(dir, "vol.manifest")
	mustRun(t, env, "blockcat", "put", src, "--name", "vol", "--ec", "2+1", "--unit", "64KiB",
		"--peers", strings.Join(peers, ","), "--manifest", man)

	outDir := t.TempDir()
	out, old := precious(t, outDir)
	text := mustRun(t, env, "blockcat", "get", "--manifest", man, "-o", out)
	if !strings.Contains(text, " of vol into "+out+" in ") {
		t.Fatalf("summary: %q", text)
	}
	sameFile(t, out, payload)
	dirHolds(t, outDir, "out")

	// Two of three servers down: no stripe can be read.
	if err := os.WriteFile(out, old, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, s := range servers[1:] {
		s.cmd.Process.Kill()
		err := <-s.exited
		s.exited <- err
	}
	r := runCmd(t, env, "blockcat", "get", "--manifest", man, "-o", out, "--shard-timeout", "5s")
	if r.code != 1 || !strings.Contains(r.stderr, out+" left unchanged") {
		t.Fatalf("get with two servers down: exit %d, %q", r.code, r.stderr)
	}
	sameFile(t, out, old)
	dirHolds(t, outDir, "out")
}
