package ec

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// freePort returns a loopback address nobody listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startEtcd runs a single-node etcd on loopback and returns its client
// address once it says it serves clients.
func startEtcd(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("needs the etcd binary (apt-get install etcd-server)")
	}
	client, peer := "http://"+freePort(t), "http://"+freePort(t)
	cmd := exec.Command(bin, "--name", "t", "--data-dir", t.TempDir(), "--listen-client-urls", client,
		"--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "t="+peer)
	logs, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	exited := make(chan error, 1)
	var log strings.Builder // read only after exited
	go func() {
		sc := bufio.NewScanner(logs)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.Contains(sc.Text(), "ready to serve client requests") {
				close(ready)
				signalled = true
			}
			log.WriteString(sc.Text() + "\n")
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	select {
	case <-ready:
	case err := <-exited:
		exited <- err
		t.Fatalf("etcd exited: %v\n%s", err, log.String())
	case <-time.After(60 * time.Second):
		t.Fatal("etcd did not become ready")
	}
	return strings.TrimPrefix(client, "http://")
}

func TestClusterCatalog(t *testing.T) {
	ep := startEtcd(t)
	ctx := context.Background()
	c, err := Connect(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// A registered server is listed while its lease lives; Close removes
	// it at once.
	reg, err := c.Register(ctx, "s1", "10.0.0.1:7070", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Servers(ctx); err != nil || len(got) != 1 || got[0] != (ManifestServer{ID: "s1", Addr: "10.0.0.1:7070"}) {
		t.Fatalf("servers: %+v, %v", got, err)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Servers(ctx); len(got) != 0 {
		t.Fatalf("servers after Close: %+v", got)
	}

	// A server whose process dies (its client goes away without
	// revoking) drops out when the lease expires.
	dying, err := Connect(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	watch := c.cli.Watch(ctx, c.prefix+"servers/s2")
	if _, err := dying.Register(ctx, "s2", "10.0.0.2:7070", time.Second); err != nil {
		t.Fatal(err)
	}
	dying.cli.Close()
	deadline := time.After(30 * time.Second)
	for gone := false; !gone; {
		select {
		case wr := <-watch:
			for _, ev := range wr.Events {
				gone = gone || ev.Type == clientv3.EventTypeDelete
			}
		case <-deadline:
			t.Fatal("registration of a dead server did not expire")
		}
	}

	// Manifests: create once, update only over the previous generation.
	m := sampleManifest()
	m.Generation = 1
	if err := c.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := c.PutManifest(ctx, m); !errors.Is(err, ErrConflict) {
		t.Fatalf("second create: %v", err)
	}
	m2 := *m
	m2.Generation = 3
	if err := c.PutManifest(ctx, &m2); !errors.Is(err, ErrConflict) {
		t.Fatalf("skipping a generation: %v", err)
	}
	m2.Generation = 2
	if err := c.PutManifest(ctx, &m2); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetManifest(ctx, m.Name)
	if err != nil || got.Generation != 2 || len(got.CRCs) != len(m.CRCs) {
		t.Fatalf("get: %+v, %v", got, err)
	}
	if _, err := c.GetManifest(ctx, "nope"); !errors.Is(err, ErrNoManifest) {
		t.Fatalf("get missing: %v", err)
	}
	if names, err := c.ListManifests(ctx); err != nil || len(names) != 1 || names[0] != m.Name {
		t.Fatalf("list: %v, %v", names, err)
	}
}

func TestResolveServers(t *testing.T) {
	ep := startEtcd(t)
	ctx := context.Background()
	c, err := Connect(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, s := range []ManifestServer{{"s2", "10.0.0.2:7070", 0}, {"s1", "10.0.0.1:7070", 0}, {"s3", "10.0.0.3:7070", 0}} {
		reg, err := c.Register(ctx, s.ID, s.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer reg.Close()
	}
	s1, s2, s3 := ManifestServer{ID: "s1", Addr: "10.0.0.1:7070"}, ManifestServer{ID: "s2", Addr: "10.0.0.2:7070"}, ManifestServer{ID: "s3", Addr: "10.0.0.3:7070"}
	unknown := ManifestServer{ID: "10.0.0.99:7070", Addr: "10.0.0.99:7070"}

	// No addresses: every registered server, sorted by id.
	if got, err := c.ResolveServers(ctx, nil); err != nil || !reflect.DeepEqual(got, []ManifestServer{s1, s2, s3}) {
		t.Fatalf("all registered: %+v, %v", got, err)
	}
	// Addresses keep their order; a registered one takes its id, another
	// is named by its address.
	got, err := c.ResolveServers(ctx, []string{s2.Addr, unknown.Addr, s1.Addr})
	if err != nil || !reflect.DeepEqual(got, []ManifestServer{s2, unknown, s1}) {
		t.Fatalf("resolved: %+v, %v", got, err)
	}

	// Spares: by default the registered servers the volume does not use;
	// given addresses, those servers.
	m := &Manifest{Name: "v", Servers: []ManifestServer{{ID: "s1", Addr: "10.0.0.1:7070", Generation: 4}, {ID: "s3", Addr: "elsewhere:7070"}}}
	if got, err := c.Spares(ctx, m, nil); err != nil || !reflect.DeepEqual(got, []ManifestServer{s2}) {
		t.Fatalf("default spares: %+v, %v", got, err)
	}
	if got, err := c.Spares(ctx, m, []string{unknown.Addr, s3.Addr}); err != nil || !reflect.DeepEqual(got, []ManifestServer{unknown, s3}) {
		t.Fatalf("given spares: %+v, %v", got, err)
	}

	// A catalog that cannot be reached is an error, not an empty list.
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.ResolveServers(ctx2, []string{s1.Addr}); err == nil {
		t.Fatal("ResolveServers with a cancelled context succeeded")
	}
}

// TestResolveServersWithoutCluster: a nil Cluster names servers by their
// addresses.
func TestResolveServersWithoutCluster(t *testing.T) {
	ctx := context.Background()
	var c *Cluster
	got, err := c.ResolveServers(ctx, []string{"a:1", "b:2"})
	if want := []ManifestServer{{ID: "a:1", Addr: "a:1"}, {ID: "b:2", Addr: "b:2"}}; err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("resolved: %+v, %v", got, err)
	}
	if got, err := c.ResolveServers(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("no addresses: %+v, %v", got, err)
	}
	m := &Manifest{Servers: []ManifestServer{{ID: "a:1", Addr: "a:1"}}}
	if got, err := c.Spares(ctx, m, nil); err != nil || len(got) != 0 {
		t.Fatalf("default spares: %+v, %v", got, err)
	}
	if got, err := c.Spares(ctx, m, []string{"c:3"}); err != nil || !reflect.DeepEqual(got, []ManifestServer{{ID: "c:3", Addr: "c:3"}}) {
		t.Fatalf("given spares: %+v, %v", got, err)
	}
}
