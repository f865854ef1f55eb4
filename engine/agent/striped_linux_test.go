package agent

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/ec"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// shardServer is a blockd holding shard volumes, stoppable mid-test.
type shardServer struct {
	addr string
	srv  *engine.Server
	done chan error
}

func startShardServer(t *testing.T) *shardServer {
	t.Helper()
	store, err := catalog.OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := engine.NewServer(engine.ServerConfig{Key: testKey, Volumes: store, Transport: &tcp.Transport{}, Name: "shard"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &shardServer{addr: l.Addr().String(), srv: srv, done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(l) }()
	t.Cleanup(func() {
		s.stop()
		store.Close()
	})
	return s
}

// stop closes the server, as if its process died; again is a no-op.
func (s *shardServer) stop() {
	s.srv.Close()
	s.done <- <-s.done // kept for the next stop
}

// stripedVolume stores data as a 2+1 striped volume on three servers.
func stripedVolume(t *testing.T, name string, data []byte) ([]*shardServer, *ec.Manifest) {
	t.Helper()
	p := hostmem.New()
	defer p.Close()
	var servers []*shardServer
	var ms []ec.ManifestServer
	for i := range 3 {
		s := startShardServer(t)
		servers = append(servers, s)
		ms = append(ms, ec.ManifestServer{ID: fmt.Sprintf("s%d", i), Addr: s.addr})
	}
	man, err := ec.Import(context.Background(), bytes.NewReader(data), int64(len(data)), ec.ImportConfig{
		Name: name, K: 2, M: 1, Unit: 64 << 10, Servers: ms,
		Dial: func(ctx context.Context, s ec.ManifestServer) (*engine.Session, error) {
			return engine.Dial(ctx, s.Addr, engine.Config{Key: testKey, Provider: p, Transport: &tcp.Transport{}, Name: "import"})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return servers, man
}

// A read may name a striped volume of the agent's catalog: its bytes land
// in host and device memory, degraded stripes are reconstructed, and the
// errors have their codes.
func TestStripedReads(t *testing.T) {
	data := make([]byte, 1<<20+12345)
	rand.NewChaCha8([32]byte{9}).Read(data)
	servers, man := stripedVolume(t, "model", data)
	f := newFakeAllocs(t)
	e := newEnvWith(t, nil, func(c *Config) {
		c.Device = f.device
		c.Manifest = func(_ context.Context, volume string) (*ec.Manifest, error) {
			if volume != man.Name {
				return nil, fmt.Errorf("manifest %q: %w", volume, ec.ErrNoManifest)
			}
			return man, nil
		}
	})
	c := e.dial(true)
	st := c.ok(map[string]any{"op": "stat", "striped": true, "volume": "model"})
	if st.SizeBytes != int64(len(data)) || !strings.Contains(string(st.Raw), `"striped":true`) {
		t.Errorf("stat of a striped volume: %s", st.Raw)
	}
	hostFD, host := memfd(t, len(data)+100)
	h := c.register(hostFD, len(host))
	handle, _, dev := f.alloc(1 << 20)
	d := c.ok(devReg("cuda-ipc", 0, handle, 0, 1<<20)).Handle
	striped := func(off, n int64, handle uint64, dstOff int64) map[string]any {
		m := rd("", "model", off, n, handle, dstOff, "s")
		delete(m, "server")
		m["striped"] = true
		return m
	}
	ids := c.ok(map[string]any{"op": "submit", "reads": []any{
		striped(0, int64(len(data)), h, 100),
		striped(70000, 500000, d, 3),
	}}).IDs
	comps := c.waitAll(ids)
	for _, id := range ids {
		cp := comps[id]
		if cp.State != "done" || !cp.Striped || cp.Server != "" || cp.Stripes < 1 || cp.DegradedStripes != 0 ||
			cp.Bytes != cp.Length || !cp.Verified || cp.Transport == nil || *cp.Transport != "tcp" {
			t.Errorf("striped completion %+v", cp)
		}
	}
	if !bytes.Equal(host[100:], data) {
		t.Error("host memory does not hold the striped volume")
	}
	if !bytes.Equal(dev[3:500003], data[70000:570000]) {
		t.Error("device memory does not hold the striped range")
	}
	// One server down: the stripes it held data of are reconstructed.
	servers[1].stop()
	clear(host)
	ids = c.ok(map[string]any{"op": "submit", "reads": []any{striped(0, int64(len(data)), h, 0)}}).IDs
	if cp := c.waitAll(ids)[ids[0]]; cp.State != "done" || cp.DegradedStripes == 0 || !bytes.Equal(host[:len(data)], data) {
		t.Errorf("degraded read: %+v", cp)
	}
	// Two down: more than M shards of a stripe are missing.
	servers[2].stop()
	ids = c.ok(map[string]any{"op": "submit", "reads": []any{
		striped(0, int64(len(data)), h, 0),
		striped(int64(len(data))-5, 10, h, 0),
	}}).IDs
	comps = c.waitAll(ids)
	for i, code := range []string{"unavailable", "out-of-range"} {
		if cp := comps[ids[i]]; cp.State != "failed" || cp.Error == nil || cp.Error.Code != code {
			t.Errorf("read %d: %+v %+v, want failed with %s", i, cp, cp.Error, code)
		}
	}
	missing := striped(0, 10, h, 0)
	missing["volume"] = "nope"
	ids = c.ok(map[string]any{"op": "submit", "reads": []any{missing}}).IDs
	if cp := c.waitAll(ids)[ids[0]]; cp.Error == nil || cp.Error.Code != "not-found" {
		t.Errorf("unknown striped volume: %+v %+v", cp, cp.Error)
	}
	withServer := striped(0, 10, h, 0)
	withServer["server"] = e.server
	c.refused(CodeBadMessage, map[string]any{"op": "submit", "reads": []any{withServer}})
}

// Without a cluster catalog, striped reads are refused, saying why.
func TestStripedWithoutCatalog(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(true)
	r := c.refused(CodeNotSupported, map[string]any{"op": "stat", "striped": true, "volume": "v"})
	if !strings.Contains(r.Error.Message, "--etcd") {
		t.Errorf("refusal %q does not say how to give one", r.Error.Message)
	}
	fd, mem := memfd(t, 4096)
	h := c.register(fd, len(mem))
	ids := c.ok(map[string]any{"op": "submit", "reads": []any{map[string]any{"striped": true, "volume": "v", "length": 10, "handle": h}}}).IDs
	if cp := c.waitAll(ids)[ids[0]]; cp.Error == nil || cp.Error.Code != CodeNotSupported || !cp.Striped {
		t.Errorf("striped read without a catalog: %+v %+v", cp, cp.Error)
	}
}
