package devmem

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
)

// scriptKernel is a Kernel whose sockets replay scripted recvmsg results; it
// checks the pipeline's calls against the kernel's rules.
type scriptKernel struct {
	sock *scriptSocket
}

func (k *scriptKernel) Name() string                                { return "script" }
func (k *scriptKernel) BindRX(int, int, []uint32) (*Binding, error) { return nil, ErrNotSupported }
func (k *scriptKernel) BindTX(int, int) (*Binding, error)           { return nil, ErrNotSupported }
func (k *scriptKernel) open(net.Conn) (socket, error)               { return k.sock, nil }

type scriptRecv struct {
	frags  []Frag // dmabuf and linear frags, in stream order
	linear []byte // bytes of the linear frags, in order
	plain  []byte // payload without cmsgs
	n      int    // if not 0, the byte count to return instead of the frags' sum
	err    error
	// wait: no data has arrived yet. A MSG_DONTWAIT call fails with
	// EAGAIN; a blocking call waits (the entry is dropped) and gets the
	// next one.
	wait bool
}

type scriptSocket struct {
	t       *testing.T
	recvs   []scriptRecv
	live    map[uint32]bool
	calls   int // recvmsg calls
	trunc   int64
	optlens []int
	closed  bool
	// connClosed: the connection was closed; SO_DEVMEM_DONTNEED fails and
	// the kernel released the tokens with the socket.
	connClosed bool
	// heldAtWait is the number of tokens the receiver held at each
	// recvmsg that waited for data.
	heldAtWait []int
	watching   int // watch calls whose stop was not called yet
	watches    int // watch calls
}

func (s *scriptSocket) watch(context.Context) func() {
	s.watching++
	s.watches++
	stopped := false
	return func() {
		if stopped {
			s.t.Error("watch stopped twice")
		}
		stopped = true
		s.watching--
	}
}

func (s *scriptSocket) recvmsg(p, oob []byte, flags int) (int, int, int, error) {
	s.t.Helper()
	s.calls++
	if flags&uapi.MSG_TRUNC != 0 {
		s.trunc += int64(len(p))
		return len(p), 0, 0, nil
	}
	if flags&uapi.MSG_SOCK_DEVMEM == 0 {
		s.t.Fatalf("recvmsg without MSG_SOCK_DEVMEM")
	}
	if len(s.recvs) > 0 && s.recvs[0].wait {
		if flags&uapi.MSG_DONTWAIT != 0 {
			return 0, 0, 0, &OpError{Subsystem: "devmem", Op: "recvmsg", Err: syscall.EAGAIN}
		}
		s.heldAtWait = append(s.heldAtWait, len(s.live))
		s.recvs = s.recvs[1:]
	}
	if len(s.recvs) == 0 {
		return 0, 0, 0, nil // EOF
	}
	r := s.recvs[0]
	s.recvs = s.recvs[1:]
	if r.err != nil {
		return 0, 0, 0, r.err
	}
	if r.plain != nil {
		return copy(p, r.plain), 0, 0, nil
	}
	var o []byte
	n := 0
	for _, f := range r.frags {
		o = appendDevmemCmsg(o, f)
		n += int(f.Size)
		if !f.Linear {
			if s.live[f.Token] {
				s.t.Fatalf("token %d handed out twice", f.Token)
			}
			s.live[f.Token] = true
		}
	}
	if len(o) > len(oob) {
		s.t.Fatalf("control buffer of %d bytes for %d cmsgs: the pipeline exceeded its frag budget", len(oob), len(r.frags))
	}
	if n > len(p) {
		s.t.Fatalf("iovec of %d bytes, script returns %d", len(p), n)
	}
	copy(p, r.linear)
	if r.n != 0 {
		n = r.n
	}
	return n, copy(oob, o), 0, nil
}

func (s *scriptSocket) dontneed(opt []byte) (int, error) {
	if s.connClosed {
		return 0, &OpError{Subsystem: "devmem", Op: "setsockopt SO_DEVMEM_DONTNEED", Err: net.ErrClosed}
	}
	s.optlens = append(s.optlens, len(opt))
	f := &fakeDontneed{t: s.t, live: s.live}
	return f.dontneed(opt)
}

func (s *scriptSocket) setZerocopy() error                             { return nil }
func (s *scriptSocket) sendmsg([]uapi.Iovec, []byte, int) (int, error) { return 0, syscall.EINVAL }
func (s *scriptSocket) recvErrqueue([]byte, bool) (int, error)         { return 0, syscall.EAGAIN }
func (s *scriptSocket) close() error {
	if s.watching != 0 {
		s.t.Errorf("socket closed while %d watches are armed", s.watching)
	}
	s.closed = true
	return nil
}

// memProvider is the part of a provider the pipeline uses, over Go memory:
// buffer 1 is the arena, others are destinations.
type memProvider struct {
	bufs    map[memory.BufferID][]byte
	gathers [][]memory.Copy
	failAt  int // fail the n-th gather (1-based), 0 never
}

func (m *memProvider) Gather(_ context.Context, copies []memory.Copy) error {
	m.gathers = append(m.gathers, append([]memory.Copy(nil), copies...))
	if m.failAt == len(m.gathers) {
		return errors.New("device lost")
	}
	for _, c := range copies {
		copy(m.bufs[c.Dst][c.DstOff:c.DstOff+c.Len], m.bufs[c.Src][c.SrcOff:c.SrcOff+c.Len])
	}
	return nil
}

func (m *memProvider) CopyIn(_ context.Context, dst memory.BufferID, off int64, src []byte) error {
	copy(m.bufs[dst][off:], src)
	return nil
}

const (
	arenaID memory.BufferID = 1
	dstID   memory.BufferID = 2
)

func newScriptReceiver(t *testing.T, cfg RXConfig, recvs ...scriptRecv) (*Receiver, *scriptSocket, *memProvider) {
	t.Helper()
	arena := make([]byte, 1<<20)
	for i := range arena {
		arena[i] = byte(i*7 + i>>12)
	}
	m := &memProvider{bufs: map[memory.BufferID][]byte{arenaID: arena, dstID: make([]byte, 1<<20)}}
	s := &scriptSocket{t: t, recvs: recvs, live: make(map[uint32]bool)}
	cfg.Kernel = &scriptKernel{sock: s}
	cfg.Binding = netdev.NewBinding(7, 1, BindingRX, []uint32{0}, io.NopCloser(nil))
	cfg.Arena = arenaID
	cfg.Gather = m.Gather
	cfg.CopyIn = m.CopyIn
	r, err := NewReceiver(nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, s, m
}

// expect builds the bytes a stream of frags must produce: dmabuf frags from
// the arena, linear frags from the script's linear bytes.
func expect(m *memProvider, recvs ...scriptRecv) []byte {
	var out []byte
	for _, r := range recvs {
		lin := r.linear
		for _, f := range r.frags {
			if f.Linear {
				out = append(out, lin[:f.Size]...)
				lin = lin[f.Size:]
			} else {
				out = append(out, m.bufs[arenaID][f.Offset:f.Offset+uint64(f.Size)]...)
			}
		}
		out = append(out, r.plain...)
	}
	return out
}

func checkBalanced(t *testing.T, r *Receiver, s *scriptSocket) {
	t.Helper()
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if len(s.live) != 0 {
		t.Errorf("tokens never returned to the kernel: %v", s.live)
	}
	if r.Held() != 0 {
		t.Errorf("Held = %d after Close", r.Held())
	}
	if !s.closed {
		t.Error("socket not closed")
	}
}

func TestReceiverCarriesFragsOver(t *testing.T) {
	recv := scriptRecv{frags: []Frag{
		{Offset: 8192, Size: 4096, Token: 1, DmabufID: 7},
		{Offset: 40960, Size: 4096, Token: 2, DmabufID: 7},
		{Offset: 4096, Size: 4096, Token: 3, DmabufID: 7},
	}}
	r, s, m := newScriptReceiver(t, RXConfig{}, recv)
	ctx := context.Background()
	if err := r.Receive(ctx, dstID, 100, 6000); err != nil {
		t.Fatal(err)
	}
	// Token 1 is gathered and queued for return; token 2 straddles the
	// extents, token 3 is read ahead.
	if r.Held() != 3 || r.batch.Pending() != 1 || len(s.optlens) != 0 {
		t.Fatalf("after first extent: held %d, %d queued for return, %d DONTNEED calls", r.Held(), r.batch.Pending(), len(s.optlens))
	}
	if err := r.Receive(ctx, dstID, 6100, 6288); err != nil {
		t.Fatal(err)
	}
	want := expect(m, recv)
	if !bytes.Equal(m.bufs[dstID][100:100+12288], want) {
		t.Error("destination bytes differ from the frags' bytes")
	}
	wantCopies := [][]memory.Copy{
		{{Src: arenaID, SrcOff: 8192, Dst: dstID, DstOff: 100, Len: 4096}, {Src: arenaID, SrcOff: 40960, Dst: dstID, DstOff: 4196, Len: 1904}},
		{{Src: arenaID, SrcOff: 40960 + 1904, Dst: dstID, DstOff: 6100, Len: 2192}, {Src: arenaID, SrcOff: 4096, Dst: dstID, DstOff: 8292, Len: 4096}},
	}
	if diff := cmp.Diff(wantCopies, m.gathers); diff != "" {
		t.Errorf("gathers (-want +got):\n%s", diff)
	}
	if s.calls != 1 {
		t.Errorf("%d recvmsg calls, want 1", s.calls)
	}
	checkBalanced(t, r, s)
}

func TestReceiverLinearFrags(t *testing.T) {
	recv := scriptRecv{
		frags: []Frag{
			{Size: 10, Linear: true},
			{Offset: 0, Size: 4096, Token: 1, DmabufID: 7},
			{Size: 20, Linear: true},
			{Offset: 12288, Size: 50, Token: 2, DmabufID: 7},
		},
		linear: bytes.Repeat([]byte("L"), 30),
	}
	for i := range recv.linear {
		recv.linear[i] = byte(i)
	}
	r, s, m := newScriptReceiver(t, RXConfig{}, recv)
	n := int64(10 + 4096 + 20 + 50)
	if err := r.Receive(context.Background(), dstID, 0, n); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.bufs[dstID][:n], expect(m, recv)) {
		t.Error("destination bytes differ")
	}
	st := r.Stats()
	if st.LinearBytes != 30 || st.DevmemBytes != 4146 || st.LinearFrags != 2 || st.Frags != 2 {
		t.Errorf("stats %+v", st)
	}
	checkBalanced(t, r, s)
}

func TestReceiverBudget(t *testing.T) {
	var recvs []scriptRecv
	tok := uint32(1)
	for i := 0; i < 6; i++ {
		var fr []Frag
		for j := 0; j < 4; j++ {
			fr = append(fr, Frag{Offset: uint64(tok) * 4096, Size: 4096, Token: tok, DmabufID: 7})
			tok++
		}
		recvs = append(recvs, scriptRecv{frags: fr})
	}
	r, s, m := newScriptReceiver(t, RXConfig{FragBudget: 4, GatherBatch: 100}, recvs...)
	n := int64(24 * 4096)
	if err := r.Receive(context.Background(), dstID, 0, n); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.bufs[dstID][:n], expect(m, recvs...)) {
		t.Error("destination bytes differ")
	}
	if st := r.Stats(); st.MaxHeld > 4 || st.GatherCalls != 6 {
		t.Errorf("MaxHeld %d (budget 4), %d gathers", st.MaxHeld, st.GatherCalls)
	}
	checkBalanced(t, r, s)
}

func TestReceiverGatherBatches(t *testing.T) {
	var fr []Frag
	for i := uint32(1); i <= 10; i++ {
		fr = append(fr, Frag{Offset: uint64(i) * 4096, Size: 4096, Token: i, DmabufID: 7})
	}
	r, s, m := newScriptReceiver(t, RXConfig{GatherBatch: 4}, scriptRecv{frags: fr})
	if err := r.Receive(context.Background(), dstID, 0, 40960); err != nil {
		t.Fatal(err)
	}
	if len(m.gathers) != 3 || len(m.gathers[0]) != 4 || len(m.gathers[2]) != 2 {
		t.Errorf("gather batches: %d", len(m.gathers))
	}
	checkBalanced(t, r, s)
}

func TestReceiverErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("flow steering", func(t *testing.T) {
		r, s, _ := newScriptReceiver(t, RXConfig{}, scriptRecv{frags: []Frag{
			{Offset: 0, Size: 4096, Token: 1, DmabufID: 7},
			{Offset: 4096, Size: 4096, Token: 2, DmabufID: 8},
		}})
		if err := r.Receive(ctx, dstID, 0, 8192); !errors.Is(err, ErrFlowSteering) {
			t.Fatalf("Receive = %v, want ErrFlowSteering", err)
		}
		checkBalanced(t, r, s)
	})
	t.Run("plain data rejected", func(t *testing.T) {
		r, s, _ := newScriptReceiver(t, RXConfig{RejectPlain: true}, scriptRecv{plain: []byte("hello")})
		if err := r.Receive(ctx, dstID, 0, 5); !errors.Is(err, ErrNotDevmem) || errors.Is(err, ErrBindingClosed) {
			t.Fatalf("Receive = %v, want ErrNotDevmem", err)
		}
		checkBalanced(t, r, s)
	})
	t.Run("plain data after unbind", func(t *testing.T) {
		r, s, _ := newScriptReceiver(t, RXConfig{}, scriptRecv{plain: []byte("hello")})
		_ = r.cfg.Binding.Close()
		if err := r.Receive(ctx, dstID, 0, 5); !errors.Is(err, ErrBindingClosed) {
			t.Fatalf("Receive = %v, want ErrBindingClosed", err)
		}
		checkBalanced(t, r, s)
	})
	t.Run("plain data accepted by default", func(t *testing.T) {
		// A packet the NIC did not header-split comes without cmsgs
		// (between devmem calls, never inside one): copied in and counted
		// as linear.
		r, s, m := newScriptReceiver(t, RXConfig{},
			scriptRecv{frags: []Frag{{Offset: 8192, Size: 4, Token: 1, DmabufID: 7}}},
			scriptRecv{plain: []byte("hello")},
			scriptRecv{frags: []Frag{{Offset: 4096, Size: 3, Token: 2, DmabufID: 7}}})
		copy(m.bufs[arenaID][8192:], "0123")
		copy(m.bufs[arenaID][4096:], "xyz")
		if err := r.Receive(ctx, dstID, 3, 12); err != nil {
			t.Fatal(err)
		}
		if got := string(m.bufs[dstID][3:15]); got != "0123helloxyz" {
			t.Errorf("got %q", got)
		}
		st := r.Stats()
		if st.PlainBytes != 5 || st.PlainRecvmsgs != 1 || st.LinearBytes != 5 || st.LinearFrags != 1 || st.DevmemBytes != 7 {
			t.Errorf("stats %+v", st)
		}
		if b, f := r.LinearPlaced(); b != 5 || f != 1 {
			t.Errorf("LinearPlaced = %d, %d; want 5 bytes, 1 frag", b, f)
		}
		checkBalanced(t, r, s)
	})
	t.Run("size mismatch", func(t *testing.T) {
		r, s, _ := newScriptReceiver(t, RXConfig{}, scriptRecv{n: 4000, frags: []Frag{{Offset: 0, Size: 4096, Token: 1, DmabufID: 7}}})
		if err := r.Receive(ctx, dstID, 0, 4096); !errors.Is(err, ErrMalformed) {
			t.Fatalf("Receive = %v, want ErrMalformed", err)
		}
		checkBalanced(t, r, s)
	})
	t.Run("malformed cmsgs", func(t *testing.T) {
		r, s, _ := newScriptReceiver(t, RXConfig{}, scriptRecv{frags: []Frag{
			{Offset: 0, Size: 4096, Token: 1, DmabufID: 7},
			{Offset: 0, Size: 4096, Token: 0, DmabufID: 7},
		}})
		if err := r.Receive(ctx, dstID, 0, 8192); !errors.Is(err, ErrMalformed) {
			t.Fatalf("Receive = %v, want ErrMalformed", err)
		}
		delete(s.live, 0) // the bogus token the script handed out
		checkBalanced(t, r, s)
	})
	t.Run("gather fails", func(t *testing.T) {
		r, s, m := newScriptReceiver(t, RXConfig{}, scriptRecv{frags: []Frag{
			{Offset: 0, Size: 4096, Token: 1, DmabufID: 7},
		}})
		m.failAt = 1
		if err := r.Receive(ctx, dstID, 0, 4096); err == nil || err.Error() != "device lost" {
			t.Fatalf("Receive = %v, want the gather's error", err)
		}
		checkBalanced(t, r, s)
	})
	t.Run("EOF", func(t *testing.T) {
		r, s, _ := newScriptReceiver(t, RXConfig{}, scriptRecv{frags: []Frag{{Offset: 0, Size: 100, Token: 1, DmabufID: 7}}})
		if err := r.Receive(ctx, dstID, 0, 4096); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("Receive = %v, want ErrUnexpectedEOF", err)
		}
		checkBalanced(t, r, s)
	})
	t.Run("ETOOSMALL", func(t *testing.T) {
		r, s, m := newScriptReceiver(t, RXConfig{}, scriptRecv{err: syscall.Errno(uapi.ETOOSMALL)}, scriptRecv{frags: []Frag{{Offset: 0, Size: 100, Token: 1, DmabufID: 7}}})
		_ = m
		err := r.Receive(ctx, dstID, 0, 100)
		// With the whole budget offered, ETOOSMALL cannot be fixed by
		// growing the buffer: it is reported.
		if !errors.Is(err, syscall.Errno(uapi.ETOOSMALL)) {
			t.Fatalf("Receive = %v, want errno 525", err)
		}
		if err := r.Receive(ctx, dstID, 0, 100); err != nil {
			t.Fatal(err)
		}
		checkBalanced(t, r, s)
	})
	t.Run("closed", func(t *testing.T) {
		r, s, _ := newScriptReceiver(t, RXConfig{})
		checkBalanced(t, r, s)
		if err := r.Receive(ctx, dstID, 0, 1); !errors.Is(err, ErrClosed) {
			t.Errorf("Receive after Close = %v", err)
		}
	})
}

func TestReceiverDiscard(t *testing.T) {
	recv := scriptRecv{frags: []Frag{
		{Offset: 0, Size: 4096, Token: 1, DmabufID: 7},
		{Offset: 4096, Size: 4096, Token: 2, DmabufID: 7},
	}}
	r, s, m := newScriptReceiver(t, RXConfig{}, recv)
	ctx := context.Background()
	if err := r.Receive(ctx, dstID, 0, 1000); err != nil {
		t.Fatal(err)
	}
	// The rest of frag 1, frag 2 (read ahead), then 5000 unread bytes.
	if err := r.Discard(ctx, 3096+4096+5000); err != nil {
		t.Fatal(err)
	}
	if s.trunc != 5000 {
		t.Errorf("MSG_TRUNC dropped %d bytes, want 5000", s.trunc)
	}
	if len(m.gathers) != 1 {
		t.Errorf("discard gathered: %v", m.gathers)
	}
	if st := r.Stats(); st.Bytes != 1000+3096+4096+5000 || st.DiscardedBytes != 3096+4096+5000 {
		t.Errorf("stats %+v", st)
	}
	checkBalanced(t, r, s)
}

func TestReceiverCloseReturnsReadAhead(t *testing.T) {
	r, s, _ := newScriptReceiver(t, RXConfig{}, scriptRecv{frags: []Frag{
		{Offset: 0, Size: 4096, Token: 1, DmabufID: 7},
		{Offset: 4096, Size: 4096, Token: 2, DmabufID: 7},
	}})
	if err := r.Receive(context.Background(), dstID, 0, 10); err != nil {
		t.Fatal(err)
	}
	if r.Held() != 2 {
		t.Fatalf("Held = %d, want 2", r.Held())
	}
	checkBalanced(t, r, s)
}

// fragRun returns n 4 KiB dmabuf frags of binding 7 with consecutive
// tokens from tok, at arena chunks in reverse order.
func fragRun(tok uint32, n int) []Frag {
	var fr []Frag
	for i := 0; i < n; i++ {
		fr = append(fr, Frag{Offset: uint64(255-int(tok)-i) * 4096, Size: 4096, Token: tok + uint32(i), DmabufID: 7})
	}
	return fr
}

func TestReceiverKeepsTokensAcrossExtents(t *testing.T) {
	recv := scriptRecv{frags: fragRun(1, 64)}
	r, s, m := newScriptReceiver(t, RXConfig{}, recv)
	ctx := context.Background()
	for i := int64(0); i < 64; i++ {
		if err := r.Receive(ctx, dstID, i*4096, 4096); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(m.bufs[dstID][:64*4096], expect(m, recv)) {
		t.Error("destination bytes differ")
	}
	// One recvmsg read all 64 extents; each was gathered before its
	// Receive returned; no token went back yet.
	if s.calls != 1 || len(m.gathers) != 64 || len(s.optlens) != 0 || r.Held() != 64 || len(s.live) != 64 {
		t.Errorf("%d recvmsg, %d gathers, %d DONTNEED calls, %d tokens held, %d live", s.calls, len(m.gathers), len(s.optlens), r.Held(), len(s.live))
	}
	checkBalanced(t, r, s)
	// Close returned them in one call of one range.
	if diff := cmp.Diff([]int{8}, s.optlens); diff != "" {
		t.Errorf("DONTNEED option lengths (-want +got):\n%s", diff)
	}
}

func TestReceiverReturnsTokensBeforeWaiting(t *testing.T) {
	ctx := context.Background()
	t.Run("between extents", func(t *testing.T) {
		recvs := []scriptRecv{{frags: fragRun(1, 4)}, {wait: true}, {frags: fragRun(5, 4)}}
		r, s, m := newScriptReceiver(t, RXConfig{}, recvs...)
		for i := int64(0); i < 8; i++ {
			if err := r.Receive(ctx, dstID, i*4096, 4096); err != nil {
				t.Fatal(err)
			}
			if i == 3 && (len(s.optlens) != 0 || r.Held() != 4) {
				t.Fatalf("after 4 extents: %d DONTNEED calls, %d held; want the 4 tokens kept", len(s.optlens), r.Held())
			}
		}
		if !bytes.Equal(m.bufs[dstID][:8*4096], expect(m, recvs...)) {
			t.Error("destination bytes differ")
		}
		if diff := cmp.Diff([]int{0}, s.heldAtWait); diff != "" {
			t.Errorf("tokens held when recvmsg waited (-want +got):\n%s", diff)
		}
		if st := r.Stats(); st.WaitReturns != 1 || st.Tokens.Calls != 1 || r.Held() != 4 {
			t.Errorf("WaitReturns %d, DONTNEED calls %d, held %d", st.WaitReturns, st.Tokens.Calls, r.Held())
		}
		checkBalanced(t, r, s)
	})
	t.Run("inside an extent", func(t *testing.T) {
		// The copies queued for the gather run first: their tokens can
		// go back only once the bytes are placed.
		recvs := []scriptRecv{{frags: fragRun(1, 4)}, {wait: true}, {frags: fragRun(5, 4)}}
		r, s, m := newScriptReceiver(t, RXConfig{}, recvs...)
		if err := r.Receive(ctx, dstID, 0, 8*4096); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.bufs[dstID][:8*4096], expect(m, recvs...)) {
			t.Error("destination bytes differ")
		}
		if len(m.gathers) != 2 || len(m.gathers[0]) != 4 {
			t.Errorf("gathers %v, want 4 copies before the wait and 4 after", m.gathers)
		}
		if diff := cmp.Diff([]int{0}, s.heldAtWait); diff != "" {
			t.Errorf("tokens held when recvmsg waited (-want +got):\n%s", diff)
		}
		checkBalanced(t, r, s)
	})
}

func TestReceiverBudgetAcrossExtents(t *testing.T) {
	// A budget of 8 and iovecs of 4 frags: tokens go back when fewer than
	// 4 would fit, every other recvmsg.
	var recvs []scriptRecv
	for i := 0; i < 6; i++ {
		recvs = append(recvs, scriptRecv{frags: fragRun(uint32(1+4*i), 4)})
	}
	r, s, m := newScriptReceiver(t, RXConfig{FragBudget: 8, IOBufSize: 16 << 10}, recvs...)
	ctx := context.Background()
	for i := int64(0); i < 24; i++ {
		if err := r.Receive(ctx, dstID, i*4096, 4096); err != nil {
			t.Fatal(err)
		}
		if r.Held() > 8 {
			t.Fatalf("holding %d tokens, budget 8", r.Held())
		}
	}
	if !bytes.Equal(m.bufs[dstID][:24*4096], expect(m, recvs...)) {
		t.Error("destination bytes differ")
	}
	st := r.Stats()
	if st.MaxHeld != 8 || st.BudgetFull != 2 || st.Tokens.Calls != 2 || st.WaitReturns != 0 {
		t.Errorf("MaxHeld %d, BudgetFull %d, DONTNEED calls %d, WaitReturns %d; want 8, 2, 2, 0", st.MaxHeld, st.BudgetFull, st.Tokens.Calls, st.WaitReturns)
	}
	checkBalanced(t, r, s)
	if diff := cmp.Diff([]int{8, 8, 8}, s.optlens); diff != "" {
		t.Errorf("DONTNEED option lengths (-want +got):\n%s", diff)
	}
}

func TestReceiverWatchesContextOnce(t *testing.T) {
	recvs := []scriptRecv{{frags: fragRun(1, 6)}}
	r, s, _ := newScriptReceiver(t, RXConfig{}, recvs...)
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	for i := int64(0); i < 3; i++ {
		if err := r.Receive(ctx1, dstID, i*4096, 4096); err != nil {
			t.Fatal(err)
		}
	}
	if s.watches != 1 || s.watching != 1 {
		t.Errorf("same context thrice: %d watches, %d armed; want 1, 1", s.watches, s.watching)
	}
	// A context sharing ctx1's Done channel keeps the watch.
	if err := r.Receive(context.WithValue(ctx1, dstID, 0), dstID, 3*4096, 4096); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	if err := r.Discard(ctx2, 4096); err != nil {
		t.Fatal(err)
	}
	if s.watches != 2 || s.watching != 1 {
		t.Errorf("after another context: %d watches, %d armed; want 2, 1", s.watches, s.watching)
	}
	// A context that cannot be cancelled needs no watch.
	if err := r.Discard(context.Background(), 10); err != nil {
		t.Fatal(err)
	}
	if s.watching != 0 {
		t.Errorf("%d watches armed for a background context", s.watching)
	}
	// A context of a type that is not comparable is told apart by its
	// Done channel alone, without a panic.
	type listCtx struct {
		context.Context
		_ []int
	}
	for _, ctx := range []context.Context{listCtx{Context: ctx2}, ctx2, listCtx{Context: ctx2}} {
		if err := r.Receive(ctx, dstID, 0, 10); err != nil {
			t.Fatal(err)
		}
	}
	if s.watches != 3 || s.watching != 1 {
		t.Errorf("after contexts sharing ctx2's channel: %d watches, %d armed; want 3, 1", s.watches, s.watching)
	}
	checkBalanced(t, r, s) // the socket's close checks that no watch is armed
}

func TestReceiverBatch(t *testing.T) {
	// 40 frags, a linear one among them, then 40 more: pieces of 3000
	// bytes cut frags across pieces and pass the recvmsg boundary.
	first := fragRun(1, 40)
	first[7] = Frag{Size: 4096, Linear: true}
	lin := make([]byte, 4096)
	for i := range lin {
		lin[i] = byte(i * 3)
	}
	recvs := []scriptRecv{{frags: first, linear: lin}, {frags: fragRun(41, 40)}}
	r, s, m := newScriptReceiver(t, RXConfig{}, recvs...)
	const other memory.BufferID = 3
	m.bufs[other] = make([]byte, 1<<20)
	var pieces []Piece
	total := int64(80 * 4096)
	for off := int64(0); off < total; off += 3000 {
		p := Piece{Dst: dstID, Off: off, N: min(3000, total-off)}
		if len(pieces)%2 == 1 {
			p.Dst = other
		}
		pieces = append(pieces, p)
	}
	if err := r.ReceiveBatch(context.Background(), pieces); err != nil {
		t.Fatal(err)
	}
	want := expect(m, recvs...)
	for _, p := range pieces {
		if !bytes.Equal(m.bufs[p.Dst][p.Off:p.Off+p.N], want[p.Off:p.Off+p.N]) {
			t.Fatalf("piece %+v differs from the stream", p)
		}
	}
	// One gather for all the pieces' copies (fewer than GatherBatch).
	if len(m.gathers) != 1 || s.calls != 2 {
		t.Errorf("%d gathers, %d recvmsg calls; want 1, 2", len(m.gathers), s.calls)
	}
	if b, f := r.LinearPlaced(); b != 4096 || f != 2 {
		t.Errorf("LinearPlaced = %d, %d; want the linear frag's 4096 bytes in 2 pieces", b, f)
	}
	if err := r.ReceiveBatch(context.Background(), []Piece{{Dst: dstID, N: 1}, {Dst: dstID, N: -1}}); err == nil {
		t.Error("a negative piece was accepted")
	}
	if st := r.Stats(); st.Bytes != total {
		t.Errorf("%d bytes consumed, want %d (nothing of a batch with a negative piece)", st.Bytes, total)
	}
	checkBalanced(t, r, s)
}

// TestReceiverCloseAfterConnection: the engine closes a data connection
// before its receiver; the tokens the receiver still holds then went with
// the socket, and Close reports no leak.
func TestReceiverCloseAfterConnection(t *testing.T) {
	r, s, _ := newScriptReceiver(t, RXConfig{}, scriptRecv{frags: fragRun(1, 6)})
	for i := int64(0); i < 4; i++ {
		if err := r.Receive(context.Background(), dstID, i*4096, 4096); err != nil {
			t.Fatal(err)
		}
	}
	s.connClosed = true
	if err := r.Close(); err != nil {
		t.Errorf("Close after the connection closed = %v", err)
	}
	if st := r.Stats().Tokens; st.Closed != 6 || st.Abandoned != 0 || r.Held() != 0 {
		t.Errorf("tokens %+v, held %d; want all 6 closed with the socket", st, r.Held())
	}
}
