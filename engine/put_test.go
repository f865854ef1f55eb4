package engine_test

import (
	"bytes"
	"context"
	"errors"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/engine"
)

func randomData(n int, seed uint64) []byte {
	b := make([]byte, n)
	var s [32]byte
	s[0] = byte(seed)
	mrand.NewChaCha8(s).Read(b)
	return b
}

// readBack fetches a whole volume with CRC checks.
func readBack(t *testing.T, c *client, name string, n int64) []byte {
	t.Helper()
	buf, mem := c.alloc(t, n)
	if _, err := c.Read(context.Background(), name, []engine.Range{{0, n}}, buf); err != nil {
		t.Fatalf("read back %s: %v", name, err)
	}
	return mem
}

func TestPutAndReplace(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.client(nil)
	ctx := context.Background()
	data := randomData(3<<20+12345, 1)
	st, err := c.Put(ctx, "up", int64(len(data)), 256<<10, bytes.NewReader(data), false)
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != "up" || st.Size != uint64(len(data)) || st.ExtentSize != 256<<10 || st.Generation == 0 {
		t.Fatalf("put returned %+v", st)
	}
	if got := readBack(t, c, "up", int64(len(data))); !bytes.Equal(got, data) {
		t.Fatal("bytes read back differ")
	}

	_, err = c.Put(ctx, "up", 4096, 0, bytes.NewReader(make([]byte, 4096)), false)
	var pe *blockproto.PutError
	if !errors.As(err, &pe) || pe.Code != blockproto.CodeExists || !strings.Contains(err.Error(), "engine: put up to ") {
		t.Fatalf("put over an existing volume: %v", err)
	}

	data2 := randomData(1<<20, 2)
	st2, err := c.Put(ctx, "up", int64(len(data2)), 0, bytes.NewReader(data2), true)
	if err != nil {
		t.Fatal(err)
	}
	if st2.Generation <= st.Generation {
		t.Fatalf("replace: generation %d after %d", st2.Generation, st.Generation)
	}
	if got := readBack(t, c, "up", int64(len(data2))); !bytes.Equal(got, data2) {
		t.Fatal("bytes read back after replace differ")
	}
	if stat, err := c.Stat(ctx, "up"); err != nil || stat != st2 {
		t.Fatalf("stat %+v, %v; want %+v", stat, err, st2)
	}
}

func TestPutConcurrentWithReads(t *testing.T) {
	e := newEnv(t, envOpts{})
	want := e.volume("vol", 4<<20, 1<<20)
	c := e.client(nil)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 6 {
		wg.Go(func() {
			data := randomData(2<<20+i*4096+7, uint64(10+i))
			name := "p" + string(rune('a'+i))
			if _, err := c.Put(context.Background(), name, int64(len(data)), 64<<10, bytes.NewReader(data), false); err != nil {
				errs <- err
				return
			}
			if got := readBack(t, c, name, int64(len(data))); !bytes.Equal(got, data) {
				errs <- errors.New(name + ": bytes differ")
			}
		})
		wg.Go(func() {
			if got := readBack(t, c, "vol", int64(len(want))); !bytes.Equal(got, want) {
				errs <- errors.New("read during uploads: bytes differ")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// stuckReader delivers n bytes and then blocks until ctx ends.
type stuckReader struct {
	ctx context.Context
	n   int
	hit chan struct{}
}

func (r *stuckReader) Read(p []byte) (int, error) {
	if r.n > 0 {
		k := min(len(p), r.n)
		r.n -= k
		return k, nil
	}
	close(r.hit)
	<-r.ctx.Done()
	return 0, r.ctx.Err()
}

func TestPutFailures(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.client(nil)
	ctx := context.Background()

	t.Run("short source", func(t *testing.T) {
		_, err := c.Put(ctx, "short", 1<<20, 0, bytes.NewReader(make([]byte, 5000)), false)
		if err == nil || !strings.Contains(err.Error(), "source ended after 5000 of 1048576 bytes") {
			t.Fatalf("Put = %v", err)
		}
	})
	t.Run("cancel mid-upload", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		r := &stuckReader{ctx: cctx, n: 1 << 20, hit: make(chan struct{})}
		go func() {
			<-r.hit
			cancel()
		}()
		_, err := c.Put(cctx, "stuck", 4<<20, 0, r, false)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Put = %v, want context.Canceled", err)
		}
	})
	t.Run("bad geometry", func(t *testing.T) {
		_, err := c.Put(ctx, "odd", 8192, 1000, bytes.NewReader(make([]byte, 8192)), false)
		var pe *blockproto.PutError
		if !errors.As(err, &pe) || pe.Code != blockproto.CodeBadRequest || !strings.Contains(err.Error(), "extent size 1000") {
			t.Fatalf("Put = %v", err)
		}
	})
	t.Run("bad name", func(t *testing.T) {
		_, err := c.Put(ctx, "../x", 1, 0, bytes.NewReader([]byte{1}), false)
		if err == nil || !strings.Contains(err.Error(), "invalid volume name") {
			t.Fatalf("Put = %v", err)
		}
	})
	// The aborted uploads left nothing listed, and the session still works.
	vols, err := c.Volumes(ctx)
	if err != nil || len(vols) != 0 {
		t.Fatalf("volumes after failed uploads: %+v, %v", vols, err)
	}
}

// rawSession authenticates a raw control connection with one data
// connection and returns its frame reader/writer.
func (e *env) rawSession(t *testing.T) (*blockproto.Conn, net.Conn) {
	t.Helper()
	c := e.rawConn(t)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	pc := blockproto.NewConn(c)
	blockproto.WriteControlPreamble(c)
	hello := &blockproto.Hello{Client: "raw"}
	pc.WriteMsg(hello)
	m, err := pc.ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	ch := m.(*blockproto.Challenge)
	pc.WriteMsg(&blockproto.Auth{MAC: blockproto.ClientProof(testKey, hello.Nonce, ch.Nonce, ch.SessionID)})
	if m, err = pc.ReadMsg(); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.(*blockproto.Welcome); !ok {
		t.Fatalf("got %#v, want Welcome", m)
	}
	return pc, c
}

// expect reads frames, skipping acks unless asked for, until one of type T.
func expect[T blockproto.Msg](t *testing.T, pc *blockproto.Conn) T {
	t.Helper()
	for {
		m, err := pc.ReadMsg()
		if err != nil {
			t.Fatalf("want %T: %v", *new(T), err)
		}
		if got, ok := m.(T); ok {
			return got
		}
		if _, ack := m.(*blockproto.PutAck); !ack {
			t.Fatalf("got %#v, want %T", m, *new(T))
		}
	}
}

func TestPutProtocolViolations(t *testing.T) {
	e := newEnv(t, envOpts{})
	pc, _ := e.rawSession(t)
	chunk := func(id, off uint64, n int) *blockproto.PutData {
		return &blockproto.PutData{ID: id, Offset: off, Data: make([]byte, n)}
	}
	// Messages for uploads that are not open are ignored.
	pc.WriteMsg(chunk(99, 0, 4096))
	pc.WriteMsg(&blockproto.PutCommit{ID: 99})
	pc.WriteMsg(&blockproto.PutAbort{ID: 99})

	cases := []struct {
		name string
		msgs []blockproto.Msg
		code blockproto.Code
		msg  string
	}{
		{"offset gap", []blockproto.Msg{chunk(1, 4096, 4096)}, blockproto.CodeBadRequest, "expected 0"},
		{"small chunk", []blockproto.Msg{chunk(2, 0, 100)}, blockproto.CodeBadRequest, "at least 4096"},
		{"past size", []blockproto.Msg{chunk(3, 0, 4096), chunk(3, 4096, 65536)}, blockproto.CodeBadRequest, "past the volume's"},
		{"early commit", []blockproto.Msg{chunk(4, 0, 4096), &blockproto.PutCommit{ID: 4}}, blockproto.CodeBadRequest, "commit after 4096 of 65536"},
		{"abort", []blockproto.Msg{chunk(5, 0, 4096), &blockproto.PutAbort{ID: 5}}, blockproto.CodeCancelled, "aborted by the client"},
	}
	for i, tc := range cases {
		id := uint64(i + 1)
		pc.WriteMsg(&blockproto.PutVolume{ID: id, Name: "raw", Size: 65536, ExtentSize: 4096})
		ack := expect[*blockproto.PutAck](t, pc)
		if ack.ID != id || ack.Acked != 0 || ack.Window != engine.PutWindow {
			t.Fatalf("%s: first ack %+v", tc.name, ack)
		}
		for _, m := range tc.msgs {
			pc.WriteMsg(m)
		}
		pe := expect[*blockproto.PutError](t, pc)
		if pe.ID != id || pe.Code != tc.code || !strings.Contains(pe.Message, tc.msg) {
			t.Fatalf("%s: %+v, want %s mentioning %q", tc.name, pe, tc.code, tc.msg)
		}
	}
	if files, _ := os.ReadDir(filepath.Join(e.store.Dir(), "volumes")); len(files) != 0 {
		t.Fatalf("failed uploads left %v", files)
	}

	// At most MaxUploadsPerSession open at once; ids are not reused.
	for i := range engine.MaxUploadsPerSession {
		pc.WriteMsg(&blockproto.PutVolume{ID: uint64(100 + i), Name: "open" + string(rune('a'+i)), Size: 4096, ExtentSize: 4096})
		expect[*blockproto.PutAck](t, pc)
	}
	pc.WriteMsg(&blockproto.PutVolume{ID: 100, Name: "dup", Size: 4096, ExtentSize: 4096})
	if pe := expect[*blockproto.PutError](t, pc); pe.ID != 100 || pe.Code != blockproto.CodeBadRequest {
		t.Fatalf("duplicate id: %+v", pe)
	}
	pc.WriteMsg(&blockproto.PutVolume{ID: 200, Name: "more", Size: 4096, ExtentSize: 4096})
	if pe := expect[*blockproto.PutError](t, pc); pe.ID != 200 || pe.Code != blockproto.CodeBusy {
		t.Fatalf("fifth upload: %+v", pe)
	}
	// The open ones still complete.
	for i := range engine.MaxUploadsPerSession {
		pc.WriteMsg(chunk(uint64(100+i), 0, 4096))
		pc.WriteMsg(&blockproto.PutCommit{ID: uint64(100 + i)})
		if d := expect[*blockproto.PutDone](t, pc); d.ID != uint64(100+i) || d.Volume.Size != 4096 {
			t.Fatalf("PutDone %+v", d)
		}
	}
}

func TestPutDuringShutdown(t *testing.T) {
	e := newEnv(t, envOpts{})
	pc, conn := e.rawSession(t)
	pc.WriteMsg(&blockproto.PutVolume{ID: 1, Name: "late", Size: 8192, ExtentSize: 4096})
	expect[*blockproto.PutAck](t, pc)
	shut := make(chan error, 1)
	go func() { shut <- e.srv.Shutdown(context.Background()) }()
	if m, err := pc.ReadMsg(); err != nil {
		t.Fatal(err)
	} else if _, ok := m.(*blockproto.Goodbye); !ok {
		t.Fatalf("got %#v, want Goodbye", m)
	}
	// New uploads are refused; the open one finishes before the server
	// stops.
	pc.WriteMsg(&blockproto.PutVolume{ID: 2, Name: "later", Size: 4096, ExtentSize: 4096})
	if pe := expect[*blockproto.PutError](t, pc); pe.ID != 2 || pe.Code != blockproto.CodeShuttingDown {
		t.Fatalf("upload while draining: %+v", pe)
	}
	pc.WriteMsg(&blockproto.PutData{ID: 1, Offset: 0, Data: make([]byte, 8192)})
	pc.WriteMsg(&blockproto.PutCommit{ID: 1})
	if d := expect[*blockproto.PutDone](t, pc); d.ID != 1 {
		t.Fatalf("PutDone %+v", d)
	}
	// A client hangs up once its work is done after Goodbye.
	conn.Close()
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Catalog().Get("late"); err != nil {
		t.Fatal(err)
	}
}

// TestPutStalls is the defect where an upload that made no progress held its
// reserved space for as long as the session kept pinging.
func TestPutStalls(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *engine.ServerConfig) { c.UploadStall = 50 * time.Millisecond }})
	pc, _ := e.rawSession(t)
	pc.WriteMsg(&blockproto.PutVolume{ID: 1, Name: "stuck", Size: 1 << 20, ExtentSize: 4096})
	expect[*blockproto.PutAck](t, pc)
	pc.WriteMsg(&blockproto.PutData{ID: 1, Offset: 0, Data: make([]byte, 4096)})
	pe := expect[*blockproto.PutError](t, pc)
	if pe.ID != 1 || pe.Code != blockproto.CodeTimedOut || !strings.Contains(pe.Message, "no data for 50ms after 4096 of 1048576 bytes") {
		t.Fatalf("stalled upload: %+v", pe)
	}
	if files, _ := os.ReadDir(filepath.Join(e.store.Dir(), "volumes")); len(files) != 0 {
		t.Fatalf("the stalled upload left %v", files)
	}
}

// limitedSpace is a volume source with a fixed amount of free space.
type limitedSpace struct {
	engine.Volumes
	free int64
}

func (l *limitedSpace) FreeBytes() (int64, error) { return l.free, nil }

// TestPutReservesSpace is the defect where uploads could reserve more disk
// than there is: the space uploads in progress will write is accounted
// against the free space, and released when they end.
func TestPutReservesSpace(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *engine.ServerConfig) { c.Volumes = &limitedSpace{c.Volumes, 100 << 10} }})
	pc, _ := e.rawSession(t)
	pc.WriteMsg(&blockproto.PutVolume{ID: 1, Name: "first", Size: 64 << 10, ExtentSize: 4096})
	expect[*blockproto.PutAck](t, pc)
	pc.WriteMsg(&blockproto.PutVolume{ID: 2, Name: "second", Size: 64 << 10, ExtentSize: 4096})
	pe := expect[*blockproto.PutError](t, pc)
	if pe.ID != 2 || pe.Code != blockproto.CodeIO || !strings.Contains(pe.Message, "not enough space") {
		t.Fatalf("second upload: %+v, want not enough space", pe)
	}
	pc.WriteMsg(&blockproto.PutData{ID: 1, Offset: 0, Data: make([]byte, 64<<10)})
	pc.WriteMsg(&blockproto.PutCommit{ID: 1})
	for {
		m, err := pc.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := m.(*blockproto.PutDone); ok && d.ID == 1 {
			break
		}
	}
	// The first upload ended: its reservation is free again.
	pc.WriteMsg(&blockproto.PutVolume{ID: 3, Name: "third", Size: 64 << 10, ExtentSize: 4096})
	if ack := expect[*blockproto.PutAck](t, pc); ack.ID != 3 {
		t.Fatalf("third upload: %+v", ack)
	}
}
