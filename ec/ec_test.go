package ec_test

import (
	"bytes"
	"context"
	"errors"
	"math/bits"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/ec"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// node is an in-process blockd on loopback.
type node struct {
	id    string
	addr  string
	srv   *engine.Server
	store *catalog.Store
	done  chan error
}

// stop closes the server, as if its process died.
func (n *node) stop() {
	n.srv.Close()
	<-n.done
	n.done <- nil
}

// gated makes a node's data connections send nothing while hold is set,
// until open is closed.
type gated struct {
	tcp.Transport
	hold atomic.Bool
	open chan struct{}
}

func (g *gated) NewSender(c net.Conn) (transport.Sender, error) {
	s, err := g.Transport.NewSender(c)
	if err != nil {
		return nil, err
	}
	return &gatedSender{s, g}, nil
}

type gatedSender struct {
	transport.Sender
	g *gated
}

func (s *gatedSender) SendExtent(f *os.File, off, n int64) error {
	if s.g.hold.Load() {
		<-s.g.open
	}
	return s.Sender.SendExtent(f, off, n)
}

// metric returns the value of the counter name in reg.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func startNode(t testing.TB, id string, tr transport.SendTransport) *node {
	t.Helper()
	store, err := catalog.OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if tr == nil {
		tr = &tcp.Transport{}
	}
	srv, err := engine.NewServer(engine.ServerConfig{Key: testKey, Volumes: store, Transport: tr, Name: id})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{id: id, addr: l.Addr().String(), srv: srv, store: store, done: make(chan error, 1)}
	go func() { n.done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		<-n.done
		store.Close()
	})
	return n
}

type testCluster struct {
	t     testing.TB
	nodes []*node
	p     *hostmem.Provider
}

func newCluster(t testing.TB, n int) *testCluster {
	c := &testCluster{t: t, p: hostmem.New()}
	t.Cleanup(func() { c.p.Close() })
	for i := range n {
		c.nodes = append(c.nodes, startNode(t, "n"+string(rune('0'+i)), nil))
	}
	return c
}

func (c *testCluster) servers() []ec.ManifestServer {
	var out []ec.ManifestServer
	for _, n := range c.nodes {
		out = append(out, ec.ManifestServer{ID: n.id, Addr: n.addr})
	}
	return out
}

func (c *testCluster) dial(ctx context.Context, s ec.ManifestServer) (*engine.Session, error) {
	return engine.Dial(ctx, s.Addr, engine.Config{Key: testKey, Provider: c.p, Transport: &tcp.Transport{},
		DataConns: 2, Verify: engine.VerifyRequire, Name: "ec-test", DialTimeout: 5 * time.Second})
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

func (c *testCluster) importVolume(name string, data []byte, k, m int, unit int64) *ec.Manifest {
	c.t.Helper()
	var last int64
	man, err := ec.Import(context.Background(), bytes.NewReader(data), int64(len(data)), ec.ImportConfig{
		Name: name, K: k, M: m, Unit: unit, Servers: c.servers(), Dial: c.dial,
		Progress: func(done, total int64) { last = done },
	})
	if err != nil {
		c.t.Fatal(err)
	}
	if last != int64(len(data)) {
		c.t.Fatalf("progress ended at %d of %d", last, len(data))
	}
	return man
}

func (c *testCluster) reader(man *ec.Manifest, mod func(*ec.ReaderConfig)) *ec.Reader {
	cfg := ec.ReaderConfig{Dial: c.dial, Provider: c.p}
	if mod != nil {
		mod(&cfg)
	}
	r, err := ec.NewReader(man, cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { r.Close() })
	return r
}

// read reads [off, off+n) through r into a fresh buffer.
func (c *testCluster) read(ctx context.Context, r *ec.Reader, off, n int64) ([]byte, *ec.ReadResult, error) {
	buf, err := c.p.Alloc(ctx, n+100, false)
	if err != nil {
		c.t.Fatal(err)
	}
	res, err := r.Read(ctx, off, n, buf, 100)
	mem, _ := c.p.Bytes(buf.ID)
	out := bytes.Clone(mem[100 : 100+n])
	c.p.Free(ctx, buf.ID)
	return out, res, err
}

func TestHealthyReads(t *testing.T) {
	c := newCluster(t, 7)
	data := randomBytes(3*4*64<<10+12345, 1)
	man := c.importVolume("vol", data, 4, 2, 64<<10)
	r := c.reader(man, nil)
	ctx := context.Background()
	got, res, err := c.read(ctx, r, 0, int64(len(data)))
	if err != nil || !bytes.Equal(got, data) || len(res.Degraded) != 0 || res.Stripes != 4 {
		t.Fatalf("whole volume: %v, equal %v, %+v", err, bytes.Equal(got, data), res)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 30 {
		off := rng.Int64N(int64(len(data)))
		n := 1 + rng.Int64N(int64(len(data))-off)
		got, res, err := c.read(ctx, r, off, n)
		if err != nil || !bytes.Equal(got, data[off:off+n]) || len(res.Degraded) != 0 {
			t.Fatalf("[%d,+%d): %v %+v", off, n, err, res)
		}
	}
	// Every server holds its shard volume with extents of one unit.
	for i, n := range c.nodes {
		v, err := n.store.Catalog().Get("vol.ec")
		if err != nil || v.ExtentSize != 64<<10 || v.Generation != man.Servers[i].Generation {
			t.Fatalf("node %d: %+v, %v", i, v, err)
		}
	}
}

// corruptShard flips one bit of a shard on its server's disk.
func corruptShard(t *testing.T, n *node, man *ec.Manifest, stripe int64, shard int) {
	t.Helper()
	v, err := n.store.Catalog().Get(man.ShardVolume())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(v.Backing, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	at := man.Layout().LocalIndex(stripe, shard)*man.Unit + 777
	b := make([]byte, 1)
	f.ReadAt(b, at)
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

func TestDegradedReads(t *testing.T) {
	c := newCluster(t, 6)
	const unit = 64 << 10
	data := randomBytes(6*4*unit-1000, 2)
	man := c.importVolume("vol", data, 4, 2, unit)
	l := man.Layout()
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	metrics := ec.NewMetrics(reg)

	t.Run("checksum", func(t *testing.T) {
		s := l.Server(1, 2)
		corruptShard(t, c.nodes[s], man, 1, 2)
		r := c.reader(man, func(cfg *ec.ReaderConfig) { cfg.Metrics = metrics })
		got, res, err := c.read(ctx, r, 0, int64(len(data)))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read: %v", err)
		}
		if len(res.Degraded) != 1 || res.Degraded[0].Stripe != 1 || res.Degraded[0].Missing[0].Reason != ec.ReasonChecksum ||
			res.Degraded[0].Missing[0].Shard != 2 || res.Degraded[0].Missing[0].Server != c.nodes[s].id {
			t.Fatalf("degraded: %+v", res.Degraded)
		}
		if got := metric(t, reg, "blockxfer_ec_degraded_stripes_total"); got != 1 {
			t.Fatalf("degraded stripes metric %v", got)
		}
		if got := metric(t, reg, "blockxfer_ec_unusable_shards_total"); got != 1 {
			t.Fatalf("unusable shards metric %v", got)
		}
		// Scrub finds it and rebuilds it on the same server.
		fixed, rep, err := ec.Scrub(ctx, man, ec.ScrubConfig{Dial: c.dial, Provider: c.p})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Bad) != 1 || len(rep.Repairs) != 1 || rep.Repairs[0].Server.ID != c.nodes[s].id ||
			rep.Repairs[0].Rebuilt != 1 || fixed.Generation != man.Generation+1 || rep.Checked != l.Stripes()*6 {
			t.Fatalf("scrub: %+v, generation %d", rep, fixed.Generation)
		}
		old := man
		man = fixed
		got, res, err = c.read(ctx, c.reader(man, nil), 0, int64(len(data)))
		if err != nil || !bytes.Equal(got, data) || len(res.Degraded) != 0 {
			t.Fatalf("after scrub: %v %+v", err, res.Degraded)
		}
		// The old manifest now names a stale shard volume on that server.
		got, res, err = c.read(ctx, c.reader(old, nil), 0, int64(len(data)))
		if err != nil || !bytes.Equal(got, data) || len(res.Degraded) == 0 || res.Degraded[0].Missing[0].Reason != ec.ReasonStale {
			t.Fatalf("read with the old manifest: %v %+v", err, res.Degraded)
		}
	})

	t.Run("server down mid-read", func(t *testing.T) {
		r := c.reader(man, func(cfg *ec.ReaderConfig) { cfg.Parallel = 1 })
		// Read the first stripe, then stop a server holding data of
		// later stripes, then read the rest with the same Reader.
		if _, _, err := c.read(ctx, r, 0, l.StripeBytes()); err != nil {
			t.Fatal(err)
		}
		victim := c.nodes[l.Server(2, 0)]
		victim.stop()
		got, res, err := c.read(ctx, r, 0, int64(len(data)))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read with a server down: %v", err)
		}
		if len(res.Degraded) == 0 {
			t.Fatal("no degraded stripe reported")
		}
		for _, d := range res.Degraded {
			for _, f := range d.Missing {
				if f.Server != victim.id || f.Reason != ec.ReasonDown {
					t.Fatalf("stripe %d: %+v", d.Stripe, f)
				}
			}
		}
		// Two down: still readable.
		second := c.nodes[l.Server(2, 1)]
		second.stop()
		got, _, err = c.read(ctx, c.reader(man, nil), 0, int64(len(data)))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read with two servers down: %v", err)
		}
		// Three down: a clear error naming the stripe and what is missing.
		third := c.nodes[l.Server(2, 2)]
		third.stop()
		_, _, err = c.read(ctx, c.reader(man, nil), 0, int64(len(data)))
		var se *ec.StripeError
		if !errors.As(err, &se) || !errors.Is(err, ec.ErrUnavailable) || len(se.Missing) != 3 {
			t.Fatalf("read with three servers down: %v", err)
		}
		for _, n := range []*node{victim, second, third} {
			if !strings.Contains(err.Error(), n.id) || !strings.Contains(err.Error(), n.addr) {
				t.Fatalf("error %q does not name %s (%s)", err, n.id, n.addr)
			}
		}
		if !strings.Contains(err.Error(), "stripe ") || !strings.Contains(err.Error(), "down") {
			t.Fatalf("error %q", err)
		}
	})
}

func TestSlowServerReconstructed(t *testing.T) {
	c := newCluster(t, 5)
	g := &gated{open: make(chan struct{})}
	slow := startNode(t, "slow", g)
	c.nodes = append(c.nodes, slow)
	t.Cleanup(func() { close(g.open) })
	const unit = 16 << 10
	data := randomBytes(6*4*unit, 3)
	man := c.importVolume("vol", data, 4, 2, unit)
	g.hold.Store(true)
	r := c.reader(man, func(cfg *ec.ReaderConfig) { cfg.ShardTimeout = 300 * time.Millisecond })
	got, res, err := c.read(context.Background(), r, 0, int64(len(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read: %v", err)
	}
	if len(res.Degraded) == 0 {
		t.Fatal("no degraded stripes")
	}
	for _, d := range res.Degraded {
		if len(d.Missing) != 1 || d.Missing[0].Reason != ec.ReasonTimeout || d.Missing[0].Server != "slow" {
			t.Fatalf("degraded: %+v", res.Degraded)
		}
	}
}

func TestScrubMovesLostServerToSpare(t *testing.T) {
	c := newCluster(t, 7)
	spare := c.nodes[6]
	c.nodes = c.nodes[:6]
	const unit = 16 << 10
	data := randomBytes(5*4*unit+3, 4)
	man := c.importVolume("vol", data, 4, 2, unit)
	lost := c.nodes[3]
	lost.stop()
	ctx := context.Background()
	spares := []ec.ManifestServer{{ID: c.nodes[0].id, Addr: c.nodes[0].addr}, {ID: spare.id, Addr: spare.addr}}
	fixed, rep, err := ec.Scrub(ctx, man, ec.ScrubConfig{Dial: c.dial, Provider: c.p, Spares: spares})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Repairs) != 1 || rep.Repairs[0].Replaced == nil || rep.Repairs[0].Replaced.ID != lost.id ||
		fixed.Servers[3].ID != spare.id || rep.Repairs[0].Rebuilt != man.Layout().Held(3) {
		t.Fatalf("scrub: %+v", rep)
	}
	got, res, err := c.read(ctx, c.reader(fixed, nil), 0, int64(len(data)))
	if err != nil || !bytes.Equal(got, data) || len(res.Degraded) != 0 {
		t.Fatalf("read after moving to the spare: %v %+v", err, res)
	}
	// Without a spare the lost server cannot be repaired: a clear error.
	c.nodes[1].stop()
	_, _, err = ec.Scrub(ctx, fixed, ec.ScrubConfig{Dial: c.dial, Provider: c.p})
	if err == nil || !strings.Contains(err.Error(), "no spare") || !strings.Contains(err.Error(), c.nodes[1].id) {
		t.Fatalf("scrub without spare: %v", err)
	}
}

func TestReadHonoursContext(t *testing.T) {
	c := newCluster(t, 5)
	g := &gated{open: make(chan struct{})}
	c.nodes = append(c.nodes, startNode(t, "stuck", g))
	const unit = 16 << 10
	data := randomBytes(4*4*unit, 5)
	man := c.importVolume("vol", data, 4, 2, unit)
	g.hold.Store(true)
	t.Cleanup(func() { close(g.open) })
	r := c.reader(man, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _, err := c.read(ctx, r, 0, int64(len(data)))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
}

func TestImportFailsCleanly(t *testing.T) {
	c := newCluster(t, 6)
	c.nodes[4].stop()
	data := randomBytes(4*4*4096, 6)
	_, err := ec.Import(context.Background(), bytes.NewReader(data), int64(len(data)), ec.ImportConfig{
		Name: "vol", K: 4, M: 2, Unit: 4096, Servers: c.servers(), Dial: c.dial})
	if err == nil || !strings.Contains(err.Error(), c.nodes[4].id) {
		t.Fatalf("import with a server down: %v", err)
	}
	c2 := newCluster(t, 6)
	_, err = ec.Import(context.Background(), bytes.NewReader(data[:100]), int64(len(data)), ec.ImportConfig{
		Name: "vol", K: 4, M: 2, Unit: 4096, Servers: c2.servers(), Dial: c2.dial})
	if err == nil || !strings.Contains(err.Error(), "source ended") {
		t.Fatalf("import of a short source: %v", err)
	}
	// Nothing half-written is listed on any server.
	for _, n := range c2.nodes {
		if vols, _ := n.store.Catalog().List(); len(vols) != 0 {
			t.Fatalf("%s lists %d volumes after a failed import", n.id, len(vols))
		}
	}
}

// TestPartialReadOfCorruptShard is the defect where a partial striped read
// returned bytes corrupted on a server's disk with no error: the server
// checked the partial shard against what is on disk now. Now the server
// refuses it (the bytes no longer match their stored CRC), and the reader
// rebuilds the span from the other shards.
func TestPartialReadOfCorruptShard(t *testing.T) {
	c := newCluster(t, 6)
	const unit = 64 << 10
	data := randomBytes(4*4*unit, 3)
	man := c.importVolume("vol", data, 4, 2, unit)
	l := man.Layout()
	corruptShard(t, c.nodes[l.Server(1, 2)], man, 1, 2) // byte 777 of that shard
	start, _ := l.DataRange(1, 2)
	off, n := start+700, int64(200) // inside the shard, over the bad byte
	got, res, err := c.read(context.Background(), c.reader(man, nil), off, n)
	if err != nil || !bytes.Equal(got, data[off:off+n]) {
		t.Fatalf("partial read over a corrupt shard: %v, equal %v", err, bytes.Equal(got, data[off:off+n]))
	}
	if len(res.Degraded) != 1 || res.Degraded[0].Missing[0].Reason != ec.ReasonChecksum || res.Degraded[0].Missing[0].Shard != 2 {
		t.Fatalf("degraded: %+v, want stripe 1 shard 2 rebuilt for a checksum fault", res.Degraded)
	}
}

// TestShardCheckedAgainstManifest: a shard read whole is checked against
// the manifest, not only against the CRC its server stored: when they
// disagree the reader does not trust the server, tries to rebuild the shard
// from the others, and here (where the manifest itself is what is wrong)
// fails the read rather than return bytes the manifest does not vouch for.
func TestShardCheckedAgainstManifest(t *testing.T) {
	c := newCluster(t, 6)
	const unit = 64 << 10
	data := randomBytes(4*4*unit, 4)
	man := c.importVolume("vol", data, 4, 2, unit)
	man.CRCs[1*int64(man.K+man.M)+2] ^= 1 // the manifest disagrees about stripe 1, shard 2
	_, _, err := c.read(context.Background(), c.reader(man, nil), 0, int64(len(data)))
	if err == nil || !strings.Contains(err.Error(), "stripe 1: reconstructed shard 2") || !strings.Contains(err.Error(), "the manifest says") {
		t.Fatalf("read: %v, want stripe 1 shard 2 refused against the manifest", err)
	}
	// The other stripes still read.
	l := man.Layout()
	got, res, err := c.read(context.Background(), c.reader(man, nil), 2*l.StripeBytes(), l.StripeBytes())
	if err != nil || !bytes.Equal(got, data[2*l.StripeBytes():3*l.StripeBytes()]) || len(res.Degraded) != 0 {
		t.Fatalf("stripe 2: %v %+v", err, res.Degraded)
	}
}

// A server that failed is dialled again after a short back-off that doubles
// while it stays down, and is back in use soon after it answers again,
// well before the longest back-off.
func TestDownServerBackOff(t *testing.T) {
	c := newCluster(t, 6)
	const unit = 64 << 10
	data := randomBytes(4*unit*3, 3)
	man := c.importVolume("vol", data, 4, 2, unit)
	down := c.nodes[0].addr
	var up atomic.Bool
	var dials atomic.Int32
	r := c.reader(man, func(cfg *ec.ReaderConfig) {
		cfg.RetryFirst, cfg.RetryAfter = 20*time.Millisecond, time.Hour
		cfg.Dial = func(ctx context.Context, s ec.ManifestServer) (*engine.Session, error) {
			if s.Addr == down && !up.Load() {
				dials.Add(1)
				return nil, errors.New("connection refused (test)")
			}
			return c.dial(ctx, s)
		}
	})
	ctx := context.Background()
	readAll := func() *ec.ReadResult {
		t.Helper()
		got, res, err := c.read(ctx, r, 0, int64(len(data)))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read: %v", err)
		}
		return res
	}
	if res := readAll(); len(res.Degraded) == 0 || res.Degraded[0].Missing[0].Reason != ec.ReasonDown {
		t.Fatalf("a read with a server down: %+v", res.Degraded)
	}
	// While it stays down, reads in a row dial it only as the doubling
	// back-off allows: far fewer times than there are reads.
	start := time.Now()
	reads := 0
	for reads < 10 || time.Since(start) < 300*time.Millisecond {
		readAll()
		reads++
	}
	// A back-off of 20ms doubling fits about log2(elapsed/20ms) dials,
	// plus the first; a fixed 20ms one would fit elapsed/20ms.
	elapsed := time.Since(start)
	if n, most := dials.Load(), int32(bits.Len64(uint64(elapsed/(20*time.Millisecond))))+2; n > most || int(n) >= reads {
		t.Fatalf("%d dials of a down server over %d reads in %s, want at most %d", n, reads, elapsed, most)
	}
	up.Store(true)
	// Back in use within the current back-off (at most 640ms by now),
	// not after RetryAfter (an hour).
	deadline := time.Now().Add(5 * time.Second)
	for len(readAll().Degraded) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a server that answers again was not used within 5s")
		}
	}
}
