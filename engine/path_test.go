package engine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/choose"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// mixedClient dials e with devmem RX through the software NIC on devmem
// data connections and plain TCP on plain ones, as blockcat get --devmem
// emulate does.
func (e *env) mixedClient(t *testing.T, devmemConns int, mod func(*engine.Config)) (*engine.Session, *hostmem.Provider) {
	t.Helper()
	p := hostmem.New()
	t.Cleanup(func() { p.Close() }) // after the session's cleanup
	return e.emulatedClient(t, p, devmemConns, true, mod), p
}

// emulatedClient dials e with devmem RX into p through the software NIC on
// devmemConns data connections, and with plain also plain TCP ones. When
// the test ends it closes the session and the path and fails the test if
// they leak devmem tokens or bindings.
func (e *env) emulatedClient(t *testing.T, p memory.Provider, devmemConns int, plain bool, mod func(*engine.Config)) *engine.Session {
	t.Helper()
	path, err := choose.Client(context.Background(), choose.ClientOptions{Mode: choose.Emulate, Server: e.addr,
		Provider: p, DataConns: devmemConns})
	if err != nil {
		t.Fatal(err)
	}
	cfg := engine.Config{Key: testKey, Provider: p, Transport: path.Transport,
		DataConns: devmemConns, Verify: engine.VerifyRequire, Name: "t"}
	if plain {
		if path.Plain == nil || path.Plain.Name() != transport.TCP {
			t.Fatalf("emulated path's plain transport: %v, want tcp", path.Plain)
		}
		cfg.PlainTransport = path.Plain
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := engine.Dial(context.Background(), e.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A devmem token still held, or a binding left, is a leak.
		if err := s.Close(); err != nil {
			t.Errorf("session close: %v", err)
		}
		if err := path.Close(); err != nil {
			t.Errorf("path close: %v", err)
		}
		if err := path.SoftNIC.Check(); err != nil {
			t.Errorf("software NIC: %v", err)
		}
	})
	return s
}

// counter returns the value of the counter name{labels} in reg, 0 if it
// has not been counted.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// checkExtentsOn fails unless every extent of r arrived on a data
// connection of the wanted transport, and the first devmem ones are those
// below devmemConns.
func checkExtentsOn(t *testing.T, what string, r engine.Result, want string, devmemConns int) {
	t.Helper()
	if len(r.Extents) == 0 {
		t.Fatalf("%s: no extents recorded", what)
	}
	for _, x := range r.Extents {
		onDevmem := x.DataConn < devmemConns
		if x.Transport != want || onDevmem != (want != transport.TCP) {
			t.Fatalf("%s: extent at %d on data connection %d (%s), want %s", what, x.VolumeOffset, x.DataConn, x.Transport, want)
		}
	}
}

// TestPathPerRead: a session holds devmem (software NIC) and plain data
// connections; the server sends reads below its threshold on the plain
// ones and the others on devmem, the client can force plain, and every
// result names its path and why, counted on both sides' metrics.
func TestPathPerRead(t *testing.T) {
	sreg := prometheus.NewRegistry()
	e := newEnv(t, envOpts{cfg: func(c *engine.ServerConfig) { c.Metrics = engine.NewMetrics(sreg) }})
	want := e.volume("vol", 16<<20, 1<<20)
	creg := prometheus.NewRegistry()
	const devmemConns = 2
	s, p := e.mixedClient(t, devmemConns, func(c *engine.Config) { c.Metrics = engine.NewClientMetrics(creg) })
	buf, err := p.Alloc(context.Background(), 16<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	mem, _ := p.Bytes(buf.ID)

	small := "small-read: 4096 bytes, below the server's devmem threshold of 65536 bytes"
	cases := []struct {
		name      string
		rng       engine.Range
		plain     bool
		transport string
		reason    string
	}{
		{"4KiB", engine.Range{Offset: 12345, Length: 4 << 10}, false, transport.TCP, small},
		{"4MiB", engine.Range{Offset: 3 << 20, Length: 4 << 20}, false, transport.DevmemEmulated, ""},
		{"just below", engine.Range{Offset: 1 << 20, Length: 64<<10 - 1}, false, transport.TCP, "small-read: "},
		{"at the threshold", engine.Range{Offset: 9 << 20, Length: 64 << 10}, false, transport.DevmemEmulated, ""},
		{"4MiB forced plain", engine.Range{Offset: 10 << 20, Length: 4 << 20}, true, transport.TCP, "plain-requested: "},
	}
	check := func(name string, r engine.Result, tr, reason string, dstOff int64) {
		t.Helper()
		if r.Err != nil {
			t.Fatalf("%s: %v", name, r.Err)
		}
		if r.Transport != tr || !strings.HasPrefix(r.FallbackReason, reason) || (reason == "") != (r.FallbackReason == "") {
			t.Fatalf("%s: transport %q, reason %q; want %q, %q", name, r.Transport, r.FallbackReason, tr, reason)
		}
		if strings.HasPrefix(reason, engine.ReasonSmallRead) != (r.SmallRead == engine.DefaultSmallRead) {
			t.Fatalf("%s: SmallRead %d with reason %q", name, r.SmallRead, r.FallbackReason)
		}
		checkExtentsOn(t, name, r, tr, devmemConns)
		if !bytes.Equal(mem[dstOff:dstOff+r.Length], want[r.Offset:r.Offset+r.Length]) {
			t.Fatalf("%s: bytes differ", name)
		}
	}
	// One at a time, then all in one batch.
	for _, tc := range cases {
		h := s.Submit(context.Background(), []engine.Request{{Volume: "vol", Offset: tc.rng.Offset, Length: tc.rng.Length,
			Dst: buf, Plain: tc.plain}})
		check(tc.name, h[0].Result(), tc.transport, tc.reason, 0)
	}
	clear(mem)
	var reqs []engine.Request
	var off int64
	for _, tc := range cases {
		reqs = append(reqs, engine.Request{Volume: "vol", Offset: tc.rng.Offset, Length: tc.rng.Length, Dst: buf, DstOff: off, Plain: tc.plain})
		off += tc.rng.Length
	}
	off = 0
	for i, h := range s.Submit(context.Background(), reqs) {
		check("batch "+cases[i].name, h.Result(), cases[i].transport, cases[i].reason, off)
		off += cases[i].rng.Length
	}

	// Both sides counted each read: 2 x (2 small, 1 forced, 2 devmem).
	for _, c := range []struct {
		labels map[string]string
		n      float64
	}{
		{map[string]string{"transport": "tcp", "reason": "small-read"}, 4},
		{map[string]string{"transport": "tcp", "reason": "plain-requested"}, 2},
		{map[string]string{"transport": "devmem-emulated", "reason": ""}, 4},
	} {
		if got := counter(t, creg, "blockxfer_client_reads_total", c.labels); got != c.n {
			t.Errorf("client reads %v: %v, want %v", c.labels, got, c.n)
		}
	}
	for _, c := range []struct {
		labels map[string]string
		n      float64
	}{
		{map[string]string{"path": "plain", "reason": "small-read"}, 4},
		{map[string]string{"path": "plain", "reason": "plain-requested"}, 2},
		{map[string]string{"path": "devmem-emulated", "reason": ""}, 4},
	} {
		if got := counter(t, sreg, "blockd_read_paths_total", c.labels); got != c.n {
			t.Errorf("server paths %v: %v, want %v", c.labels, got, c.n)
		}
	}
}

// TestPathOneKind: with connections of one kind only, every read goes
// there; a plain-only hint that a devmem session cannot honour fails.
func TestPathOneKind(t *testing.T) {
	e := newEnv(t, envOpts{})
	want := e.volume("vol", 4<<20, 1<<20)

	// Devmem only (PlainConns negative): the small read goes devmem.
	s, p := e.mixedClient(t, 2, func(c *engine.Config) { c.PlainConns = -1 })
	buf, _ := p.Alloc(context.Background(), 4<<20, false)
	mem, _ := p.Bytes(buf.ID)
	res, err := s.Read(context.Background(), "vol", []engine.Range{{Offset: 5, Length: 4 << 10}}, buf)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Transport != transport.DevmemEmulated || res[0].FallbackReason != "" || !bytes.Equal(mem[:4<<10], want[5:5+4<<10]) {
		t.Fatalf("small read without plain connections: %q %q", res[0].Transport, res[0].FallbackReason)
	}
	h := s.Submit(context.Background(), []engine.Request{{Volume: "vol", Length: 4 << 10, Dst: buf, Plain: true}})
	if r := h[0].Result(); !errors.Is(r.Err, engine.ErrNoPlainPath) {
		t.Fatalf("plain-only read without plain connections: %v, want ErrNoPlainPath", r.Err)
	}

	// TCP only: no plain connections added, no reason on any read.
	c := e.client(func(c *engine.Config) { c.PlainConns = 3 })
	cbuf, cmem := c.alloc(t, 4<<20+4<<10)
	res, err = c.Read(context.Background(), "vol", []engine.Range{{Offset: 0, Length: 4 << 10}, {Offset: 0, Length: 4 << 20}}, cbuf)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Transport != transport.TCP || r.FallbackReason != "" {
			t.Fatalf("tcp session: %q %q", r.Transport, r.FallbackReason)
		}
		for _, x := range r.Extents {
			if x.DataConn >= 3 {
				t.Fatalf("tcp session used data connection %d: plain ones were added", x.DataConn)
			}
		}
	}
	if !bytes.Equal(cmem[:4<<10], want[:4<<10]) || !bytes.Equal(cmem[4<<10:], want) {
		t.Fatal("tcp session: bytes differ")
	}
}

// kindSession runs the handshake by hand with caps and returns the control
// connection and the Welcome.
func (e *env) kindSession(t *testing.T, caps blockproto.Caps) (*blockproto.Conn, *blockproto.Welcome) {
	t.Helper()
	ctl := e.rawConn(t)
	pc := blockproto.NewConn(ctl)
	blockproto.WriteControlPreamble(ctl)
	nonce, _ := blockproto.NewNonce()
	pc.WriteMsg(&blockproto.Hello{Caps: caps, Nonce: nonce, Client: "t"})
	m, err := pc.ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	ch := m.(*blockproto.Challenge)
	if ch.Caps&blockproto.CapDataKinds == 0 {
		t.Fatalf("Challenge caps %#x lack CapDataKinds", ch.Caps)
	}
	pc.WriteMsg(&blockproto.Auth{MAC: blockproto.ClientProof(testKey, nonce, ch.Nonce, ch.SessionID)})
	if m, err = pc.ReadMsg(); err != nil {
		t.Fatal(err)
	}
	return pc, m.(*blockproto.Welcome)
}

// readOn sends a Read and returns the data connection of each Extent up
// to its ReadDone, reading the payload off the data connections.
func readOn(t *testing.T, pc *blockproto.Conn, data []io.Reader, rd *blockproto.Read) []uint16 {
	t.Helper()
	if err := pc.WriteMsg(rd); err != nil {
		t.Fatal(err)
	}
	var on []uint16
	for {
		m, err := pc.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *blockproto.Extent:
			on = append(on, m.DataConn)
			if _, err := io.CopyN(io.Discard, data[m.DataConn], int64(m.Length)); err != nil {
				t.Fatal(err)
			}
		case *blockproto.ReadDone:
			return on
		default:
			t.Fatalf("read %d: got %s", rd.ID, m.Type())
		}
	}
}

// TestDataKindsOnTheWire drives blockd's side of the attach by hand: a
// client that declares kinds gets the threshold in Welcome and small reads
// on its plain connection; an old-style attach (no CapDataKinds, no kind
// byte) still works, with no threshold, and is served as before.
func TestDataKindsOnTheWire(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.volume("vol", 4<<20, 1<<20)

	attach := func(pc *blockproto.Conn, w *blockproto.Welcome, kinds []blockproto.DataKind) []io.Reader {
		t.Helper()
		var data []io.Reader
		for i, tok := range w.Tokens[:2] {
			c := e.rawConn(t)
			if kinds == nil {
				blockproto.WriteDataPreamble(c, tok)
			} else {
				blockproto.WriteDataPreambleKind(c, tok, kinds[i])
			}
			data = append(data, c)
		}
		for range 2 {
			if m, err := pc.ReadMsg(); err != nil {
				t.Fatal(err)
			} else if _, ok := m.(*blockproto.DataAttached); !ok {
				t.Fatalf("got %s, want DataAttached", m.Type())
			}
		}
		return data
	}

	pc, w := e.kindSession(t, blockproto.CapTCP|blockproto.CapDataKinds)
	if w.SmallRead != engine.DefaultSmallRead {
		t.Fatalf("Welcome.SmallRead %d, want %d", w.SmallRead, engine.DefaultSmallRead)
	}
	data := attach(pc, w, []blockproto.DataKind{blockproto.DataDevmem, blockproto.DataPlain})
	for _, c := range []struct {
		rd   blockproto.Read
		want uint16
	}{
		{blockproto.Read{ID: 1, Volume: "vol", Length: 4096}, 1},
		{blockproto.Read{ID: 2, Volume: "vol", Length: 3 << 20}, 0},
		{blockproto.Read{ID: 3, Volume: "vol", Length: 2 << 20, Flags: blockproto.ReadPlain}, 1},
		{blockproto.Read{ID: 4, Volume: "vol", Length: 4096, Flags: 0x80}, 1}, // unknown flag bits are ignored
	} {
		for _, on := range readOn(t, pc, data, &c.rd) {
			if on != c.want {
				t.Fatalf("read %d (%d bytes, flags %#x): extent on data connection %d, want %d", c.rd.ID, c.rd.Length, c.rd.Flags, on, c.want)
			}
		}
	}

	// Old style: the server reads no kind byte and sends no threshold.
	pc, w = e.kindSession(t, blockproto.CapTCP)
	if w.SmallRead != 0 {
		t.Fatalf("Welcome to an old client carries SmallRead %d", w.SmallRead)
	}
	data = attach(pc, w, nil)
	used := map[uint16]bool{}
	for id := range uint64(8) {
		for _, on := range readOn(t, pc, data, &blockproto.Read{ID: id + 1, Volume: "vol", Length: 4096 << (2 * (id % 2))}) {
			used[on] = true
		}
	}
	if len(used) == 0 {
		t.Fatal("old-style session: no extent announced")
	}

	// A kind byte no version defines closes the data connection unanswered.
	pc, w = e.kindSession(t, blockproto.CapTCP|blockproto.CapDataKinds)
	c := e.rawConn(t)
	blockproto.WriteDataPreambleKind(c, w.Tokens[0], blockproto.MaxDataKind+1)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("bad kind: read %d, %v; want EOF", n, err)
	}
	pc.WriteMsg(&blockproto.Ping{Seq: 1})
	if m, err := pc.ReadMsg(); err != nil || m.Type() != blockproto.TypePong {
		t.Fatalf("after a bad data connection the session answers %v, %v; want Pong", m, err)
	}
}

// TestPathResume: engine.Client resumes a batch of small and large reads
// over mixed data connections when the session is lost under it; bytes
// are exact, and the paths are still named.
func TestPathResume(t *testing.T) {
	tr := &crashing{}
	tr.left.Store(20)
	e := newEnv(t, envOpts{transport: tr})
	want := e.volume("vol", 8<<20, 64<<10)
	p := hostmem.New()
	defer p.Close()
	path, err := choose.Client(context.Background(), choose.ClientOptions{Mode: choose.Emulate, Server: e.addr, Provider: p, DataConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	cfg := engine.Config{Key: testKey, Provider: p, Transport: path.Transport, PlainTransport: path.Plain, DataConns: 2,
		Verify: engine.VerifyRequire}
	cl := engine.NewClient(e.addr, cfg, engine.ResumeOptions{Backoff: time.Millisecond})
	defer cl.Close() // on failure; closing twice is harmless
	buf, err := p.Alloc(context.Background(), int64(len(want))+3*4096, false)
	if err != nil {
		t.Fatal(err)
	}
	mem, _ := p.Bytes(buf.ID)
	ranges := []engine.Range{{Offset: 100, Length: 4096}, {Offset: 0, Length: int64(len(want))}, {Offset: 7 << 20, Length: 4096}, {Offset: 1, Length: 4096}}
	res, err := cl.Read(context.Background(), "vol", ranges, buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	var off int64
	for i, rg := range ranges {
		if !bytes.Equal(mem[off:off+rg.Length], want[rg.Offset:rg.Offset+rg.Length]) {
			t.Fatalf("range %d: bytes differ", i)
		}
		off += rg.Length
		r := res[i]
		if r.Reconnects != 1 {
			t.Errorf("range %d: %d reconnects, want 1", i, r.Reconnects)
		}
		if rg.Length == 4096 && (r.Transport != transport.TCP || !strings.HasPrefix(r.FallbackReason, engine.ReasonSmallRead+": ")) {
			t.Errorf("small range %d: %q %q, want tcp small-read", i, r.Transport, r.FallbackReason)
		}
		if rg.Length > 4096 && !strings.HasPrefix(r.Transport, transport.DevmemEmulated) {
			t.Errorf("large range %d: %q, want devmem-emulated first", i, r.Transport)
		}
	}
	if err := cl.Close(); err != nil {
		t.Errorf("client close: %v", err)
	}
	if err := path.Close(); err != nil {
		t.Errorf("path close: %v", err)
	}
	if err := path.SoftNIC.Check(); err != nil {
		t.Errorf("software NIC: %v", err)
	}
}

// BenchmarkReadPath measures one read at a time, of each size, over the
// software NIC's devmem RX and over a plain TCP connection of the same
// session (Request.Plain), with the server's threshold off. It is the
// measurement behind DefaultSmallRead (docs/devmem.md, "Per-read path"):
//
//	go test ./engine -run '^$' -bench ReadPath -benchtime 300x -count 3
func BenchmarkReadPath(b *testing.B) {
	for _, size := range []int64{4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20} {
		for _, plain := range []bool{false, true} {
			name := transport.DevmemEmulated
			if plain {
				name = transport.TCP
			}
			b.Run(fmt.Sprintf("size=%dKiB/%s", size>>10, name), func(b *testing.B) {
				benchReadPath(b, size, plain)
			})
		}
	}
}

func benchReadPath(b *testing.B, size int64, plain bool) {
	store, err := catalog.OpenStore(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	const volSize = 64 << 20
	if _, err := store.Create(context.Background(), "vol", volSize, 1<<20, catalog.FillRandom); err != nil {
		b.Fatal(err)
	}
	srv, err := engine.NewServer(engine.ServerConfig{Key: testKey, Volumes: store, Transport: &tcp.Transport{}, SmallRead: -1})
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	p := hostmem.New()
	defer p.Close()
	path, err := choose.Client(context.Background(), choose.ClientOptions{Mode: choose.Emulate, Server: l.Addr().String(), Provider: p, DataConns: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer path.Close()
	s, err := engine.Dial(context.Background(), l.Addr().String(), engine.Config{Key: testKey, Provider: p,
		Transport: path.Transport, PlainTransport: path.Plain, DataConns: 1, Verify: engine.VerifyRequire})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	buf, err := p.Alloc(context.Background(), size, false)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for i := range b.N {
		// Each read starts at another place, inside one extent.
		off := int64(i) * (1 << 20) % volSize
		h := s.Submit(context.Background(), []engine.Request{{Volume: "vol", Offset: off, Length: size, Dst: buf, Plain: plain}})
		if r := h[0].Result(); r.Err != nil {
			b.Fatal(r.Err)
		} else if want := map[bool]string{false: transport.DevmemEmulated, true: transport.TCP}[plain]; r.Transport != want {
			b.Fatalf("read went %s, want %s", r.Transport, want)
		}
	}
}
