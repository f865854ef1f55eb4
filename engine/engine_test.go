package engine_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/internal/fdcount"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// env is a server on loopback with one or more volumes.
type env struct {
	t     *testing.T
	addr  string
	srv   *engine.Server
	store *catalog.Store
	done  chan error
}

type envOpts struct {
	transport transport.SendTransport
	cfg       func(*engine.ServerConfig)
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	checkLeaks(t)
	store, err := catalog.OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.transport == nil {
		o.transport = &tcp.Transport{}
	}
	cfg := engine.ServerConfig{Key: testKey, Volumes: store, Transport: o.transport, Name: "test"}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	srv, err := engine.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, addr: l.Addr().String(), srv: srv, store: store, done: make(chan error, 1)}
	go func() { e.done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-e.done; !errors.Is(err, engine.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		store.Close()
	})
	return e
}

// volume creates a random volume and returns its bytes.
func (e *env) volume(name string, size, extent int64) []byte {
	e.t.Helper()
	v, err := e.store.Create(context.Background(), name, size, extent, catalog.FillRandom)
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := os.ReadFile(v.Backing)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// corruptVolume creates a random 1 MiB volume of 64 KiB extents whose
// block CRCs cover bs bytes each, flips a bit of its byte at off on disk,
// and returns its bytes as written.
func (e *env) corruptVolume(name string, bs, off int64) []byte {
	e.t.Helper()
	v, err := e.store.Create(context.Background(), name, 1<<20, 64<<10, catalog.FillRandom, catalog.WithBlockSize(bs))
	if err != nil {
		e.t.Fatal(err)
	}
	want, err := os.ReadFile(v.Backing)
	if err != nil {
		e.t.Fatal(err)
	}
	f, err := os.OpenFile(v.Backing, os.O_RDWR, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{want[off] ^ 0x10}, off); err != nil {
		e.t.Fatal(err)
	}
	return want
}

type client struct {
	*engine.Session
	p *hostmem.Provider
}

func (e *env) dial(mod func(*engine.Config)) (*client, error) {
	p := hostmem.New()
	cfg := engine.Config{Key: testKey, Provider: p, Transport: &tcp.Transport{}, DataConns: 3, Verify: engine.VerifyRequire, Name: "t"}
	if mod != nil {
		mod(&cfg)
	}
	s, err := engine.Dial(context.Background(), e.addr, cfg)
	if err != nil {
		p.Close()
		return nil, err
	}
	return &client{s, p}, nil
}

func (e *env) client(mod func(*engine.Config)) *client {
	e.t.Helper()
	c, err := e.dial(mod)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close(); c.p.Close() })
	return c
}

func (c *client) alloc(t *testing.T, n int64) (memory.Buffer, []byte) {
	t.Helper()
	b, err := c.p.Alloc(context.Background(), n, false)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := c.p.Bytes(b.ID)
	if err != nil {
		t.Fatal(err)
	}
	return b, mem
}

// checkLeaks fails the test if it leaves goroutines or file descriptors
// behind. Cleanups run last-in first-out, so this one runs after the
// test's own teardown.
func checkLeaks(t *testing.T) {
	t.Helper()
	fds := fdcount.Open(t)
	gs := runtime.NumGoroutine()
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		// Goroutines that were told to stop may still be unwinding:
		// yield until they are gone, up to a bound.
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > gs && time.Now().Before(deadline) {
			runtime.Gosched()
		}
		if n := runtime.NumGoroutine(); n > gs {
			buf := make([]byte, 1<<20)
			t.Errorf("leaked %d goroutines:\n%s", n-gs, buf[:runtime.Stack(buf, true)])
		}
		if n := fdcount.Open(t); n > fds {
			t.Errorf("leaked %d file descriptors", n-fds)
		}
	})
}

func TestFetchWholeVolume(t *testing.T) {
	e := newEnv(t, envOpts{})
	// An odd size: the last extent is short.
	want := e.volume("vol", 8<<20+12345, 256<<10)
	c := e.client(nil)
	buf, mem := c.alloc(t, int64(len(want)))
	res, err := c.Read(context.Background(), "vol", []engine.Range{{Offset: 0, Length: int64(len(want))}}, buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mem, want) {
		t.Fatal("fetched bytes differ from the volume")
	}
	r := res[0]
	if r.State != engine.StateDone || r.Bytes != int64(len(want)) || r.Transport != transport.TCP {
		t.Fatalf("result %+v", r)
	}
	if len(r.Extents) != 33 {
		t.Fatalf("got %d extents, want 33", len(r.Extents))
	}
	conns := map[int]bool{}
	for _, x := range r.Extents {
		conns[x.DataConn] = true
	}
	if len(conns) != 3 {
		t.Errorf("extents used %d data connections, want all 3", len(conns))
	}
}

// TestOnExtentError: an error from OnExtent fails the request with it, and
// the session stays usable.
func TestOnExtentError(t *testing.T) {
	e := newEnv(t, envOpts{})
	want := e.volume("vol", 4<<20, 256<<10)
	c := e.client(nil)
	buf, mem := c.alloc(t, int64(len(want)))
	disk := errors.New("disk full")
	var calls atomic.Int32
	h := c.Submit(context.Background(), []engine.Request{{Volume: "vol", Length: int64(len(want)), Dst: buf,
		OnExtent: func(engine.ExtentTiming) error {
			calls.Add(1)
			return disk
		}}})[0]
	r := h.Result()
	if r.State != engine.StateFailed || !errors.Is(r.Err, disk) {
		t.Fatalf("read whose OnExtent failed: state %v, err %v; want failed with the callback's error", r.State, r.Err)
	}
	if calls.Load() == 0 {
		t.Fatal("OnExtent was never called")
	}
	if _, err := c.Read(context.Background(), "vol", []engine.Range{{Length: int64(len(want))}}, buf); err != nil {
		t.Fatalf("the session after a failed OnExtent: %v", err)
	}
	if !bytes.Equal(mem, want) {
		t.Fatal("bytes differ")
	}
}

func TestRandomRangesBatch(t *testing.T) {
	e := newEnv(t, envOpts{})
	want := e.volume("vol", 4<<20, 64<<10)
	c := e.client(nil)
	rng := mrand.New(mrand.NewPCG(1, 2))
	const n = 200
	reqs := make([]engine.Request, n)
	var total int64
	for i := range reqs {
		off := rng.Int64N(int64(len(want)) - 1)
		l := 1 + rng.Int64N(min(int64(len(want))-off, 300<<10))
		reqs[i] = engine.Request{Volume: "vol", Offset: off, Length: l, DstOff: total}
		total += l
	}
	buf, mem := c.alloc(t, total)
	for i := range reqs {
		reqs[i].Dst = buf
	}
	hs := c.Submit(context.Background(), reqs)
	for i, h := range hs {
		r := h.Result()
		if r.Err != nil {
			t.Fatalf("request %d: %v", i, r.Err)
		}
		q := reqs[i]
		if !bytes.Equal(mem[q.DstOff:q.DstOff+q.Length], want[q.Offset:q.Offset+q.Length]) {
			t.Fatalf("request %d [%d,+%d): bytes differ", i, q.Offset, q.Length)
		}
	}
}

func TestConcurrentClients(t *testing.T) {
	e := newEnv(t, envOpts{})
	want := e.volume("vol", 2<<20, 128<<10)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			c, err := e.dial(nil)
			if err != nil {
				errs <- err
				return
			}
			defer c.p.Close()
			defer c.Close()
			for range 4 {
				buf, _ := c.p.Alloc(context.Background(), int64(len(want)), false)
				if _, err := c.Read(context.Background(), "vol", []engine.Range{{0, int64(len(want))}}, buf); err != nil {
					errs <- err
					return
				}
				mem, _ := c.p.Bytes(buf.ID)
				if !bytes.Equal(mem, want) {
					errs <- errors.New("bytes differ")
					return
				}
				c.p.Free(context.Background(), buf.ID)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestListAndStat(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.volume("b", 8192, 4096)
	e.volume("a", 4096, 4096)
	c := e.client(nil)
	vols, err := c.Volumes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(vols) != 2 || vols[0].Name != "a" || vols[1].Name != "b" || vols[1].Size != 8192 {
		t.Fatalf("volumes %+v", vols)
	}
	st, err := c.Stat(context.Background(), "b")
	if err != nil || st.Size != 8192 || st.ExtentSize != 4096 {
		t.Fatalf("stat b: %+v, %v", st, err)
	}
	_, err = c.Stat(context.Background(), "nope")
	var pe *blockproto.Error
	if !errors.As(err, &pe) || pe.Code != blockproto.CodeNotFound {
		t.Fatalf("stat nope: %v, want a not-found error", err)
	}
	if _, err := c.Stat(context.Background(), "../escape"); err == nil {
		t.Fatal("stat of an escaping name succeeded")
	}
	// A failed stat does not end the session.
	if _, err := c.Stat(context.Background(), "a"); err != nil {
		t.Fatalf("session unusable after a failed stat: %v", err)
	}
}

func TestReadErrors(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.volume("vol", 64<<10, 4096)
	c := e.client(nil)
	buf, _ := c.alloc(t, 128<<10)
	cases := []struct {
		name   string
		volume string
		off, n int64
		code   blockproto.Code
	}{
		{"past end", "vol", 60 << 10, 8 << 10, blockproto.CodeOutOfRange},
		{"starts past end", "vol", 64 << 10, 1, blockproto.CodeOutOfRange},
		{"unknown volume", "nope", 0, 1, blockproto.CodeNotFound},
		{"escaping name", "../catalog.db", 0, 1, blockproto.CodeBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Read(context.Background(), tc.volume, []engine.Range{{tc.off, tc.n}}, buf)
			var pe *blockproto.Error
			if !errors.As(err, &pe) || pe.Code != tc.code {
				t.Fatalf("got %v, want code %s", err, tc.code)
			}
		})
	}
	// Bad requests are refused locally without hurting the session.
	if _, err := c.Read(context.Background(), "vol", []engine.Range{{0, 256 << 10}}, buf); !errors.Is(err, memory.ErrOutOfBounds) {
		t.Fatalf("read larger than the buffer: %v", err)
	}
	if _, err := c.Read(context.Background(), "vol", []engine.Range{{0, 4096}}, buf); err != nil {
		t.Fatalf("session unusable after errors: %v", err)
	}
}

func TestWrongKey(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.volume("vol", 4096, 4096)
	_, err := e.dial(func(c *engine.Config) { c.Key = []byte("not the key at all, not at all!!") })
	if !errors.Is(err, engine.ErrAuth) {
		t.Fatalf("dial with the wrong key: %v, want ErrAuth", err)
	}
	// The server stays up for the next client.
	if _, err := e.client(nil).Volumes(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// rawConn opens a TCP connection to the server.
func (e *env) rawConn(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// expectError reads the server's answer: an Error frame with code, then EOF.
func expectError(t *testing.T, c net.Conn, code blockproto.Code) {
	t.Helper()
	pc := blockproto.NewConn(c)
	m, err := pc.ReadMsg()
	if err != nil {
		t.Fatalf("want an error frame, got %v", err)
	}
	e, ok := m.(*blockproto.Error)
	if !ok || e.Code != code {
		t.Fatalf("got %#v, want error code %s", m, code)
	}
	if code == blockproto.CodeAuth && e.Message != "authentication failed" {
		t.Fatalf("auth error says %q: it must not say which check failed", e.Message)
	}
	// Unread input at close makes the kernel send a reset instead of FIN.
	if _, err := pc.ReadMsg(); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection not closed after the error: %v", err)
	}
}

// expectClosedSilently checks that the server closes c without writing.
func expectClosedSilently(t *testing.T, c net.Conn) {
	t.Helper()
	b, err := io.ReadAll(c)
	if len(b) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("server wrote %q (%v); want the connection closed without a write", b, err)
	}
}

func TestBadControlInput(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.volume("vol", 4096, 4096)
	preamble := func(c net.Conn) {
		if err := blockproto.WriteControlPreamble(c); err != nil {
			t.Fatal(err)
		}
	}
	// Not our magic: closed without a byte written (no echo of the input).
	t.Run("garbage", func(t *testing.T) {
		c := e.rawConn(t)
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		expectClosedSilently(t, c)
	})
	t.Run("reserved bytes", func(t *testing.T) {
		c := e.rawConn(t)
		c.Write([]byte{'B', 'X', 'C', blockproto.Version, 0, 0, 1, 0})
		expectClosedSilently(t, c)
	})
	t.Run("data connection of another version", func(t *testing.T) {
		c := e.rawConn(t)
		c.Write(append([]byte{'B', 'X', 'D', 9, 0, 0, 0, 0}, make([]byte, blockproto.TokenLen)...))
		expectClosedSilently(t, c)
	})
	t.Run("other version", func(t *testing.T) {
		c := e.rawConn(t)
		c.Write([]byte{'B', 'X', 'C', 9, 0, 0, 0, 0})
		expectError(t, c, blockproto.CodeVersion)
	})
	t.Run("oversized frame", func(t *testing.T) {
		c := e.rawConn(t)
		preamble(c)
		c.Write([]byte{0xff, 0xff, 0xff, 0xff, byte(blockproto.TypeHello)})
		expectError(t, c, blockproto.CodeAuth)
	})
	t.Run("unknown type", func(t *testing.T) {
		c := e.rawConn(t)
		preamble(c)
		c.Write([]byte{0, 0, 0, 1, 200})
		expectError(t, c, blockproto.CodeAuth)
	})
	t.Run("read before auth", func(t *testing.T) {
		c := e.rawConn(t)
		preamble(c)
		b, _ := blockproto.AppendFrame(nil, &blockproto.Read{ID: 1, Volume: "vol", Length: 1})
		c.Write(b)
		expectError(t, c, blockproto.CodeAuth)
	})
	t.Run("hello over the handshake frame limit", func(t *testing.T) {
		c := e.rawConn(t)
		preamble(c)
		frame := binary.BigEndian.AppendUint32(nil, blockproto.MaxHandshakeFrame+1)
		c.Write(append(frame, byte(blockproto.TypeHello)))
		expectError(t, c, blockproto.CodeAuth)
	})
	t.Run("truncated frame", func(t *testing.T) {
		c := e.rawConn(t)
		preamble(c)
		b, _ := blockproto.AppendFrame(nil, &blockproto.Hello{Client: "x"})
		c.Write(b[:len(b)-3])
		c.(*net.TCPConn).CloseWrite()
		expectError(t, c, blockproto.CodeAuth)
	})
	if _, err := e.client(nil).Volumes(context.Background()); err != nil {
		t.Fatalf("server unusable after bad input: %v", err)
	}
}

func TestDataTokens(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.volume("vol", 4096, 4096)
	closed := func(c net.Conn) {
		t.Helper()
		if n, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("data connection with a bad token: read %d, %v; want EOF", n, err)
		}
	}
	t.Run("forged", func(t *testing.T) {
		c := e.rawConn(t)
		tok, _ := blockproto.NewToken()
		blockproto.WriteDataPreamble(c, tok)
		closed(c)
	})
	t.Run("reused", func(t *testing.T) {
		// Run the handshake by hand to learn a token, use it, then reuse it.
		pc, tokens := e.handshake(t)
		tok := tokens[0]
		first := e.rawConn(t)
		blockproto.WriteDataPreamble(first, tok)
		if m, err := pc.ReadMsg(); err != nil || m.(*blockproto.DataAttached).Index != 0 {
			t.Fatalf("first use of the token: %v %v", m, err)
		}
		second := e.rawConn(t)
		blockproto.WriteDataPreamble(second, tok)
		closed(second)
	})
	t.Run("from another address", func(t *testing.T) {
		_, tokens := e.handshake(t)
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		c, err := d.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		blockproto.WriteDataPreamble(c, tokens[0])
		closed(c)
	})
	if _, err := e.client(nil).Volumes(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestDataTokensExpire is the defect where an unused token still attached a
// data connection long after Welcome.
func TestDataTokensExpire(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *engine.ServerConfig) { c.TokenTTL = time.Nanosecond }})
	_, tokens := e.handshake(t)
	c := e.rawConn(t)
	blockproto.WriteDataPreamble(c, tokens[0])
	if b, err := io.ReadAll(c); len(b) != 0 || err != nil {
		t.Fatalf("expired token: read %q, %v; want the connection closed without a write", b, err)
	}
}

// handshake authenticates a control connection by hand and returns it with
// its Welcome tokens.
func (e *env) handshake(t *testing.T) (*blockproto.Conn, [][blockproto.TokenLen]byte) {
	t.Helper()
	ctl := e.rawConn(t)
	pc := blockproto.NewConn(ctl)
	blockproto.WriteControlPreamble(ctl)
	nonce, _ := blockproto.NewNonce()
	pc.WriteMsg(&blockproto.Hello{Nonce: nonce, Client: "t"})
	m, err := pc.ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	ch := m.(*blockproto.Challenge)
	pc.WriteMsg(&blockproto.Auth{MAC: blockproto.ClientProof(testKey, nonce, ch.Nonce, ch.SessionID)})
	m, err = pc.ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	return pc, m.(*blockproto.Welcome).Tokens
}

// gate holds the server's sends: the first `free` extents go out, the rest
// wait until open is called. With cut, a held send then fails as a write
// that closing its connection ended, instead of sending.
type gate struct {
	tcp.Transport
	free   atomic.Int64
	opened chan struct{}
	once   sync.Once
	held   chan struct{} // receives once per held extent
	cut    bool
}

func newGate(free int64) *gate {
	g := &gate{opened: make(chan struct{}), held: make(chan struct{}, 1024)}
	g.free.Store(free)
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.opened) }) }

func (g *gate) NewSender(c net.Conn) (transport.Sender, error) {
	s, err := g.Transport.NewSender(c)
	return &gatedSender{s, g}, err
}

type gatedSender struct {
	transport.Sender
	g *gate
}

func (s *gatedSender) SendExtent(f *os.File, off, n int64) error {
	if s.g.free.Add(-1) < 0 {
		s.g.held <- struct{}{}
		<-s.g.opened
		if s.g.cut {
			return net.ErrClosed
		}
	}
	return s.Sender.SendExtent(f, off, n)
}

func TestDeadlineExpiresMidRead(t *testing.T) {
	g := newGate(2)
	e := newEnv(t, envOpts{transport: g})
	t.Cleanup(g.open)
	want := e.volume("vol", 4<<20, 64<<10)
	c := e.client(nil)
	buf, mem := c.alloc(t, int64(len(want)))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	h := c.Submit(ctx, []engine.Request{{Volume: "vol", Length: int64(len(want)), Dst: buf}})[0]
	<-g.held // the read is mid-way: two extents sent, the third held
	<-ctx.Done()
	g.open()
	r := h.Result()
	if r.State != engine.StateTimedOut || !errors.Is(r.Err, context.DeadlineExceeded) {
		t.Fatalf("state %s, err %v; want timed-out", r.State, r.Err)
	}
	// The session is still good.
	if _, err := c.Read(context.Background(), "vol", []engine.Range{{0, int64(len(want))}}, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mem, want) {
		t.Fatal("bytes differ after a timed-out read")
	}
}

func TestStalledServerEndsRequest(t *testing.T) {
	g := newGate(1)
	e := newEnv(t, envOpts{transport: g})
	t.Cleanup(g.open)
	e.volume("vol", 1<<20, 64<<10)
	c := e.client(func(c *engine.Config) { c.StallTimeout = 200 * time.Millisecond; c.DataConns = 1 })
	buf, _ := c.alloc(t, 1<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	h := c.Submit(ctx, []engine.Request{{Volume: "vol", Length: 1 << 20, Dst: buf}})[0]
	r := h.Result() // must not hang although the server never sends the rest
	if r.State != engine.StateTimedOut {
		t.Fatalf("state %s, want timed-out", r.State)
	}
	if err := c.Err(); !errors.Is(err, engine.ErrSessionClosed) || !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("session error %v, want a stalled data connection", err)
	}
}

func TestCancel(t *testing.T) {
	g := newGate(1)
	e := newEnv(t, envOpts{transport: g})
	t.Cleanup(g.open)
	want := e.volume("vol", 2<<20, 64<<10)
	c := e.client(nil)
	buf, mem := c.alloc(t, int64(len(want)))
	h := c.Submit(context.Background(), []engine.Request{{Volume: "vol", Length: int64(len(want)), Dst: buf}})[0]
	<-g.held
	h.Cancel()
	g.open()
	if r := h.Result(); r.State != engine.StateCancelled || !errors.Is(r.Err, context.Canceled) {
		t.Fatalf("state %s err %v, want cancelled", r.State, r.Err)
	}
	if _, err := c.Read(context.Background(), "vol", []engine.Range{{0, int64(len(want))}}, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mem, want) {
		t.Fatal("bytes differ after a cancelled read")
	}
}

func TestClientDisconnectMidTransfer(t *testing.T) {
	g := newGate(1)
	e := newEnv(t, envOpts{transport: g})
	t.Cleanup(g.open)
	want := e.volume("vol", 2<<20, 64<<10)
	c, err := e.dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	buf, _ := c.alloc(t, int64(len(want)))
	h := c.Submit(context.Background(), []engine.Request{{Volume: "vol", Length: int64(len(want)), Dst: buf}})[0]
	<-g.held
	c.Close()
	c.p.Close()
	if r := h.Result(); r.State != engine.StateFailed || !errors.Is(r.Err, engine.ErrSessionClosed) {
		t.Fatalf("state %s err %v", r.State, r.Err)
	}
	g.open()
	// A later client is served; the server's cleanup (checked by the
	// test's Close and leak check) must not hang on the dead session.
	c2 := e.client(nil)
	buf2, mem := c2.alloc(t, int64(len(want)))
	if _, err := c2.Read(context.Background(), "vol", []engine.Range{{0, int64(len(want))}}, buf2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mem, want) {
		t.Fatal("bytes differ")
	}
}

func TestChecksumMismatchDetected(t *testing.T) {
	e := newEnv(t, envOpts{})
	want := e.volume("vol", 1<<20, 64<<10)
	v, _ := e.store.Catalog().Get("vol")
	f, err := os.OpenFile(v.Backing, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{want[300<<10] ^ 0x10}, 300<<10) // extent 4
	f.Close()
	c := e.client(nil)
	buf, _ := c.alloc(t, int64(len(want)))
	_, err = c.Read(context.Background(), "vol", []engine.Range{{0, int64(len(want))}}, buf)
	if !errors.Is(err, engine.ErrChecksum) || !strings.Contains(err.Error(), "[262144,+65536)") {
		t.Fatalf("got %v, want a checksum error naming extent [262144,+65536)", err)
	}
	// The default mode checks too: a receiver checks every extent.
	ca := e.client(func(c *engine.Config) { c.Verify = engine.VerifyAuto })
	bufA, _ := ca.alloc(t, int64(len(want)))
	if _, err := ca.Read(context.Background(), "vol", []engine.Range{{0, int64(len(want))}}, bufA); !errors.Is(err, engine.ErrChecksum) {
		t.Fatalf("default verify mode: got %v, want a checksum error", err)
	}
	// Only with verification turned off does the read succeed (and return
	// the bad byte).
	c2 := e.client(func(c *engine.Config) { c.Verify = engine.VerifyOff })
	buf2, _ := c2.alloc(t, int64(len(want)))
	if _, err := c2.Read(context.Background(), "vol", []engine.Range{{0, int64(len(want))}}, buf2); err != nil {
		t.Fatal(err)
	}
}

// TestPartialReadOfCorruptInnerBlock: a partial read larger than blockd
// reads whole checks the blocks at its edges on the server; the blocks
// inside it go into the announced CRC as stored, unread, so a corrupt byte
// in one of them reaches the client, whose check refuses the read.
func TestPartialReadOfCorruptInnerBlock(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.corruptVolume("vol", 4<<10, 300<<10) // block [300K, 304K)
	c := e.client(func(c *engine.Config) { c.Verify = engine.VerifyAuto })
	r := engine.Range{Offset: 290 << 10, Length: 20 << 10} // edges [288K, 292K) and [308K, 312K) intact
	buf, _ := c.alloc(t, r.Length)
	if _, err := c.Read(context.Background(), "vol", []engine.Range{r}, buf); !errors.Is(err, engine.ErrChecksum) {
		t.Fatalf("read %+v over a corrupt inner block: %v, want ErrChecksum", r, err)
	}
}

// TestPartialReadOfCorruptExtent is the defect where a read covering part of
// an extent "verified" bytes corrupted on disk: the server announced a CRC
// recomputed from the disk. Now the server checks the extent against the
// CRC stored when it was written and refuses the read. The volume has one
// block CRC per extent, so every partial read reads its whole extent to
// check it; with smaller blocks the server checks only the blocks at a
// read's edges, and the client's check catches the rest
// (TestPartialReadOfCorruptInnerBlock).
func TestPartialReadOfCorruptExtent(t *testing.T) {
	e := newEnv(t, envOpts{})
	want := e.corruptVolume("vol", 64<<10, 300<<10) // extent 4
	c := e.client(func(c *engine.Config) { c.Verify = engine.VerifyAuto })
	for _, r := range []engine.Range{
		{Offset: 290 << 10, Length: 20 << 10},  // inside extent 4, over the bad byte
		{Offset: 257 << 10, Length: 4 << 10},   // inside extent 4, away from it
		{Offset: 200 << 10, Length: 100 << 10}, // partial extents 3 and 4, not the bad byte
	} {
		buf, _ := c.alloc(t, r.Length)
		_, err := c.Read(context.Background(), "vol", []engine.Range{r}, buf)
		var pe *blockproto.Error
		if !errors.As(err, &pe) || pe.Code != blockproto.CodeCorrupt || !strings.Contains(err.Error(), "does not match its stored crc32c") {
			t.Fatalf("partial read %+v of a corrupt extent: %v, want a corrupt error naming the stored crc32c", r, err)
		}
	}
	// Partial reads of intact extents still succeed, every extent checked.
	r := engine.Range{Offset: 70 << 10, Length: 100 << 10}
	buf, mem := c.alloc(t, r.Length)
	res, err := c.Read(context.Background(), "vol", []engine.Range{r}, buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mem, want[r.Offset:r.Offset+r.Length]) {
		t.Fatal("bytes differ")
	}
	if res[0].VerifiedExtents != 2 || res[0].UnverifiedExtents != 0 {
		t.Fatalf("verified %d, unverified %d extents; want 2 and 0", res[0].VerifiedExtents, res[0].UnverifiedExtents)
	}
}

func TestShutdownDrainsReads(t *testing.T) {
	g := newGate(1)
	e := newEnv(t, envOpts{transport: g})
	t.Cleanup(g.open)
	want := e.volume("vol", 1<<20, 64<<10)
	c := e.client(nil)
	buf, mem := c.alloc(t, int64(len(want)))
	h := c.Submit(context.Background(), []engine.Request{{Volume: "vol", Length: int64(len(want)), Dst: buf}})[0]
	<-g.held
	// Let later extents through, so probe reads issued before the drain
	// starts finish; the held extent keeps the first read in flight.
	g.free.Store(1 << 30)
	shut := make(chan error, 1)
	go func() { shut <- e.srv.Shutdown(context.Background()) }()
	// New reads are refused while draining; the one in flight finishes.
	probe, _ := c.alloc(t, 1)
	var err error
	for {
		_, err = c.Read(context.Background(), "vol", []engine.Range{{0, 1}}, probe)
		if err != nil {
			break
		}
	}
	if !errors.Is(err, engine.ErrDraining) {
		t.Fatalf("read while draining: %v, want ErrDraining", err)
	}
	g.open()
	if r := h.Result(); r.Err != nil {
		t.Fatalf("read in flight during shutdown: %v", r.Err)
	}
	if !bytes.Equal(mem, want) {
		t.Fatal("bytes differ")
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

func TestSessionLimit(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *engine.ServerConfig) { c.MaxSessions = 1 }})
	e.client(nil)
	_, err := e.dial(nil)
	var pe *blockproto.Error
	if !errors.As(err, &pe) || pe.Code != blockproto.CodeBusy {
		t.Fatalf("second session: %v, want busy", err)
	}
}

func TestRandomVolumeBytesAreRandom(t *testing.T) {
	// Guards the tests above: a volume of zeros would hide misplaced bytes.
	e := newEnv(t, envOpts{})
	b := e.volume("vol", 64<<10, 4096)
	zero := make([]byte, 4096)
	if bytes.Equal(b[:4096], zero) || bytes.Equal(b[:4096], b[4096:8192]) {
		t.Fatal("random fill is not random")
	}
}

// eventually waits up to 10s for cond, checking as goroutines run.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

// TestPendingConnectionsCapped is the defect where idle unauthenticated
// connections could take every file descriptor: past the per-host cap a new
// connection is closed at once, and the server stays usable.
func TestPendingConnectionsCapped(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *engine.ServerConfig) { c.MaxPendingPerHost = 3; c.HandshakeTimeout = time.Minute }})
	for range 3 {
		e.rawConn(t) // silent: holds a pending slot
	}
	eventually(t, "three pending connections", func() bool { return e.srv.Pending() == 3 })
	extra := e.rawConn(t)
	expectClosedSilently(t, extra)
	// Another address is not held back by this one's connections.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}
	c, err := d.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	eventually(t, "the other address admitted", func() bool { return e.srv.Pending() == 4 })
}

// TestReadsPerSessionCapped: a session over the server's read cap is
// answered busy instead of parking unbounded reads.
func TestReadsPerSessionCapped(t *testing.T) {
	g := newGate(0)
	e := newEnv(t, envOpts{transport: g, cfg: func(c *engine.ServerConfig) { c.MaxReads = 2 }})
	t.Cleanup(g.open)
	e.volume("vol", 64<<10, 4096)
	c := e.client(func(c *engine.Config) { c.MaxReads = 100 })
	buf, _ := c.alloc(t, 3*4096)
	hs := c.Submit(context.Background(), []engine.Request{
		{Volume: "vol", Length: 4096, Dst: buf},
		{Volume: "vol", Offset: 4096, Length: 4096, Dst: buf, DstOff: 4096},
		{Volume: "vol", Offset: 8192, Length: 4096, Dst: buf, DstOff: 8192},
	})
	r := hs[2].Result()
	var pe *blockproto.Error
	if !errors.As(r.Err, &pe) || pe.Code != blockproto.CodeBusy {
		t.Fatalf("third read: %v, want busy", r.Err)
	}
	g.open()
	for _, h := range hs[:2] {
		if r := h.Result(); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	// A client that keeps to the cap queues instead: every read succeeds.
	c2 := e.client(func(c *engine.Config) { c.MaxReads = 2 })
	want := make([]engine.Range, 16)
	for i := range want {
		want[i] = engine.Range{Offset: int64(i) * 4096, Length: 4096}
	}
	buf2, _ := c2.alloc(t, 64<<10)
	if _, err := c2.Read(context.Background(), "vol", want, buf2); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownIdleSession is the defect where an idle session held the
// shutdown for its whole timeout and the log then claimed reads were cut
// off: a client that does not hang up is closed after the grace, and
// Shutdown reports nothing cut off.
func TestShutdownIdleSession(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *engine.ServerConfig) { c.HangupGrace = 50 * time.Millisecond }})
	e.handshake(t) // an authenticated session that never reads nor hangs up
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v, want nil: nothing was in flight", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the idle session held the shutdown until its timeout")
	}
}

// TestShutdownReportsCutReads: when the timeout cuts reads off, Shutdown
// says how many, so blockd can log it and exit non-zero.
func TestShutdownReportsCutReads(t *testing.T) {
	g := newGate(0)
	// The held sender stands for a stuck socket write, which closing the
	// connection ends: it fails once Shutdown has counted the reads and
	// starts closing. (Let go to send instead, the rest of the read could
	// reach the client before the close, and the read succeed.)
	g.cut = true
	logs := &hookHandler{Handler: slog.DiscardHandler, hook: func(r slog.Record) {
		if strings.HasPrefix(r.Message, "shutdown timed out") {
			g.open()
		}
	}}
	e := newEnv(t, envOpts{transport: g, cfg: func(c *engine.ServerConfig) { c.Logger = slog.New(logs) }})
	t.Cleanup(g.open)
	e.volume("vol", 1<<20, 64<<10)
	c := e.client(nil)
	buf, _ := c.alloc(t, 1<<20)
	h := c.Submit(context.Background(), []engine.Request{{Volume: "vol", Length: 1 << 20, Dst: buf}})[0]
	<-g.held
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the timeout has already expired
	err := e.srv.Shutdown(ctx)
	var se *engine.ShutdownError
	if !errors.As(err, &se) || se.Reads != 1 || se.Sessions != 1 || !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: %v, want one read cut off in one session", err)
	}
	if r := h.Result(); r.Err == nil {
		t.Fatal("the cut-off read succeeded")
	}
}

// hookHandler calls hook for every record it handles.
type hookHandler struct {
	slog.Handler
	hook func(slog.Record)
}

func (h *hookHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *hookHandler) Handle(ctx context.Context, r slog.Record) error {
	h.hook(r)
	return nil
}

func (h *hookHandler) WithAttrs([]slog.Attr) slog.Handler { return h }

func (h *hookHandler) WithGroup(string) slog.Handler { return h }

// crashing sends n extents, then cuts every data connection of the server
// (once): the session ends under the read, as when blockd dies.
type crashing struct {
	tcp.Transport
	left    atomic.Int64
	mu      sync.Mutex
	conns   []net.Conn
	onCrash func() // runs before the connections are cut
}

func (c *crashing) NewSender(conn net.Conn) (transport.Sender, error) {
	s, err := c.Transport.NewSender(conn)
	c.mu.Lock()
	c.conns = append(c.conns, conn)
	c.mu.Unlock()
	return &crashingSender{s, c}, err
}

type crashingSender struct {
	transport.Sender
	c *crashing
}

func (s *crashingSender) SendExtent(f *os.File, off, n int64) error {
	if s.c.left.Add(-1) == -1 {
		s.c.mu.Lock()
		hook := s.c.onCrash
		s.c.mu.Unlock()
		if hook != nil {
			hook()
		}
		s.c.mu.Lock()
		for _, conn := range s.c.conns {
			conn.Close()
		}
		s.c.mu.Unlock()
		return errors.New("crashed")
	}
	return s.Sender.SendExtent(f, off, n)
}

// TestClientResumes: a session that ends under a read is re-dialled and
// only the extents that did not land checked are read again; a volume
// replaced meanwhile is never mixed; a server that never comes back fails
// the read naming every attempt.
func TestClientResumes(t *testing.T) {
	tr := &crashing{}
	tr.left.Store(20)
	e := newEnv(t, envOpts{transport: tr})
	want := e.volume("vol", 8<<20, 64<<10)
	p := hostmem.New()
	defer p.Close()
	cfg := engine.Config{Key: testKey, Provider: p, Transport: &tcp.Transport{}, DataConns: 2}
	cl := engine.NewClient(e.addr, cfg, engine.ResumeOptions{Backoff: time.Millisecond})
	defer cl.Close()
	buf, err := p.Alloc(context.Background(), int64(len(want)), false)
	if err != nil {
		t.Fatal(err)
	}
	mem, _ := p.Bytes(buf.ID)
	// Each extent is reported once it landed, with its bytes in place.
	var (
		mu       sync.Mutex
		reported = make(map[int64]int)
	)
	onExtent := func(x engine.ExtentTiming) error {
		if !bytes.Equal(mem[x.VolumeOffset:x.VolumeOffset+x.Length], want[x.VolumeOffset:x.VolumeOffset+x.Length]) {
			t.Errorf("extent at %d reported before its bytes landed", x.VolumeOffset)
		}
		mu.Lock()
		reported[x.VolumeOffset]++
		mu.Unlock()
		return nil
	}
	res, err := cl.Read(context.Background(), "vol", []engine.Range{{Offset: 0, Length: int64(len(want))}}, buf,
		&engine.ReadOptions{OnExtent: onExtent})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mem, want) {
		t.Fatal("resumed read: bytes differ")
	}
	if len(reported) != len(want)/(64<<10) {
		t.Errorf("%d extents reported, want %d", len(reported), len(want)/(64<<10))
	}
	for off, n := range reported {
		if n != 1 {
			t.Errorf("extent at %d reported %d times, want once: the kept extents are not read again", off, n)
		}
	}
	if res[0].Reconnects != 1 || res[0].VerifiedExtents != 128 || res[0].Bytes != int64(len(want)) {
		t.Fatalf("result: %d reconnects, %d verified extents, %d bytes; want 1, 128, %d",
			res[0].Reconnects, res[0].VerifiedExtents, res[0].Bytes, len(want))
	}

	// Replaced while reconnecting: refused, or restarted when asked.
	tr.left.Store(5)
	replace := func() {
		if _, err := e.store.Write(context.Background(), "vol", int64(len(want)), 64<<10, bytes.NewReader(want), true); err != nil {
			t.Error(err)
		}
	}
	tr.mu.Lock()
	tr.onCrash = replace // replaced before the session is cut
	tr.mu.Unlock()
	cl2 := engine.NewClient(e.addr, cfg, engine.ResumeOptions{Backoff: time.Millisecond})
	defer cl2.Close()
	_, err = cl2.Read(context.Background(), "vol", []engine.Range{{Offset: 0, Length: int64(len(want))}}, buf, nil)
	if !errors.Is(err, engine.ErrVolumeReplaced) {
		t.Fatalf("read across a replace: %v, want ErrVolumeReplaced", err)
	}

	// A server that never comes back: the read fails, naming each attempt.
	e.srv.Close()
	cl3 := engine.NewClient(e.addr, cfg, engine.ResumeOptions{Attempts: 2, Backoff: time.Millisecond})
	defer cl3.Close()
	_, err = cl3.Read(context.Background(), "vol", []engine.Range{{Offset: 0, Length: 4096}}, buf, nil)
	if err == nil || !strings.Contains(err.Error(), "after 2 attempts to reconnect") || !strings.Contains(err.Error(), "1: ") || !strings.Contains(err.Error(), "2: ") {
		t.Fatalf("server gone: %v, want an error naming both attempts", err)
	}
}

// TestFailoverClient: a read from a holder that dies under it resumes from
// the next holder, where the bytes stopped, and stays there; a holder
// whose copy has another generation than the recorded one is never read.
func TestFailoverClient(t *testing.T) {
	tr := &crashing{}
	tr.left.Store(20)
	a := newEnv(t, envOpts{transport: tr})
	b := newEnv(t, envOpts{})
	want := a.volume("vol", 8<<20, 64<<10)
	if _, err := b.store.Write(context.Background(), "vol", int64(len(want)), 64<<10, bytes.NewReader(want), false); err != nil {
		t.Fatal(err)
	}
	stat := func(e *env) uint64 {
		v, err := e.store.Get("vol")
		if err != nil {
			t.Fatal(err)
		}
		return v.Generation
	}
	// A dies for good: its listener is gone before the client re-dials.
	tr.onCrash = func() {
		go a.srv.Close()
		for {
			c, err := net.Dial("tcp", a.addr)
			if err != nil {
				return
			}
			c.Close()
		}
	}
	p := hostmem.New()
	defer p.Close()
	cfg := engine.Config{Key: testKey, Provider: p, Transport: &tcp.Transport{}, DataConns: 2}
	holders := []engine.Holder{{Addr: a.addr, Generation: stat(a)}, {Addr: b.addr, Generation: stat(b)}}
	cl := engine.NewFailoverClient(holders, cfg, engine.ResumeOptions{Backoff: time.Millisecond})
	defer cl.Close()
	buf, err := p.Alloc(context.Background(), int64(len(want)), false)
	if err != nil {
		t.Fatal(err)
	}
	mem, _ := p.Bytes(buf.ID)
	res, err := cl.Read(context.Background(), "vol", []engine.Range{{Length: int64(len(want))}}, buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mem, want) {
		t.Fatal("bytes read across a failover differ")
	}
	rc := cl.Reconnects()
	if res[0].Reconnects != 1 || len(rc) != 1 || rc[0].Addr != b.addr {
		t.Fatalf("failover: %d reconnects %+v, want one, to %s", res[0].Reconnects, rc, b.addr)
	}
	if s, err := cl.Session(context.Background()); err != nil || s.Addr() != b.addr {
		t.Fatalf("session after failover: %v, want one with %s", err, b.addr)
	}
	if _, err := cl.Read(context.Background(), "vol", []engine.Range{{Length: 4096}}, buf, nil); err != nil {
		t.Fatalf("a read after the failover: %v", err)
	}
	if n := len(cl.Reconnects()); n != 1 {
		t.Fatalf("%d reconnects after a read from the holder that works; want it kept", n)
	}

	// A copy of another generation than recorded: refused.
	stale := engine.NewFailoverClient([]engine.Holder{{Addr: b.addr, Generation: stat(b) + 1}}, cfg, engine.ResumeOptions{})
	defer stale.Close()
	if _, err := stale.Read(context.Background(), "vol", []engine.Range{{Length: 4096}}, buf, nil); !errors.Is(err, engine.ErrVolumeReplaced) {
		t.Fatalf("a holder of another generation: %v, want ErrVolumeReplaced", err)
	}
}

// TestClientChecksGenerationPerSession: the reads of one caller never mix
// two generations: a read on a live session asks the server for the
// generation it expects, and after a lost session the Client checks it
// again, even for a read that starts on the new session with the
// generation the caller learnt on the old one.
func TestClientChecksGenerationPerSession(t *testing.T) {
	e := newEnv(t, envOpts{})
	want := e.volume("vol", 1<<20, 64<<10)
	p := hostmem.New()
	defer p.Close()
	cl := engine.NewClient(e.addr, engine.Config{Key: testKey, Provider: p, Transport: &tcp.Transport{}, DataConns: 1},
		engine.ResumeOptions{Backoff: time.Millisecond})
	defer cl.Close()
	buf, err := p.Alloc(context.Background(), int64(len(want)), false)
	if err != nil {
		t.Fatal(err)
	}
	mem, _ := p.Bytes(buf.ID)
	copy(mem, want) // what the first generation put there
	s, err := cl.Session(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	vs, err := s.Stat(context.Background(), "vol")
	if err != nil {
		t.Fatal(err)
	}
	opts := &engine.ReadOptions{Generation: vs.Generation}
	if _, err := cl.Read(context.Background(), "vol", []engine.Range{{Length: 4096}}, buf, opts); err != nil {
		t.Fatal(err)
	}
	// The volume is replaced between two reads on one session: the
	// server refuses the second, which asks for the old generation.
	if _, err := e.store.Write(context.Background(), "vol", int64(len(want)), 64<<10, bytes.NewReader(make([]byte, len(want))), true); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Read(context.Background(), "vol", []engine.Range{{Offset: 4096, Length: 4096}}, buf, opts); !errors.Is(err, engine.ErrVolumeReplaced) {
		t.Fatalf("a read of a volume replaced on a live session: %v, want ErrVolumeReplaced", err)
	}
	if !bytes.Equal(mem[:4096], want[:4096]) { // a Client read places from dst offset 0
		t.Fatal("bytes of the new generation were placed")
	}
	// And between two reads with the session lost as well.
	s.Close()
	if _, err := cl.Read(context.Background(), "vol", []engine.Range{{Offset: 4096, Length: 4096}}, buf, opts); !errors.Is(err, engine.ErrVolumeReplaced) {
		t.Fatalf("a read on a new session of a replaced volume: %v, want ErrVolumeReplaced", err)
	}
}

// A Client read with a destination offset places its ranges one after
// another from that offset and leaves the bytes before it alone.
func TestClientReadDstOffset(t *testing.T) {
	e := newEnv(t, envOpts{})
	want := e.volume("vol", 1<<20, 64<<10)
	p := hostmem.New()
	defer p.Close()
	cl := engine.NewClient(e.addr, engine.Config{Key: testKey, Provider: p, Transport: &tcp.Transport{}, DataConns: 2},
		engine.ResumeOptions{Backoff: time.Millisecond})
	defer cl.Close()
	buf, err := p.Alloc(context.Background(), 3<<16, false)
	if err != nil {
		t.Fatal(err)
	}
	mem, _ := p.Bytes(buf.ID)
	for i := range mem {
		mem[i] = 0xee
	}
	ranges := []engine.Range{{Offset: 4096, Length: 1 << 16}, {Offset: 1 << 19, Length: 1000}}
	if _, err := cl.Read(context.Background(), "vol", ranges, buf, &engine.ReadOptions{DstOffset: 777}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mem[:777], bytes.Repeat([]byte{0xee}, 777)) {
		t.Fatal("bytes before the destination offset were written")
	}
	if !bytes.Equal(mem[777:777+1<<16], want[4096:4096+1<<16]) || !bytes.Equal(mem[777+1<<16:777+1<<16+1000], want[1<<19:1<<19+1000]) {
		t.Fatal("ranges not placed from the destination offset")
	}
	if _, err := cl.Read(context.Background(), "vol", ranges, buf, &engine.ReadOptions{DstOffset: -1}); err == nil {
		t.Fatal("a negative destination offset was accepted")
	}
}

// TestOnDone: OnDone runs once per request, after Done is closed and with
// no engine lock held, so it can Cancel its own handle and Submit the next
// read (a chain of reads, each started from the last one's OnDone, as
// blockcat bench does); it runs for reads whose bytes come inline (4 KiB),
// on data connections (256 KiB), refused inside Submit, and cancelled.
func TestOnDone(t *testing.T) {
	e := newEnv(t, envOpts{})
	want := e.volume("vol", 4<<20, 64<<10)
	c := e.client(nil)
	for _, size := range []int64{4 << 10, 256 << 10} {
		const chain = 40
		buf, mem := c.alloc(t, chain*size)
		var (
			mu    sync.Mutex
			calls = map[*engine.Handle]int{}
			errs  []error
		)
		finished := make(chan struct{})
		var submit func(i int)
		submit = func(i int) {
			off := int64(i) * 65536 % (int64(len(want)) - size)
			c.Submit(context.Background(), []engine.Request{{Volume: "vol", Offset: off, Length: size, Dst: buf, DstOff: int64(i) * size,
				OnDone: func(h *engine.Handle) {
					select {
					case <-h.Done():
					default:
						t.Errorf("read %d: OnDone before Done closed", i)
					}
					h.Cancel() // takes the request's lock: deadlocks if OnDone held it
					r := h.Result()
					mu.Lock()
					calls[h]++
					if r.Err != nil {
						errs = append(errs, r.Err)
					} else if !bytes.Equal(mem[int64(i)*size:int64(i+1)*size], want[off:off+size]) {
						errs = append(errs, fmt.Errorf("read %d: bytes differ", i))
					}
					mu.Unlock()
					if i+1 < chain {
						submit(i + 1)
					} else {
						close(finished)
					}
				}}})
		}
		submit(0)
		<-finished
		mu.Lock()
		if len(calls) != chain || len(errs) != 0 {
			t.Fatalf("%d-byte chain: OnDone for %d handles, errors %v", size, len(calls), errs)
		}
		for _, n := range calls {
			if n != 1 {
				t.Fatalf("%d-byte chain: OnDone called %d times for one handle", size, n)
			}
		}
		mu.Unlock()
	}
	// Refused at once, and cancelled before it started: OnDone still runs,
	// once, inside Submit.
	buf, _ := c.alloc(t, 4096)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var n atomic.Int32
	for _, q := range []struct {
		ctx context.Context
		len int64
	}{{context.Background(), -1}, {ctx, 4096}} {
		h := c.Submit(q.ctx, []engine.Request{{Volume: "vol", Length: q.len, Dst: buf, OnDone: func(h *engine.Handle) {
			if h.Result().Err == nil {
				t.Error("a refused or cancelled read ended without an error")
			}
			n.Add(1)
		}}})[0]
		<-h.Done()
	}
	if n.Load() != 2 {
		t.Fatalf("OnDone ran %d times for 2 reads that ended inside Submit", n.Load())
	}
}

// TestOnDoneRefillsAtDepth: seven chains of small reads, each read's
// OnDone submitting its chain's next, as blockcat bench does. The control
// reader holds the Reads submitted while it dispatches a burst of the
// server's frames and writes them when the burst is read (holdReads):
// none may be left behind, whether its burst ended on a held one or not.
func TestOnDoneRefillsAtDepth(t *testing.T) {
	e := newEnv(t, envOpts{})
	want := e.volume("vol", 1<<20, 64<<10)
	c := e.client(nil)
	const depth, per, size = 7, 50, 4 << 10
	buf, mem := c.alloc(t, depth*size)
	var (
		wg   sync.WaitGroup
		bad  atomic.Int32
		next func(slot, i int)
	)
	next = func(slot, i int) {
		off := int64((slot*depth+i)*size) % int64(len(want))
		c.Submit(context.Background(), []engine.Request{{Volume: "vol", Offset: off, Length: size, Dst: buf, DstOff: int64(slot * size),
			OnDone: func(h *engine.Handle) {
				if h.Result().Err != nil || !bytes.Equal(mem[slot*size:(slot+1)*size], want[off:off+size]) {
					bad.Add(1)
				}
				if i+1 < per+slot { // chains of different lengths: the last reads come one at a time
					next(slot, i+1)
				} else {
					wg.Done()
				}
			}}})
	}
	wg.Add(depth)
	for slot := range depth {
		next(slot, 0)
	}
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d reads failed or brought the wrong bytes", n)
	}
}
