package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// gate holds the server's sends of extents of the volumes it names until
// that volume is opened.
type gate struct {
	tcp.Transport
	mu   sync.Mutex
	hold map[string]chan struct{} // volume -> closed when opened
	held chan string              // receives the volume of each held extent
}

func newGate(volumes ...string) *gate {
	g := &gate{hold: map[string]chan struct{}{}, held: make(chan string, 1024)}
	for _, v := range volumes {
		g.hold[v] = make(chan struct{})
	}
	return g
}

// open lets the extents of volume go.
func (g *gate) open(volume string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ch, ok := g.hold[volume]; ok {
		close(ch)
		delete(g.hold, volume)
	}
}

func (g *gate) openAll() {
	for _, v := range slices.Collect(maps.Keys(g.hold)) {
		g.open(v)
	}
}

func (g *gate) NewSender(c net.Conn) (transport.Sender, error) {
	s, err := g.Transport.NewSender(c)
	return &gatedSender{s, g}, err
}

type gatedSender struct {
	transport.Sender
	g *gate
}

func (s *gatedSender) SendExtent(f *os.File, off, n int64) error {
	s.g.mu.Lock()
	var wait chan struct{}
	var vol string
	for v, ch := range s.g.hold {
		if strings.HasPrefix(filepath.Base(f.Name()), v+".") {
			wait, vol = ch, v
		}
	}
	s.g.mu.Unlock()
	if wait != nil {
		s.g.held <- vol
		<-wait
	}
	return s.Sender.SendExtent(f, off, n)
}

// env is a blockd engine server on loopback and an agent serving a socket.
type env struct {
	t      *testing.T
	server string
	store  *catalog.Store
	agent  *Agent
	sock   string
}

func newEnv(t *testing.T, send transport.SendTransport) *env {
	t.Helper()
	return newEnvWith(t, send, nil)
}

// newEnvWith is newEnv with the agent's Config changed by config.
func newEnvWith(t *testing.T, send transport.SendTransport, config func(*Config)) *env {
	t.Helper()
	store, err := catalog.OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if send == nil {
		send = &tcp.Transport{}
	}
	srv, err := engine.NewServer(engine.ServerConfig{Key: testKey, Volumes: store, Transport: send, Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	cfg := Config{Key: testKey, DataConns: 2, Verify: engine.VerifyRequire, ChunkSize: 1 << 20}
	if config != nil {
		config(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ul, err := Listen(sock, 0)
	if err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Serve(ul) }()
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("agent Close: %v", err)
		}
		if err := <-agentDone; err != nil {
			t.Errorf("Serve: %v", err)
		}
		srv.Close()
		<-served
		store.Close()
	})
	return &env{t: t, server: l.Addr().String(), store: store, agent: a, sock: sock}
}

func (e *env) volume(name string, size int64) []byte {
	e.t.Helper()
	v, err := e.store.Create(context.Background(), name, size, 256<<10, catalog.FillRandom)
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := os.ReadFile(v.Backing)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// client is a test application speaking the local protocol.
type client struct {
	t   *testing.T
	c   *net.UnixConn
	seq uint64
}

func (e *env) dial(hello bool) *client {
	e.t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: e.sock, Net: "unixpacket"})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	cl := &client{t: e.t, c: c}
	if hello {
		cl.ok(map[string]any{"op": "hello", "version": Version, "client": "test"})
	}
	return cl
}

// sendRaw sends one message with fds.
func (c *client) sendRaw(b []byte, fds ...int) {
	c.t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.c.WriteMsgUnix(b, oob, nil); err != nil {
		c.t.Fatal(err)
	}
}

// reply is an answer of the agent.
type reply struct {
	Seq         uint64          `json:"seq"`
	OK          bool            `json:"ok"`
	Error       *ProtoError     `json:"error"`
	Handle      uint64          `json:"handle"`
	IDs         []uint64        `json:"ids"`
	Completions []Completion    `json:"completions"`
	Pending     int             `json:"pending"`
	Cancelled   int             `json:"cancelled"`
	SizeBytes   int64           `json:"size_bytes"`
	Raw         json.RawMessage `json:"-"`
}

func (c *client) recv() reply {
	c.t.Helper()
	buf := make([]byte, MaxMessage)
	c.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := c.c.Read(buf)
	if err != nil {
		c.t.Fatal(err)
	}
	var r reply
	if err := json.Unmarshal(buf[:n], &r); err != nil {
		c.t.Fatalf("reply %q: %v", buf[:n], err)
	}
	r.Raw = buf[:n]
	return r
}

// call sends a request (seq filled in) and returns the reply.
func (c *client) call(m map[string]any, fds ...int) reply {
	c.t.Helper()
	c.seq++
	m["seq"] = c.seq
	b, _ := json.Marshal(m)
	c.sendRaw(b, fds...)
	r := c.recv()
	if r.Seq != c.seq {
		c.t.Fatalf("reply to seq %d, want %d: %s", r.Seq, c.seq, r.Raw)
	}
	return r
}

func (c *client) ok(m map[string]any, fds ...int) reply {
	c.t.Helper()
	r := c.call(m, fds...)
	if !r.OK {
		c.t.Fatalf("%v: %+v", m["op"], r.Error)
	}
	return r
}

func (c *client) refused(code string, m map[string]any, fds ...int) reply {
	c.t.Helper()
	r := c.call(m, fds...)
	if r.OK || r.Error == nil || r.Error.Code != code {
		c.t.Fatalf("%v: reply %s, want error %s", m["op"], r.Raw, code)
	}
	return r
}

// memfd makes a sealed memfd of size bytes, mapped here.
func memfd(t *testing.T, size int) (int, []byte) {
	t.Helper()
	fd, err := unix.MemfdCreate("blockxfer-test", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return fd, mem
}

func (c *client) register(fd, size int) uint64 {
	c.t.Helper()
	return c.ok(map[string]any{"op": "register", "kind": "fd", "size": size}, fd).Handle
}

// waitAll collects the completions of ids.
func (c *client) waitAll(ids []uint64) map[uint64]Completion {
	c.t.Helper()
	got := map[uint64]Completion{}
	for len(ids) > 0 {
		r := c.ok(map[string]any{"op": "wait", "ids": ids, "timeout_ms": 20000})
		if len(r.Completions) == 0 {
			c.t.Fatalf("wait timed out with %d of %d completions", len(got), len(ids))
		}
		for _, cp := range r.Completions {
			got[cp.ID] = cp
		}
		var left []uint64
		for _, id := range ids {
			if _, ok := got[id]; !ok {
				left = append(left, id)
			}
		}
		ids = left
	}
	return got
}

func rd(server, volume string, off, n int64, handle uint64, dstOff int64, tag string) map[string]any {
	return map[string]any{"server": server, "volume": volume, "offset": off, "length": n, "handle": handle, "dst_offset": dstOff, "tag": tag}
}

func TestReadIntoRegisteredMemory(t *testing.T) {
	e := newEnv(t, nil)
	want := e.volume("weights", 3<<20+12345)
	c := e.dial(true)
	st := c.ok(map[string]any{"op": "stat", "server": e.server, "volume": "weights"})
	if st.SizeBytes != int64(len(want)) {
		t.Fatalf("stat size %d, want %d", st.SizeBytes, len(want))
	}
	fd, mem := memfd(t, 4<<20+8192)
	h := c.register(fd, len(mem))
	// The whole volume at 4096, and a piece of it at the end of the region.
	r := c.ok(map[string]any{"op": "submit", "reads": []any{
		rd(e.server, "weights", 0, int64(len(want)), h, 4096, "all"),
		rd(e.server, "weights", 1000, 5000, h, int64(len(mem))-5000, "piece"),
	}})
	if len(r.IDs) != 2 {
		t.Fatalf("submit ids %v", r.IDs)
	}
	comps := c.waitAll(r.IDs)
	for _, id := range r.IDs {
		cp := comps[id]
		if cp.State != "done" || cp.Error != nil || !cp.Verified || cp.UnverifiedExtents != 0 || cp.Transport == nil || *cp.Transport != "tcp" {
			t.Errorf("completion %+v", cp)
		}
	}
	if cp := comps[r.IDs[0]]; cp.Tag != "all" || cp.Bytes != int64(len(want)) || cp.Extents < 13 {
		t.Errorf("completion of the whole volume: %+v", cp)
	}
	if !bytes.Equal(mem[4096:4096+len(want)], want) {
		t.Error("registered memory does not hold the volume")
	}
	if !bytes.Equal(mem[len(mem)-5000:], want[1000:6000]) {
		t.Error("registered memory does not hold the piece at its dst_offset")
	}
	if !bytes.Equal(mem[:4096], make([]byte, 4096)) {
		t.Error("bytes before dst_offset changed")
	}
	// Collected: the ids are gone.
	c.refused(CodeUnknownRead, map[string]any{"op": "wait", "ids": r.IDs})
	c.ok(map[string]any{"op": "unregister", "handle": h})
	c.refused(CodeUnknownHandle, map[string]any{"op": "unregister", "handle": h})
}

func TestReadErrors(t *testing.T) {
	e := newEnv(t, nil)
	e.volume("small", 100<<10)
	c := e.dial(true)
	fd, mem := memfd(t, 1<<20)
	h := c.register(fd, len(mem))
	r := c.ok(map[string]any{"op": "submit", "reads": []any{
		rd(e.server, "nope", 0, 10, h, 0, "missing"),
		rd(e.server, "small", 100<<10-10, 20, h, 0, "past the end"),
		rd("127.0.0.1:1", "small", 0, 10, h, 0, "no server"),
	}})
	comps := c.waitAll(r.IDs)
	for i, code := range []string{"not-found", "out-of-range", "unavailable"} {
		cp := comps[r.IDs[i]]
		if cp.State != "failed" || cp.Error == nil || cp.Error.Code != code || cp.Error.Message == "" {
			t.Errorf("%s: completion %+v %+v, want failed with %s", cp.Tag, cp, cp.Error, code)
		}
	}
	c.refused(CodeUnknownHandle, map[string]any{"op": "submit", "reads": []any{rd(e.server, "small", 0, 10, h+1, 0, "")}})
	c.refused("out-of-range", map[string]any{"op": "submit", "reads": []any{rd(e.server, "small", 0, 10, h, int64(len(mem))-5, "")}})
	c.refused(CodeBadMessage, map[string]any{"op": "submit", "reads": []any{rd(e.server, "small", 0, 0, h, 0, "")}})
	if st := c.call(map[string]any{"op": "stat", "server": e.server, "volume": "nope"}); st.OK || st.Error.Code != "not-found" {
		t.Errorf("stat of a missing volume: %s", st.Raw)
	}
}

// memfdFDs counts this process's fds of the test's memfds.
func memfdFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "/memfd:blockxfer-test") {
			n++
		}
	}
	return n
}

// memfdMappings counts this process's mappings of the test's memfds.
func memfdMappings(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "memfd:blockxfer-test")
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, nil)
	want := e.volume("v", 64<<10)
	other := e.dial(true)
	c := e.dial(false)
	c.refused(CodeVersion, map[string]any{"op": "stat", "server": e.server, "volume": "v"})
	c.refused(CodeVersion, map[string]any{"op": "hello", "version": 99})
	c.ok(map[string]any{"op": "hello", "version": Version})
	fd, mem := memfd(t, 1<<20)
	for _, tc := range []struct {
		name string
		msg  []byte
		fds  []int
		code string
	}{
		{"garbage", []byte("\x00\xffnot json"), nil, CodeBadMessage},
		{"array", []byte(`[1,2]`), nil, CodeBadMessage},
		{"unknown op", []byte(`{"op":"format-disk","seq":1}`), nil, CodeBadMessage},
		{"unknown field", []byte(`{"op":"hello","version":1,"root":true}`), nil, CodeBadMessage},
		{"trailing", []byte(`{"op":"hello","version":1} {}`), nil, CodeBadMessage},
		{"oversized", bytes.Repeat([]byte(" "), MaxMessage+100), nil, CodeTooLarge},
		{"fd with hello", []byte(`{"op":"hello","version":1}`), []int{fd}, CodeUnexpectedFD},
		{"two fds with register", []byte(`{"op":"register","kind":"fd","size":4096}`), []int{fd, fd}, CodeUnexpectedFD},
		{"register without fd", []byte(`{"op":"register","kind":"fd","size":4096}`), nil, CodeUnexpectedFD},
		{"too many fds", []byte(`{"op":"register","kind":"fd","size":4096}`), []int{fd, fd, fd, fd, fd, fd, fd, fd, fd, fd}, CodeUnexpectedFD},
	} {
		c.sendRaw(tc.msg, tc.fds...)
		r := c.recv()
		if r.OK || r.Error == nil || r.Error.Code != tc.code || r.Error.Message == "" {
			t.Errorf("%s: reply %s, want error %s", tc.name, r.Raw, tc.code)
		}
	}
	unsealed, err := unix.MemfdCreate("blockxfer-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(unsealed)
	unix.Ftruncate(unsealed, 4096)
	r := c.refused(CodeImport, map[string]any{"op": "register", "kind": "fd", "size": 4096}, unsealed)
	if !strings.Contains(r.Error.Message, "F_SEAL_SHRINK") {
		t.Errorf("unsealed memfd refused with %q, want the fix named", r.Error.Message)
	}
	c.refused(CodeNotSupported, map[string]any{"op": "register", "kind": "dmabuf", "size": 4096}, fd)
	c.refused("out-of-range", map[string]any{"op": "register", "kind": "fd", "size": 2 << 20}, fd)
	if n := memfdFDs(t); n != 2 { // the test's own two
		t.Errorf("%d fds of the test memfds open after refused messages, want 2: the agent kept passed fds", n)
	}
	if n := memfdMappings(t); n != 1 { // the test's own
		t.Errorf("%d mappings of the test memfd, want 1: refused registrations left mappings", n)
	}
	// Both connections still work.
	for _, cl := range []*client{c, other} {
		h := cl.register(fd, len(mem))
		ids := cl.ok(map[string]any{"op": "submit", "reads": []any{rd(e.server, "v", 0, int64(len(want)), h, 0, "")}}).IDs
		if cp := cl.waitAll(ids)[ids[0]]; cp.State != "done" || !bytes.Equal(mem[:len(want)], want) {
			t.Errorf("read after bad input: %+v", cp)
		}
		cl.ok(map[string]any{"op": "unregister", "handle": h})
	}
}

func TestCancelAndDisconnect(t *testing.T) {
	g := newGate("cancelled", "dropped")
	e := newEnv(t, g)
	t.Cleanup(g.openAll)
	e.volume("cancelled", 4<<20)
	e.volume("dropped", 4<<20)
	mapsBefore := memfdMappings(t)
	c := e.dial(true)
	fd, mem := memfd(t, 4<<20)
	h := c.register(fd, len(mem))
	ids := c.ok(map[string]any{"op": "submit", "reads": []any{rd(e.server, "cancelled", 0, 4<<20, h, 0, "a")}}).IDs
	<-g.held // the read is in flight
	if r := c.ok(map[string]any{"op": "wait", "timeout_ms": 0}); len(r.Completions) != 0 || r.Pending != 1 {
		t.Fatalf("poll while held: %s", r.Raw)
	}
	if r := c.ok(map[string]any{"op": "cancel", "ids": ids}); r.Cancelled != 1 {
		t.Errorf("cancel: %s", r.Raw)
	}
	// An extent being received when the read was cancelled still lands
	// (the stream stays in step): let it go.
	g.open("cancelled")
	if cp := c.waitAll(ids)[ids[0]]; cp.State != "cancelled" || cp.Error == nil || cp.Error.Code != "cancelled" {
		t.Errorf("cancelled read: %+v %+v", cp, cp.Error)
	}
	// A second application disconnects mid-read: its read is cancelled
	// and its registration released once the engine has stopped writing
	// into it.
	d := e.dial(true)
	h2 := d.register(fd, len(mem))
	d.ok(map[string]any{"op": "submit", "reads": []any{rd(e.server, "dropped", 0, 4<<20, h2, 0, "b")}})
	<-g.held
	if st := e.agent.Stats(); st.Registrations != 2 || st.Reads != 1 {
		t.Errorf("stats before disconnect: %+v", st)
	}
	d.c.Close()
	g.open("dropped")
	c.ok(map[string]any{"op": "unregister", "handle": h})
	c.c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := e.agent.Stats()
		if st.Conns == 0 && st.Registrations == 0 && st.Reads == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent still holds %+v after its applications left", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := memfdMappings(t); n != mapsBefore+1 { // the test's own mapping
		t.Errorf("%d mappings of the memfd, want %d: a disconnected application's registration was not released", n, mapsBefore+1)
	}
	if n := memfdFDs(t); n != 1 { // the test's own
		t.Errorf("%d fds of the test memfd open, want 1: the agent kept a passed fd", n)
	}
}

func TestTwoApplications(t *testing.T) {
	e := newEnv(t, nil)
	want := e.volume("v", 2<<20)
	var wg sync.WaitGroup
	for i := range 2 {
		c := e.dial(true)
		fd, mem := memfd(t, 2<<20)
		wg.Go(func() {
			h := c.register(fd, len(mem))
			var reads []any
			for k := int64(0); k < 8; k++ {
				reads = append(reads, rd(e.server, "v", k<<18, 1<<18, h, k<<18, ""))
			}
			ids := c.ok(map[string]any{"op": "submit", "reads": reads}).IDs
			for _, cp := range c.waitAll(ids) {
				if cp.State != "done" {
					t.Errorf("application %d: %+v", i, cp)
				}
			}
			if !bytes.Equal(mem, want) {
				t.Errorf("application %d: bytes differ", i)
			}
		})
	}
	wg.Wait()
}

func TestListenRefusesLiveSocket(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := Listen(e.sock, 0); err == nil || !strings.Contains(err.Error(), "another agent") {
		t.Errorf("Listen on a live socket: %v", err)
	}
	fi, err := os.Stat(e.sock)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, %v; want 0660", fi.Mode(), err)
	}
	stale := filepath.Join(t.TempDir(), "stale.sock")
	l, err := Listen(stale, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	l, err = Listen(stale, 0o600)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	l.Close()
	if err := os.WriteFile(stale, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(stale, 0); err == nil || !errors.Is(err, err) || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a file: %v", err)
	}
}
