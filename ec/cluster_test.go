package ec

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os/exec"
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
