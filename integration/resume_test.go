package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bgCmd is a blockcat command running in the background.
type bgCmd struct {
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	exited         chan error
}

// startBlockcat starts blockcat with args inside namespace ns ("" for this
// one). It is killed when the test ends.
func startBlockcat(t *testing.T, ns string, env []string, args ...string) *bgCmd {
	t.Helper()
	b := &bgCmd{exited: make(chan error, 1)}
	b.cmd = inNetns(ns, filepath.Join(bin, "blockcat"), args...)
	b.cmd.Env = append(os.Environ(), env...)
	b.cmd.Stdout, b.cmd.Stderr = &b.stdout, &b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.exited <- b.cmd.Wait() }()
	t.Cleanup(func() { b.cmd.Process.Kill() })
	return b
}

// wait waits for the command to exit and returns its exit status.
func (b *bgCmd) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-b.exited:
	case <-time.After(2 * time.Minute):
		t.Fatalf("blockcat did not end:\n%s", b.stderr.String())
	}
	return b.cmd.ProcessState.ExitCode()
}

// waitPartial waits, bounded, until the partial file of out holds at least
// n bytes, failing the test if the get ends first.
func (b *bgCmd) waitPartial(t *testing.T, out string, n int64) {
	t.Helper()
	partial, _ := partialOf(out)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(time.Minute)
	for {
		if st, err := os.Stat(partial); err == nil && st.Size() >= n {
			return
		}
		select {
		case err := <-b.exited:
			b.exited <- err
			t.Fatalf("get ended (%v) before %s reached %d bytes:\n%s", err, partial, n, b.stderr.String())
		case <-deadline:
			t.Fatalf("%s did not reach %d bytes:\n%s", partial, n, b.stderr.String())
		case <-tick.C:
		}
	}
}

// resumedGet is what blockcat get --json says of a get that reconnected.
type resumedGet struct {
	Bytes      int64    `json:"fetched_bytes"`
	Verified   bool     `json:"verified"`
	Reconnects int      `json:"reconnects"`
	Causes     []string `json:"reconnect_causes"`
}

// finishGet waits for a get --json to succeed and returns what it printed.
func (b *bgCmd) finishGet(t *testing.T) resumedGet {
	t.Helper()
	if code := b.wait(t); code != 0 {
		t.Fatalf("get exited %d:\n%s", code, b.stderr.String())
	}
	var r resumedGet
	if err := json.Unmarshal([]byte(b.stdout.String()), &r); err != nil {
		t.Fatalf("get --json: %v\n%s", err, b.stdout.String())
	}
	return r
}

// stopServer ends blockd with sig and waits for it to exit.
func stopServer(t *testing.T, s *server, sig syscall.Signal) {
	t.Helper()
	s.cmd.Process.Signal(sig)
	select {
	case err := <-s.exited:
		s.exited <- err
	case <-time.After(time.Minute):
		t.Fatalf("blockd did not exit after %v", sig)
	}
}

// TestGetSurvivesKill: blockd killed outright in the middle of a fetch and
// started again on the same address and data directory: the get
// reconnects once, fetches the rest and ends byte-exact.
func TestGetSurvivesKill(t *testing.T) {
	data, env := newData(t, map[string]string{"big": "512MiB"})
	s := startServer(t, data, env)
	want := s.volumeBytes(t, "big")
	out := filepath.Join(t.TempDir(), "out")
	get := startBlockcat(t, "", env, "get", s.addr, "big", "-o", out, "--rate", "256MiB", "--json")
	get.waitPartial(t, out, 96<<20)
	stopServer(t, s, syscall.SIGKILL)
	restarted := time.Now()
	startServerIn(t, "", data, env, s.addr)
	if d := time.Since(restarted); d > 2*time.Second {
		t.Logf("blockd took %v to start again", d)
	}
	r := get.finishGet(t)
	sameFile(t, out, want)
	if r.Reconnects != 1 || len(r.Causes) != 1 || !r.Verified {
		t.Fatalf("get across a kill: %d reconnects %q, verified %v; want 1, verified", r.Reconnects, r.Causes, r.Verified)
	}
	if r.Bytes != int64(len(want)) {
		t.Errorf("fetched_bytes %d, want %d", r.Bytes, len(want))
	}
}

// TestGetRidesThroughRestart: blockd stopped with SIGTERM under a fetch of
// several windows drains (the reads in flight end, new ones are refused),
// and started again: the get reconnects and completes byte-exact.
func TestGetRidesThroughRestart(t *testing.T) {
	data, env := newData(t, map[string]string{"big": "128MiB"})
	s := startServer(t, data, env)
	want := s.volumeBytes(t, "big")
	out := filepath.Join(t.TempDir(), "out")
	get := startBlockcat(t, "", env, "get", s.addr, "big", "-o", out, "--rate", "64MiB", "--window", "8MiB", "--json")
	get.waitPartial(t, out, 24<<20)
	stopServer(t, s, syscall.SIGTERM)
	startServerIn(t, "", data, env, s.addr)
	r := get.finishGet(t)
	sameFile(t, out, want)
	if r.Reconnects < 1 || !r.Verified {
		t.Fatalf("get across a restart: %d reconnects %q, verified %v", r.Reconnects, r.Causes, r.Verified)
	}
}

// TestGetRefusesReplacedVolume: a volume replaced while the get was
// reconnecting is never mixed into the output: the get fails saying so and
// FILE is left as it was.
func TestGetRefusesReplacedVolume(t *testing.T) {
	data, env := newData(t, map[string]string{"big": "128MiB"})
	s := startServer(t, data, env)
	dir := t.TempDir()
	out, old := precious(t, dir)
	get := startBlockcat(t, "", env, "get", s.addr, "big", "-o", out, "--rate", "64MiB")
	get.waitPartial(t, out, 16<<20)
	stopServer(t, s, syscall.SIGKILL)
	src := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(src, make([]byte, 128<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, env, "blockd", "volume", "rm", "big", "--data", data)
	mustRun(t, env, "blockd", "volume", "import", "big", src, "--data", data)
	startServerIn(t, "", data, env, s.addr)
	if code := get.wait(t); code != 1 || !strings.Contains(get.stderr.String(), "volume replaced on the server since the read began") {
		t.Fatalf("get across a replace: exit %d:\n%s", code, get.stderr.String())
	}
	sameFile(t, out, old)
}

// TestGetGivesUp: a server that never comes back fails the get within its
// --timeout, with an error naming every attempt to reconnect.
func TestGetGivesUp(t *testing.T) {
	data, env := newData(t, map[string]string{"big": "128MiB"})
	s := startServer(t, data, env)
	out := filepath.Join(t.TempDir(), "out")
	get := startBlockcat(t, "", env, "get", s.addr, "big", "-o", out, "--rate", "32MiB", "--timeout", "6s")
	get.waitPartial(t, out, 8<<20)
	killed := time.Now()
	stopServer(t, s, syscall.SIGKILL)
	code := get.wait(t)
	took := time.Since(killed)
	msg := get.stderr.String()
	if code != 1 || !strings.Contains(msg, "attempts to reconnect: 1: ") || !strings.Contains(msg, "; 2: ") ||
		!strings.Contains(msg, "connection refused") {
		t.Fatalf("get from a server gone for good: exit %d:\n%s", code, msg)
	}
	if took > 8*time.Second {
		t.Fatalf("the get took %v to give up; its timeout was 6s", took)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatalf("%s was created by a get that failed", out)
	}
}

// TestGetSurvivesLinkDrop: the link to the server goes down for 2 s under
// a fetch and comes back: the get completes byte-exact.
func TestGetSurvivesLinkDrop(t *testing.T) {
	l := newLab(t, 2)
	data, env := newData(t, map[string]string{"big": "256MiB"})
	s := startServerIn(t, l.hosts[0], data, env, l.addr(0)+":7070")
	want := s.volumeBytes(t, "big")
	out := filepath.Join(t.TempDir(), "out")
	get := startBlockcat(t, l.hosts[1], env, "get", s.addr, "big", "-o", out, "--rate", "128MiB", "--json")
	get.waitPartial(t, out, 32<<20)
	link := fmt.Sprintf("%sv0", l.id) // the server's end of its veth pair
	l.ip("link", "set", link, "down")
	downFor := time.NewTimer(2 * time.Second)
	select {
	case err := <-get.exited:
		t.Fatalf("get ended (%v) while the link was down:\n%s", err, get.stderr.String())
	case <-downFor.C:
	}
	l.ip("link", "set", link, "up")
	get.finishGet(t)
	sameFile(t, out, want)
}

// TestGetNoResume: with --no-resume a lost session fails the get at once.
func TestGetNoResume(t *testing.T) {
	data, env := newData(t, map[string]string{"big": "128MiB"})
	s := startServer(t, data, env)
	out := filepath.Join(t.TempDir(), "out")
	get := startBlockcat(t, "", env, "get", s.addr, "big", "-o", out, "--rate", "32MiB", "--no-resume")
	get.waitPartial(t, out, 8<<20)
	stopServer(t, s, syscall.SIGKILL)
	msg := get.stderr.String()
	if code := get.wait(t); code != 1 || strings.Contains(get.stderr.String(), "reconnect") {
		t.Fatalf("get --no-resume from a killed server: exit %d:\n%s", code, msg)
	}
	if msg = get.stderr.String(); !strings.Contains(msg, "session closed") {
		t.Fatalf("get --no-resume: %s", msg)
	}
}

// TestReplicasFailover: a volume stored whole on two servers (put
// --replicas 2, recorded in etcd) is read from the first; killed mid-read,
// the get resumes from the second and ends byte-exact. A later get goes to
// the holder that is up.
func TestReplicasFailover(t *testing.T) {
	c := newECCluster(t, 2, 128<<20)
	out := c.mustRun(0, c.env, "blockcat", "put", c.src, "--name", "model", "--replicas", "2", "--etcd", c.etcd, "--json")
	doc := readJSONDoc(t)
	var put map[string]any
	if err := json.Unmarshal([]byte(out), &put); err != nil {
		t.Fatal(err)
	}
	checkJSON(t, "blockcat put --replicas --json", doc["blockcat put --replicas --json"], put)
	if r := c.run(0, c.env, "blockcat", "put", c.src, "--name", "model", "--replicas", "2", "--etcd", c.etcd); r.code != 1 ||
		!strings.Contains(r.stderr, "use --replace") {
		t.Fatalf("put over an existing replicated volume: exit %d %s", r.code, r.stderr)
	}

	dst := filepath.Join(t.TempDir(), "out")
	get := startBlockcat(t, c.hosts[0], c.env, "get", "model", "--etcd", c.etcd, "-o", dst, "--rate", "64MiB", "--json")
	get.waitPartial(t, dst, 16<<20)
	c.kill(0)
	r := get.finishGet(t)
	sameFile(t, dst, c.want)
	if r.Reconnects != 1 || !strings.Contains(r.Causes[0], "failed over to "+c.servers[1].addr) || !r.Verified {
		t.Fatalf("get across the loss of a holder: %+v", r)
	}

	again := filepath.Join(t.TempDir(), "again")
	var g resumedGet
	if err := json.Unmarshal([]byte(c.mustRun(0, c.env, "blockcat", "get", "model", "--etcd", c.etcd, "-o", again, "--json")), &g); err != nil {
		t.Fatal(err)
	}
	sameFile(t, again, c.want)
	if g.Reconnects != 0 {
		t.Fatalf("a get with one holder down reconnected %d times; want it to dial the holder that is up", g.Reconnects)
	}
}

// TestBenchSurvivesRestart: blockd killed and started again while bench
// runs: the reads in flight resume and bench reports its figures.
func TestBenchSurvivesRestart(t *testing.T) {
	data, env := newData(t, map[string]string{"big": "64MiB"})
	s := startServer(t, data, env)
	b := startBlockcat(t, "", env, "bench", s.addr, "big", "--sizes", "64KiB", "--duration", "3s", "--depth", "4")
	// bench prints its table's header once the session is open and the
	// reads begin.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(time.Minute)
	for !strings.Contains(b.stdout.String(), "THROUGHPUT") {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("bench did not start:\n%s", b.stderr.String())
		}
	}
	stopServer(t, s, syscall.SIGKILL)
	startServerIn(t, "", data, env, s.addr)
	if code := b.wait(t); code != 0 {
		t.Fatalf("bench across a restart: exit %d\n%s", code, b.stderr.String())
	}
	if !strings.Contains(b.stdout.String(), "64.0 KiB") {
		t.Fatalf("bench printed no row for 64 KiB:\n%s", b.stdout.String())
	}
}
