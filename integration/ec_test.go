package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lab is a private network: a bridge with no address in the root namespace
// and hosts in network namespaces joined to it by veth pairs, addressed in
// 10.213.0.0/24. The subnet exists only inside the namespaces, so nothing is
// routed anywhere else. Everything is removed when the test ends, also when
// it fails.
type lab struct {
	t      *testing.T
	id     string
	bridge string
	hosts  []string // namespace names; host i has address 10.213.0.(i+1)
}

// newLab makes n hosts. It skips the test when the machine cannot make
// network namespaces (not root, or no ip command).
func newLab(t *testing.T, n int) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2) to create network namespaces")
	}
	var b [3]byte
	rand.Read(b[:])
	l := &lab{t: t, id: "bx" + hex.EncodeToString(b[:])}
	l.bridge = l.id + "br"
	t.Cleanup(l.remove)
	l.ip("link", "add", l.bridge, "type", "bridge")
	l.ip("link", "set", l.bridge, "up")
	for i := range n {
		ns := fmt.Sprintf("%sh%d", l.id, i)
		host, peer := fmt.Sprintf("%sv%d", l.id, i), fmt.Sprintf("%sp%d", l.id, i)
		l.ip("netns", "add", ns)
		l.hosts = append(l.hosts, ns)
		l.ip("link", "add", host, "type", "veth", "peer", "name", peer)
		l.ip("link", "set", host, "master", l.bridge, "up")
		l.ip("link", "set", peer, "netns", ns)
		l.ip("-n", ns, "link", "set", peer, "name", "eth0")
		l.ip("-n", ns, "addr", "add", l.addr(i)+"/24", "dev", "eth0")
		l.ip("-n", ns, "link", "set", "eth0", "up")
		l.ip("-n", ns, "link", "set", "lo", "up")
	}
	return l
}

// addr is host i's address.
func (l *lab) addr(i int) string { return fmt.Sprintf("10.213.0.%d", i+1) }

func (l *lab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// remove deletes the namespaces (which destroys their veth pairs) and the
// bridge. Processes in them were killed by their own cleanups, which run
// first.
func (l *lab) remove() {
	for _, ns := range l.hosts {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			l.t.Errorf("ip netns del %s: %v\n%s", ns, err, out)
		}
	}
	exec.Command("ip", "link", "del", l.bridge).Run()
}

// run runs one of the built binaries inside host i's namespace.
func (l *lab) run(i int, env []string, name string, args ...string) result {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := inNetns(l.hosts[i], filepath.Join(bin, name), args...)
	cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		l.t.Fatalf("%s %v: %v", name, args, err)
	}
	return r
}

func (l *lab) mustRun(i int, env []string, name string, args ...string) string {
	l.t.Helper()
	r := l.run(i, env, name, args...)
	if r.code != 0 {
		l.t.Fatalf("%s %s: exit %d\n%s", name, strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// startEtcd runs etcd in host i's namespace and waits until it says it
// serves clients. It skips the test if there is no etcd binary.
func (l *lab) startEtcd(i int) string {
	l.t.Helper()
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		l.t.Skip("needs the etcd binary (apt-get install etcd-server)")
	}
	client := "http://" + l.addr(i) + ":2379"
	cmd := inNetns(l.hosts[i], etcd, "--name", "lab", "--data-dir", l.t.TempDir(),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "lab=http://127.0.0.1:2380")
	logs, err := cmd.StderrPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	log := &syncBuffer{}
	ready := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(logs)
		signalled := false
		for sc.Scan() {
			log.Write(append(sc.Bytes(), '\n'))
			if !signalled && strings.Contains(sc.Text(), "ready to serve client requests") {
				close(ready)
				signalled = true
			}
		}
	}()
	exited := make(chan error, 1)
	go func() {
		<-scanned
		exited <- cmd.Wait()
	}()
	l.t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if l.t.Failed() {
			l.t.Logf("etcd log:\n%s", log.String())
		}
	})
	select {
	case <-ready:
	case err := <-exited:
		l.t.Fatalf("etcd exited: %v\n%s", err, log.String())
	case <-time.After(60 * time.Second):
		l.t.Fatalf("etcd did not become ready\n%s", log.String())
	}
	return l.addr(i) + ":2379"
}

// ecGet is what `blockcat get --json` prints for a striped volume.
type ecGet struct {
	Bytes      int64 `json:"fetched_bytes"`
	Generation uint64
	Stripes    int64
	Degraded   []struct {
		Stripe  int64
		Missing []struct {
			Shard  int
			Server string
			Reason string
		}
	}
}

func parseGet(t *testing.T, js string) ecGet {
	t.Helper()
	var g ecGet
	if err := json.Unmarshal([]byte(js), &g); err != nil {
		t.Fatalf("get output %q: %v", js, err)
	}
	return g
}

// ecCluster is a lab with etcd on host 0 (which also runs the clients) and
// a registered blockd on each other host, all sharing one key.
type ecCluster struct {
	*lab
	etcd    string
	env     []string
	servers []*server
	want    []byte // the source file's bytes
	src     string
}

func newECCluster(t *testing.T, servers int, size int) *ecCluster {
	l := newLab(t, servers+1)
	c := &ecCluster{lab: l}
	c.etcd = l.startEtcd(0)
	dir := t.TempDir()
	key := filepath.Join(dir, "blockd.key")
	mustRun(t, nil, "blockd", "keygen", "-o", key)
	c.env = []string{"BLOCKXFER_KEY_FILE=" + key}
	for i := 1; i <= servers; i++ {
		data := t.TempDir()
		s := startServerIn(t, l.hosts[i], data, c.env, l.addr(i)+":7070", "--key-file", key,
			"--etcd", c.etcd, "--server-id", fmt.Sprintf("s%d", i), "--etcd-ttl", "3s")
		c.servers = append(c.servers, s)
	}
	c.src = filepath.Join(dir, "src")
	c.want = make([]byte, size)
	rand.Read(c.want)
	if err := os.WriteFile(c.src, c.want, 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

// kill kills server i (0-based) with SIGKILL and waits for it to die.
func (c *ecCluster) kill(i int) {
	s := c.servers[i]
	s.cmd.Process.Signal(syscall.SIGKILL)
	err := <-s.exited
	s.exited <- err
}

// shardFile returns the backing file of server i's shard volume of vol.
func (c *ecCluster) shardFile(i int, vol string) string {
	m, _ := filepath.Glob(filepath.Join(c.servers[i].data, "volumes", vol+".ec.vol*"))
	if len(m) != 1 {
		c.t.Fatalf("server %d: shard files %v", i, m)
	}
	return m[0]
}

func TestECKillServersMidRead(t *testing.T) {
	const unit = 256 << 10
	c := newECCluster(t, 6, 40*unit*4+12345) // 41 stripes of 4+2
	out := c.mustRun(0, c.env, "blockcat", "put", c.src, "--name", "model", "--ec", "4+2",
		"--unit", fmt.Sprint(unit), "--etcd", c.etcd, "--json")
	var put struct {
		Stripes    int64
		Generation uint64
		Servers    []struct{ ID, Addr string }
	}
	if err := json.Unmarshal([]byte(out), &put); err != nil || put.Stripes != 41 || put.Generation != 1 || len(put.Servers) != 6 {
		t.Fatalf("put: %v\n%s", err, out)
	}
	// The registry gave the servers; every one holds its shard volume.
	for i, s := range put.Servers {
		if s.ID != fmt.Sprintf("s%d", i+1) || s.Addr != c.addr(i+1)+":7070" {
			t.Fatalf("server %d in the manifest: %+v", i, s)
		}
		c.shardFile(i, "model")
	}
	// A second put of the name is refused without --replace.
	if r := c.run(0, c.env, "blockcat", "put", c.src, "--name", "model", "--ec", "4+2", "--etcd", c.etcd); r.code == 0 ||
		!strings.Contains(r.stderr, "--replace") {
		t.Fatalf("second put: exit %d %s", r.code, r.stderr)
	}

	t.Run("healthy", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "out")
		g := parseGet(t, c.mustRun(0, c.env, "blockcat", "get", "model", "--etcd", c.etcd, "-o", dst, "--json"))
		if got, _ := os.ReadFile(dst); !bytes.Equal(got, c.want) || g.Bytes != int64(len(c.want)) || len(g.Degraded) != 0 {
			t.Fatalf("healthy get: %+v", g)
		}
		text := c.mustRun(0, c.env, "blockcat", "get", "model", "--etcd", c.etcd)
		if !strings.Contains(text, "0 of 41 stripes degraded") {
			t.Fatalf("text output: %s", text)
		}
	})

	// Kill m = 2 servers in the middle of a read: blockcat writes each
	// window to a FIFO the test reads, so it is blocked between two
	// windows when the servers die.
	t.Run("kill mid-read", func(t *testing.T) {
		fifo := filepath.Join(t.TempDir(), "out")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := inNetns(c.hosts[0], filepath.Join(bin, "blockcat"), "get", "model", "--etcd", c.etcd,
			"--window", fmt.Sprint(4*unit), "-o", fifo, "--json")
		cmd.Env = append(os.Environ(), c.env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			err := <-done
			done <- err
		})
		f, err := os.Open(fifo)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		got := make([]byte, len(c.want))
		first := 4*unit - 1
		if _, err := io.ReadFull(f, got[:first]); err != nil {
			t.Fatal(err)
		}
		c.kill(1)
		c.kill(4)
		if _, err := io.ReadFull(f, got[first:]); err != nil {
			t.Fatalf("rest of the read: %v\n%s", err, stderr.String())
		}
		err = <-done
		done <- err
		if err != nil {
			t.Fatalf("blockcat: %v\n%s", err, stderr.String())
		}
		if !bytes.Equal(got, c.want) {
			t.Fatal("bytes differ after two servers died mid-read")
		}
		g := parseGet(t, stdout.String())
		if len(g.Degraded) == 0 {
			t.Fatalf("no degraded stripes reported: %s", stdout.String())
		}
		for _, d := range g.Degraded {
			if d.Stripe == 0 {
				t.Fatalf("stripe 0 was read before the kill but reported degraded: %+v", d)
			}
			for _, m := range d.Missing {
				if (m.Server != "s2" && m.Server != "s5") || m.Reason != "down" {
					t.Fatalf("stripe %d: missing %+v", d.Stripe, m)
				}
			}
		}
	})

	t.Run("m+1 down", func(t *testing.T) {
		c.kill(2)
		r := c.run(0, c.env, "blockcat", "get", "model", "--etcd", c.etcd, "--json")
		if r.code == 0 {
			t.Fatal("get with three of six servers down succeeded")
		}
		for _, want := range []string{"stripe ", "3 of its 6 shards unavailable", "s2 (" + c.addr(2), "s3 (" + c.addr(3), "s5 (" + c.addr(5), "down"} {
			if !strings.Contains(r.stderr, want) {
				t.Fatalf("error does not say %q:\n%s", want, r.stderr)
			}
		}
	})
}

func TestECCorruptShardScrubbed(t *testing.T) {
	const unit = 64 << 10
	c := newECCluster(t, 4, 30*unit*2)
	c.mustRun(0, c.env, "blockcat", "put", c.src, "--name", "vol", "--ec", "2+2", "--unit", fmt.Sprint(unit), "--etcd", c.etcd)

	// Flip one bit in the middle of server 3's shard volume.
	path := c.shardFile(2, "vol")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	at := int64(5*unit + 1000)
	f.ReadAt(b, at)
	b[0] ^= 0x01
	f.WriteAt(b, at)
	f.Close()

	dst := filepath.Join(t.TempDir(), "out")
	g := parseGet(t, c.mustRun(0, c.env, "blockcat", "get", "vol", "--etcd", c.etcd, "-o", dst, "--json"))
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, c.want) {
		t.Fatal("bytes differ with a corrupt shard")
	}
	if len(g.Degraded) != 1 || g.Degraded[0].Missing[0].Reason != "checksum" || g.Degraded[0].Missing[0].Server != "s3" {
		t.Fatalf("corrupt shard not reported: %+v", g.Degraded)
	}

	var rep struct {
		Checked int64 `json:"checked_shards"`
		Bad     []struct {
			Stripe int64
			Server string
			Reason string
		}
		Repairs []struct {
			Server  struct{ ID string }
			Rebuilt int64 `json:"rebuilt_shards"`
		}
		Generation uint64
	}
	out := c.mustRun(0, c.env, "blockd", "scrub", "vol", "--etcd", c.etcd, "--json")
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Checked != 30*4 || len(rep.Bad) != 1 || rep.Bad[0].Server != "s3" || rep.Bad[0].Reason != "checksum" ||
		len(rep.Repairs) != 1 || rep.Repairs[0].Server.ID != "s3" || rep.Repairs[0].Rebuilt != 1 || rep.Generation != 2 {
		t.Fatalf("scrub report: %s", out)
	}
	g = parseGet(t, c.mustRun(0, c.env, "blockcat", "get", "vol", "--etcd", c.etcd, "-o", dst, "--json"))
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, c.want) || len(g.Degraded) != 0 || g.Generation != 2 {
		t.Fatalf("after scrub: %+v", g)
	}
	if text := c.mustRun(0, c.env, "blockd", "scrub", "vol", "--etcd", c.etcd); !strings.Contains(text, "0 bad, 0 shard volumes rebuilt, generation 2") {
		t.Fatalf("second scrub: %s", text)
	}
}

func TestECManifestFileWithoutEtcd(t *testing.T) {
	l := newLab(t, 4)
	dir := t.TempDir()
	key := filepath.Join(dir, "blockd.key")
	mustRun(t, nil, "blockd", "keygen", "-o", key)
	env := []string{"BLOCKXFER_KEY_FILE=" + key}
	var peers []string
	var servers []*server
	for i := 1; i <= 3; i++ {
		s := startServerIn(t, l.hosts[i], t.TempDir(), env, l.addr(i)+":7070", "--key-file", key)
		servers = append(servers, s)
		peers = append(peers, s.addr)
	}
	src := filepath.Join(dir, "src")
	want := make([]byte, 3<<20+5)
	rand.Read(want)
	os.WriteFile(src, want, 0o644)
	man := filepath.Join(dir, "vol.manifest")
	l.mustRun(0, env, "blockcat", "put", src, "--name", "vol", "--ec", "2+1", "--unit", "64KiB",
		"--peers", strings.Join(peers, ","), "--manifest", man)
	got := l.mustRun(0, env, "blockcat", "get", "--manifest", man, "--verify", "-o", "-") // --verify as the README writes it
	if got != string(want) {
		t.Fatal("bytes differ")
	}
	// One server down: the read reconstructs; the text output says so.
	servers[1].cmd.Process.Kill()
	err := <-servers[1].exited
	servers[1].exited <- err
	r := l.run(0, env, "blockcat", "get", "--manifest", man, "vol", "--offset", "1000", "--length", "2MiB", "-o", "-")
	if r.code != 0 || r.stdout != string(want[1000:1000+2<<20]) {
		t.Fatalf("degraded get: exit %d\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "degraded stripe") || !strings.Contains(r.stderr, peers[1]+"): down") {
		t.Fatalf("degraded read not reported:\n%s", r.stderr)
	}
	// Scrub cannot rebuild a lost server without a spare, and says so.
	if r := l.run(0, env, "blockd", "scrub", "--manifest", man); r.code == 0 || !strings.Contains(r.stderr, "no spare") {
		t.Fatalf("scrub without spare: exit %d %s", r.code, r.stderr)
	}
}
