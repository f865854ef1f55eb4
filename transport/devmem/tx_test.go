package devmem

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
)

// txScript is a socket whose sendmsg accepts scripted byte counts and
// completes every send at once, so completions interleave with partial
// sends.
type txScript struct {
	t       *testing.T
	accept  []int // bytes each sendmsg accepts (-1: ENOBUFS); default all
	errq    []Completion
	next    uint32
	sent    [][]uapi.Iovec
	control []byte
	zc      bool
	// holdUntilNoBufs keeps completions back until a send fails with
	// ENOBUFS, like a socket over its optmem limit.
	holdUntilNoBufs bool
	held            []Completion
}

func (s *txScript) watch(context.Context) func()                       { return func() {} }
func (s *txScript) recvmsg([]byte, []byte, int) (int, int, int, error) { return 0, 0, 0, nil }
func (s *txScript) dontneed([]byte) (int, error)                       { return 0, nil }
func (s *txScript) setZerocopy() error                                 { s.zc = true; return nil }
func (s *txScript) close() error                                       { return nil }

func (s *txScript) sendmsg(iov []uapi.Iovec, control []byte, flags int) (int, error) {
	if !s.zc || flags&uapi.MSG_ZEROCOPY == 0 {
		s.t.Fatal("send without SO_ZEROCOPY and MSG_ZEROCOPY")
	}
	s.control = append(s.control[:0], control...)
	total := 0
	for _, v := range iov {
		total += int(v.Len)
	}
	n := total
	if len(s.accept) > 0 {
		n = min(s.accept[0], total)
		s.accept = s.accept[1:]
	}
	if n < 0 {
		s.errq = append(s.errq, s.held...)
		s.held, s.holdUntilNoBufs = nil, false
		return 0, syscall.ENOBUFS
	}
	s.sent = append(s.sent, append([]uapi.Iovec(nil), iov...))
	c := Completion{Lo: s.next, Hi: s.next}
	if s.holdUntilNoBufs {
		s.held = append(s.held, c)
	} else {
		s.errq = append(s.errq, c)
	}
	s.next++
	return n, nil
}

func (s *txScript) recvErrqueue(oob []byte, wait bool) (int, error) {
	if len(s.errq) == 0 {
		if wait {
			s.t.Fatal("waiting for a completion that will never come")
		}
		return 0, syscall.EAGAIN
	}
	c := s.errq[0]
	s.errq = s.errq[1:]
	return len(appendZerocopyCmsg(oob[:0], c, false)), nil
}

type txScriptKernel struct{ s *txScript }

func (k txScriptKernel) Name() string                                { return "script" }
func (k txScriptKernel) BindRX(int, int, []uint32) (*Binding, error) { return nil, ErrNotSupported }
func (k txScriptKernel) BindTX(int, int) (*Binding, error)           { return nil, ErrNotSupported }
func (k txScriptKernel) open(net.Conn) (socket, error)               { return k.s, nil }

func newScriptSender(t *testing.T, s *txScript, bufs int) (*Sender, *BufferPool) {
	t.Helper()
	pool, err := NewBufferPool(8192, int64(bufs)*4096, 4096)
	if err != nil {
		t.Fatal(err)
	}
	snd, err := NewSender(nil, TXConfig{
		Kernel:    txScriptKernel{s},
		Binding:   netdev.NewBinding(5, 1, BindingTX, nil, nopCloser{}),
		Pool:      pool,
		MaxIovecs: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	return snd, pool
}

func TestSenderPartialSends(t *testing.T) {
	// Partial sends whose completions arrive before the rest is sent must
	// not free a buffer that still has bytes to send.
	s := &txScript{t: t, accept: []int{1000, 3000, 5000, 100}}
	snd, pool := newScriptSender(t, s, 4)
	ctx := context.Background()
	var segs []Segment
	for i := 0; i < 3; i++ {
		b, err := snd.Get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		segs = append(segs, Segment{Buf: b, Len: 4096})
	}
	seen := map[uint32]bool{}
	for _, sg := range segs {
		seen[sg.Buf.Index] = true
	}
	if err := snd.Send(ctx, segs); err != nil {
		t.Fatal(err)
	}
	// The iovecs carry dmabuf offsets and resume where the kernel stopped.
	if len(s.sent) < 4 {
		t.Fatalf("%d sendmsg calls", len(s.sent))
	}
	first := s.sent[1][0]
	if first.Base != uintptr(segs[0].Buf.Off)+1000 || first.Len != 3096 {
		t.Errorf("second call starts at %+v, want offset %d+1000 len 3096", first, segs[0].Buf.Off)
	}
	if len(s.control) != uapi.CmsgSpace(4) {
		t.Errorf("control message of %d bytes", len(s.control))
	}
	// Every buffer came back exactly once.
	if err := snd.Close(); err != nil {
		t.Fatal(err)
	}
	if pool.Free() != 4 {
		t.Errorf("%d of 4 buffers free", pool.Free())
	}
	st := snd.Stats()
	if st.Bytes != 3*4096 || st.Partial == 0 || st.Completion.Completed != uint64(st.Sendmsgs) {
		t.Errorf("stats %+v", st)
	}
	c := pool.NewCache()
	got := map[uint32]bool{}
	for {
		b, ok := c.Get()
		if !ok {
			break
		}
		if got[b.Index] {
			t.Fatalf("buffer %d in the pool twice", b.Index)
		}
		got[b.Index] = true
	}
	if len(got) != 4 {
		t.Errorf("%d distinct buffers, want 4", len(got))
	}
}

func TestSenderNoBufsAndErrors(t *testing.T) {
	s := &txScript{t: t, accept: []int{4096, -1, 4096}, holdUntilNoBufs: true}
	snd, pool := newScriptSender(t, s, 2)
	ctx := context.Background()
	a, _ := snd.Get(ctx)
	if err := snd.Send(ctx, []Segment{{Buf: a, Len: 4096}}); err != nil {
		t.Fatal(err)
	}
	// ENOBUFS with a send in flight: wait for its completion and retry.
	b, _ := snd.Get(ctx)
	if err := snd.Send(ctx, []Segment{{Buf: b, Len: 4096}}); err != nil {
		t.Fatal(err)
	}
	if snd.Stats().NoBufs != 1 {
		t.Errorf("NoBufs = %d", snd.Stats().NoBufs)
	}
	c, _ := snd.Get(ctx)
	if err := snd.Send(ctx, []Segment{{Buf: c, Len: 5000}}); err == nil {
		t.Error("segment larger than a buffer accepted")
	}
	if err := snd.Close(); err != nil {
		t.Fatal(err)
	}
	if pool.Free() != 2 {
		t.Errorf("%d of 2 buffers free", pool.Free())
	}
	if err := snd.Send(ctx, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close = %v", err)
	}
}
