//go:build linux

package devmem

import (
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

// A SoftNIC is a software NIC: it implements the devmem kernel operations
// in user space, over real TCP sockets, in the kernel's byte encodings, so
// that the devmem transport runs end to end on machines without a NIC that
// can split headers (docs/devmem.md). It is a test bed and the
// "--devmem=emulate" mode; everything it does is reported as
// "devmem-emulated".
//
// What it emulates:
//
//   - bind-rx / bind-tx over a mappable fd (a memfd standing for the
//     dmabuf), binding ids >= 1 allocated cyclically from one space shared by
//     RX and TX, unbind when the Binding is closed;
//   - per RX binding, a page pool of 4096-byte chunks of the bound buffer;
//   - a connection steered (Steer) to a bound queue has its payload read
//     from the real TCP socket into free chunks, in skbs of up to SkbSize
//     bytes, and reported as SCM_DEVMEM_DMABUF control messages with
//     per-socket tokens allocated lowest-free from 1, as
//     tcp_recvmsg_dmabuf does; a frag cut by the iovec length is reported
//     in pieces, each with its own token;
//   - a configurable share of skbs whose first bytes "failed header
//     split": copied into the iovec and reported as SCM_DEVMEM_LINEAR;
//   - no free chunk: the socket is not read (the TCP window closes, as
//     drops and retransmits would throttle the sender) until tokens are
//     returned or the binding goes away;
//   - recvmsg without MSG_SOCK_DEVMEM on devmem data: EFAULT; a control
//     buffer too small for one message: errno 525 (ETOOSMALL); MSG_TRUNC
//     drops data without tokens;
//   - SO_DEVMEM_DONTNEED: optlen a multiple of 8 and at most 128 entries
//     (else EINVAL), at most 1024 frags processed, unknown tokens skipped,
//     returns the number freed;
//   - devmem TX: SO_ZEROCOPY and MSG_ZEROCOPY required (else EINVAL), the
//     binding id in an SCM_DEVMEM_DMABUF cmsg of exactly CMSG_LEN(4),
//     iov_base holding dmabuf offsets, EINVAL for an unknown or RX binding,
//     EFAULT past the end of the dmabuf (a partial send if bytes were
//     sent); bytes are copied from the bound buffer to the socket as the
//     NIC's DMA would, and each send call that sent data gets the next
//     zerocopy counter and a completion, coalesced in an emulated error
//     queue read back in the kernel's sock_extended_err encoding.
//
// Differences from hardware are listed in docs/devmem.md.
//
// A SoftNIC is safe for concurrent use.
type SoftNIC struct {
	cfg SoftNICConfig

	mu       sync.Mutex
	bindings map[uint32]*softBinding
	lastID   uint32
	queues   []*softBinding // bound RX binding per queue
	flows    map[string]uint32
	socks    map[*softSocket]struct{}
	skbSeq   int64
	stats    SoftNICStats

	// testHookPoolWait, if set, runs when a socket starts waiting for a
	// free chunk.
	testHookPoolWait func()
}

// NewSoftNIC returns a software NIC.
func NewSoftNIC(cfg SoftNICConfig) (*SoftNIC, error) {
	if cfg.Ifindex == 0 {
		cfg.Ifindex = 1
	}
	if cfg.RXQueues <= 0 {
		cfg.RXQueues = 8
	}
	if cfg.SkbSize <= 0 {
		cfg.SkbSize = 64 << 10
	}
	if cfg.LinearBytes <= 0 {
		cfg.LinearBytes = 1448
	}
	return &SoftNIC{
		cfg:      cfg,
		bindings: make(map[uint32]*softBinding),
		queues:   make([]*softBinding, cfg.RXQueues),
		flows:    make(map[string]uint32),
		socks:    make(map[*softSocket]struct{}),
	}, nil
}

// Name returns "devmem-emulated", the transport name results must carry.
func (*SoftNIC) Name() string { return transport.DevmemEmulated }

const chunkSize = uapi.DevmemPageSize

type softBinding struct {
	id     uint32
	kind   BindingKind
	queues []uint32
	fd     int
	mem    []byte

	// Page pool (RX): chunk i is mem[i*chunkSize:(i+1)*chunkSize].
	free     []int32
	refs     []int32
	wake     chan struct{} // closed when a chunk is freed; armed by waiters
	armed    bool
	unbound  bool
	busy     int  // system calls in progress on mem
	released bool // memory handed to release
	done     chan struct{}
}

type bindingCloser struct {
	nic *SoftNIC
	b   *softBinding
}

func (c bindingCloser) Close() error {
	c.nic.unbind(c.b)
	return nil
}

// Steer installs a flow-steering rule: the payload conn receives arrives on
// RX queue (like "ethtool -N dev flow-type tcp4 ... queue N"). The rule is
// keyed by the connection's addresses, so it applies to every socket of this
// flow. Connections without a rule, or on a queue without binding, receive
// plain data.
func (n *SoftNIC) Steer(conn net.Conn, queue uint32) error {
	if int(queue) >= n.cfg.RXQueues {
		return &OpError{Subsystem: "devmem", Op: "steer", Err: unix.ERANGE, Message: "rx queue index out of range"}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.flows[flowKey(conn)] = queue
	return nil
}

func flowKey(conn net.Conn) string {
	return conn.LocalAddr().String() + "|" + conn.RemoteAddr().String()
}

// ReleaseCompletions posts the TX completions held back by
// SoftNICConfig.HoldCompletions.
func (n *SoftNIC) ReleaseCompletions() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for s := range n.socks {
		held := s.held
		s.held = nil
		for _, c := range held {
			s.queueCompletionLocked(c)
		}
	}
}

// Stats returns the NIC's counters.
func (n *SoftNIC) Stats() SoftNICStats {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.stats
	st.Bindings = len(n.bindings)
	st.Sockets = len(n.socks)
	for s := range n.socks {
		st.Tokens += s.outstanding
	}
	for _, b := range n.bindings {
		if b.kind == BindingRX {
			st.FreeChunks += len(b.free)
			st.Chunks += len(b.refs)
		}
	}
	return st
}

// Check reports what is still held: live bindings, open sockets,
// outstanding tokens, and tokens that were released only by closing their
// socket. Tests call it at the end to catch leaks.
func (n *SoftNIC) Check() error {
	st := n.Stats()
	if st.Bindings != 0 || st.Sockets != 0 || st.Tokens != 0 || st.TokensReleasedOnClose != 0 {
		return fmt.Errorf("%w: software NIC still has %d bindings, %d sockets, %d tokens; %d tokens were released only by closing their socket",
			ErrTokenLeak, st.Bindings, st.Sockets, st.Tokens, st.TokensReleasedOnClose)
	}
	return nil
}

// BindRX binds the buffer behind fd (any file that can be mapped shared,
// such as a memfd) to RX queues. The checks and errnos are the kernel's
// for a device that supports devmem.
func (n *SoftNIC) BindRX(ifindex, fd int, queues []uint32) (*Binding, error) {
	const op = "bind-rx"
	if ifindex != n.cfg.Ifindex {
		return nil, &OpError{Subsystem: "devmem", Op: op, Err: unix.ENODEV}
	}
	if len(queues) == 0 {
		return nil, &OpError{Subsystem: "devmem", Op: op, Err: unix.EINVAL}
	}
	n.mu.Lock()
	for _, q := range queues {
		if int(q) >= n.cfg.RXQueues {
			n.mu.Unlock()
			return nil, &OpError{Subsystem: "devmem", Op: op, Err: unix.ERANGE, Message: "rx queue index out of range"}
		}
		if n.queues[q] != nil {
			n.mu.Unlock()
			return nil, &OpError{Subsystem: "devmem", Op: op, Err: unix.EEXIST, Message: "designated queue already memory provider bound"}
		}
	}
	n.mu.Unlock()
	b, err := n.mapBinding(op, fd, BindingRX)
	if err != nil {
		return nil, err
	}
	chunks := len(b.mem) / chunkSize
	if chunks == 0 {
		_ = n.release(b)
		return nil, &OpError{Subsystem: "devmem", Op: op, Err: unix.EINVAL, Message: "dmabuf smaller than a page"}
	}
	b.refs = make([]int32, chunks)
	b.free = make([]int32, chunks)
	for i := range b.free {
		b.free[i] = int32(chunks - 1 - i) // pop from the end: chunk 0 first
	}
	b.queues = append([]uint32(nil), queues...)
	n.mu.Lock()
	for _, q := range queues {
		if n.queues[q] != nil {
			n.mu.Unlock()
			_ = n.release(b)
			return nil, &OpError{Subsystem: "devmem", Op: op, Err: unix.EEXIST, Message: "designated queue already memory provider bound"}
		}
	}
	n.registerLocked(b)
	for _, q := range queues {
		n.queues[q] = b
	}
	n.mu.Unlock()
	return newBinding(b.id, ifindex, BindingRX, queues, bindingCloser{n, b}), nil
}

// BindTX binds the buffer behind fd for devmem TX.
func (n *SoftNIC) BindTX(ifindex, fd int) (*Binding, error) {
	const op = "bind-tx"
	if ifindex != n.cfg.Ifindex {
		return nil, &OpError{Subsystem: "devmem", Op: op, Err: unix.ENODEV}
	}
	b, err := n.mapBinding(op, fd, BindingTX)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.registerLocked(b)
	n.mu.Unlock()
	return newBinding(b.id, ifindex, BindingTX, nil, bindingCloser{n, b}), nil
}

// mapBinding takes a reference on fd (as dma_buf_get does) and maps it.
func (n *SoftNIC) mapBinding(op string, fd int, kind BindingKind) (*softBinding, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, &OpError{Subsystem: "devmem", Op: op, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(dup, &st); err != nil {
		_ = unix.Close(dup)
		return nil, &OpError{Subsystem: "devmem", Op: op, Err: err}
	}
	if st.Size <= 0 {
		_ = unix.Close(dup)
		return nil, &OpError{Subsystem: "devmem", Op: op, Err: unix.EINVAL, Message: "empty dmabuf"}
	}
	mem, err := unix.Mmap(dup, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		_ = unix.Close(dup)
		return nil, &OpError{Subsystem: "devmem", Op: op, Err: err, Message: "cannot map the dmabuf"}
	}
	return &softBinding{kind: kind, fd: dup, mem: mem, done: make(chan struct{})}, nil
}

// registerLocked gives b the next free id, cyclically from 1 (the kernel's
// xa_alloc_cyclic with XA_FLAGS_ALLOC1 over one space for RX and TX).
func (n *SoftNIC) registerLocked(b *softBinding) {
	id := n.lastID
	for {
		id++
		if id == 0 {
			id = 1
		}
		if _, used := n.bindings[id]; !used {
			break
		}
	}
	n.lastID = id
	b.id = id
	n.bindings[id] = b
}

// unbind removes the binding: its id is no longer valid, its queues revert
// to host memory, and its memory is released once no frag uses it.
func (n *SoftNIC) unbind(b *softBinding) {
	n.mu.Lock()
	if b.unbound {
		n.mu.Unlock()
		return
	}
	b.unbound = true
	delete(n.bindings, b.id)
	for _, q := range b.queues {
		if n.queues[q] == b {
			n.queues[q] = nil
		}
	}
	close(b.done)
	b.wakeLocked()
	release := b.takeIdleLocked()
	n.mu.Unlock()
	if release {
		_ = n.release(b)
	}
}

// takeIdleLocked reports, once, that an unbound binding's memory is no longer
// used by any frag or system call; the caller then releases it.
func (b *softBinding) takeIdleLocked() bool {
	if b.released || !b.unbound || b.busy != 0 || len(b.free) != len(b.refs) {
		return false
	}
	b.released = true
	return true
}

func (n *SoftNIC) release(b *softBinding) error {
	err := unix.Munmap(b.mem)
	b.mem = nil
	if cerr := unix.Close(b.fd); err == nil {
		err = cerr
	}
	return err
}

func (b *softBinding) wakeLocked() {
	if b.armed {
		close(b.wake)
		b.armed = false
	}
}

func (b *softBinding) waitChanLocked() <-chan struct{} {
	if !b.armed {
		b.wake = make(chan struct{})
		b.armed = true
	}
	return b.wake
}

// unrefLocked drops one reference on a chunk; a chunk without references
// returns to the page pool. It reports whether b's memory can now be
// released.
func (b *softBinding) unrefLocked(chunk int32) bool {
	b.refs[chunk]--
	if b.refs[chunk] == 0 {
		b.free = append(b.free, chunk)
		b.wakeLocked()
	}
	return b.takeIdleLocked()
}

func (n *SoftNIC) rxBindingLocked(flow string) *softBinding {
	q, ok := n.flows[flow]
	if !ok {
		return nil
	}
	return n.queues[q]
}

func (n *SoftNIC) open(conn net.Conn) (socket, error) {
	h, err := openHostSocket(conn)
	if err != nil {
		return nil, err
	}
	s := &softSocket{nic: n, host: h, conn: conn, flow: flowKey(conn), zcNext: n.cfg.ZerocopyStart}
	var serr error
	if err := h.rc.Control(func(fd uintptr) {
		var sa unix.Sockaddr
		sa, serr = unix.Getsockname(int(fd))
		_, s.v6 = sa.(*unix.SockaddrInet6)
	}); err != nil || serr != nil {
		return nil, &OpError{Subsystem: "devmem", Op: "getsockname", Err: errors.Join(err, serr)}
	}
	n.mu.Lock()
	n.socks[s] = struct{}{}
	n.mu.Unlock()
	return s, nil
}

// softSocket is the software NIC's state for one connection: the skbs
// received into the dmabuf and not yet read, the socket's tokens (the
// kernel's sk_user_frags), and its zerocopy counter and error queue.
type softSocket struct {
	nic  *SoftNIC
	host *hostSocket
	conn net.Conn
	flow string
	v6   bool

	// Guarded by nic.mu.
	cancel      chan struct{}
	rxq         []softSkb
	tokens      []softToken // index: token; b == nil when free
	freeTokens  tokenHeap
	outstanding int
	closed      bool

	zcNext    uint32
	errq      []Completion
	errqWake  chan struct{}
	errqArmed bool
	held      []Completion

	linear  []byte // receive buffer for linear parts
	scratch [1]byte
}

type softSkb struct {
	b       *softBinding
	linear  []byte
	linOff  int
	frags   []softFrag
	fragIdx int
}

type softFrag struct {
	chunk     int32
	size, off uint32 // bytes in the chunk; bytes already reported
}

type softToken struct {
	b     *softBinding
	chunk int32
}

// tokenHeap holds freed tokens, smallest first, so that tokens are
// allocated lowest-free like xa_alloc does.
type tokenHeap []uint32

func (h tokenHeap) Len() int           { return len(h) }
func (h tokenHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h tokenHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *tokenHeap) Push(x any)        { *h = append(*h, x.(uint32)) }
func (h *tokenHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (s *softSocket) allocTokenLocked(b *softBinding, chunk int32) uint32 {
	var tok uint32
	if s.freeTokens.Len() > 0 {
		tok = heap.Pop(&s.freeTokens).(uint32)
	} else {
		if len(s.tokens) == 0 {
			s.tokens = append(s.tokens, softToken{}) // token 0 is never used
		}
		tok = uint32(len(s.tokens))
		s.tokens = append(s.tokens, softToken{})
	}
	s.tokens[tok] = softToken{b: b, chunk: chunk}
	b.refs[chunk]++
	s.outstanding++
	return tok
}

// freeTokenLocked returns a token; it reports whether it was live and the
// binding whose memory may now be released.
func (s *softSocket) freeTokenLocked(tok uint32) (bool, *softBinding) {
	if tok == 0 || int64(tok) >= int64(len(s.tokens)) || s.tokens[tok].b == nil {
		return false, nil
	}
	t := s.tokens[tok]
	s.tokens[tok] = softToken{}
	heap.Push(&s.freeTokens, tok)
	s.outstanding--
	if t.b.unrefLocked(t.chunk) {
		return true, t.b
	}
	return true, nil
}

func (s *softSocket) watch(ctx context.Context) func() {
	if ctx.Done() == nil {
		return func() {}
	}
	ch := make(chan struct{})
	s.nic.mu.Lock()
	s.cancel = ch
	s.nic.mu.Unlock()
	stop := watchDeadline(ctx, s.conn, func() { close(ch) })
	return func() {
		stop()
		s.nic.mu.Lock()
		s.cancel = nil
		s.nic.mu.Unlock()
	}
}

var errDeadline = os.ErrDeadlineExceeded

func (s *softSocket) recvmsg(p, oob []byte, flags int) (int, int, int, error) {
	const op = "recvmsg"
	if flags&unix.MSG_TRUNC != 0 {
		return s.truncate(p, flags)
	}
	for {
		n := s.nic
		n.mu.Lock()
		if s.closed {
			n.mu.Unlock()
			return 0, 0, 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.EBADF}
		}
		if len(s.rxq) > 0 {
			if flags&unix.MSG_SOCK_DEVMEM == 0 {
				n.mu.Unlock()
				return 0, 0, 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.EFAULT}
			}
			got, oobn, err := s.deliverLocked(p, oob)
			n.mu.Unlock()
			return got, oobn, 0, err
		}
		b := n.rxBindingLocked(s.flow)
		if b == nil {
			// Not steered to a bound queue: plain TCP data, as the
			// kernel delivers it (MSG_SOCK_DEVMEM is harmless).
			n.mu.Unlock()
			return s.host.recvmsg(p, oob, flags&^unix.MSG_SOCK_DEVMEM)
		}
		if flags&unix.MSG_SOCK_DEVMEM == 0 || len(oob) < devmemCmsgSpace || len(p) == 0 {
			// The kernel fails only once there is devmem data to read.
			n.mu.Unlock()
			avail, _, _, err := s.host.recvmsg(s.scratch[:], nil, unix.MSG_PEEK)
			if err != nil || avail == 0 || len(p) == 0 {
				return 0, 0, 0, err
			}
			if flags&unix.MSG_SOCK_DEVMEM == 0 {
				return 0, 0, 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.EFAULT}
			}
			return 0, 0, 0, &OpError{Subsystem: "devmem", Op: op, Err: syscall.Errno(uapi.ETOOSMALL)}
		}
		if len(b.free) == 0 {
			// Page pool empty: the NIC cannot take the packet.
			n.stats.PoolEmpty++
			wake, cancel, hook := b.waitChanLocked(), s.cancel, n.testHookPoolWait
			n.mu.Unlock()
			if hook != nil {
				hook()
			}
			select {
			case <-wake:
			case <-b.done:
			case <-cancel:
				return 0, 0, 0, &OpError{Subsystem: "devmem", Op: op, Err: errDeadline}
			}
			continue
		}
		n.mu.Unlock()
		eof, err := s.fill(b)
		if err != nil {
			return 0, 0, 0, err
		}
		if eof {
			return 0, 0, 0, nil
		}
	}
}

// fill receives one skb from the wire into free chunks of b (and, for a
// linear skb, into host memory), up to SkbSize bytes whatever the reader
// asked for, as a NIC would. It blocks until data or EOF arrives.
func (s *softSocket) fill(b *softBinding) (eof bool, err error) {
	n := s.nic
	target := n.cfg.SkbSize
	n.mu.Lock()
	if b.unbound || s.closed {
		n.mu.Unlock()
		return false, nil // caller re-evaluates
	}
	linear := 0
	n.skbSeq++
	if n.cfg.LinearEvery > 0 && n.skbSeq%int64(n.cfg.LinearEvery) == 0 {
		linear = min(n.cfg.LinearBytes, target)
	}
	k := min((target-linear+chunkSize-1)/chunkSize, len(b.free))
	want := min(target-linear, k*chunkSize)
	chunks := make([]int32, k)
	for i := range chunks {
		c := b.free[len(b.free)-1]
		b.free = b.free[:len(b.free)-1]
		b.refs[c] = 1 // the skb's reference
		chunks[i] = c
	}
	b.busy++
	n.mu.Unlock()

	if len(s.linear) < linear {
		s.linear = make([]byte, linear)
	}
	iov := make([][]byte, 0, k+1)
	if linear > 0 {
		iov = append(iov, s.linear[:linear])
	}
	rest := want
	for _, c := range chunks {
		l := min(rest, chunkSize)
		iov = append(iov, b.mem[int(c)*chunkSize:int(c)*chunkSize+l])
		rest -= l
	}
	var got int
	var rerr error
	err = s.host.rc.Read(func(fd uintptr) bool {
		got, rerr = unix.Readv(int(fd), iov)
		return rerr != unix.EAGAIN
	})
	if err == nil {
		err = rerr
	}

	n.mu.Lock()
	defer n.mu.Unlock()
	b.busy--
	skb := softSkb{b: b}
	if err == nil && got > 0 {
		l := min(got, linear)
		skb.linear = append([]byte(nil), s.linear[:l]...)
		got -= l
		n.stats.DevmemRXBytes += int64(l)
		if l > 0 {
			n.stats.LinearSkbs++
		}
	}
	release := false
	for _, c := range chunks {
		if err == nil && got > 0 {
			sz := min(got, chunkSize)
			skb.frags = append(skb.frags, softFrag{chunk: c, size: uint32(sz)})
			got -= sz
			n.stats.DevmemRXBytes += int64(sz)
			continue
		}
		release = b.unrefLocked(c) || release
	}
	if release || b.takeIdleLocked() {
		defer func() { _ = n.release(b) }()
	}
	if len(skb.linear) > 0 || len(skb.frags) > 0 {
		n.stats.Skbs++
	}
	if err != nil {
		return false, &OpError{Subsystem: "devmem", Op: "recvmsg", Err: err}
	}
	if len(skb.linear) == 0 && len(skb.frags) == 0 {
		return true, nil
	}
	s.rxq = append(s.rxq, skb)
	return false, nil
}

// deliverLocked reports queued skbs the way tcp_recvmsg_dmabuf does: per
// skb, the linear part is copied into the iovec with an SCM_DEVMEM_LINEAR
// message, then each frag gets an SCM_DEVMEM_DMABUF message with a fresh
// token. The iovec length caps the bytes consumed (a frag may be cut, its
// rest reported by the next call with another token); a control message
// that does not fit ends the call, or fails it with ETOOSMALL if nothing was
// delivered yet.
func (s *softSocket) deliverLocked(p, oob []byte) (int, int, error) {
	copied, iovPos, o := 0, 0, 0
	room := func() bool { return o+devmemCmsgSpace <= len(oob) }
	tooSmall := func() (int, int, error) {
		if copied == 0 {
			return 0, 0, &OpError{Subsystem: "devmem", Op: "recvmsg", Err: syscall.Errno(uapi.ETOOSMALL)}
		}
		return copied, o, nil
	}
	for len(s.rxq) > 0 && copied < len(p) {
		skb := &s.rxq[0]
		if skb.linOff < len(skb.linear) {
			if !room() {
				return tooSmall()
			}
			take := min(len(skb.linear)-skb.linOff, len(p)-copied)
			copy(p[iovPos:], skb.linear[skb.linOff:skb.linOff+take])
			o = len(appendDevmemCmsg(oob[:o], Frag{Size: uint32(take), Linear: true}))
			skb.linOff += take
			iovPos += take
			copied += take
		}
		for skb.fragIdx < len(skb.frags) && copied < len(p) {
			if !room() {
				return tooSmall()
			}
			f := &skb.frags[skb.fragIdx]
			take := min(int(f.size-f.off), len(p)-copied)
			tok := s.allocTokenLocked(skb.b, f.chunk)
			o = len(appendDevmemCmsg(oob[:o], Frag{
				Offset:   uint64(f.chunk)*chunkSize + uint64(f.off),
				Size:     uint32(take),
				Token:    tok,
				DmabufID: skb.b.id,
			}))
			f.off += uint32(take)
			copied += take
			if f.off == f.size {
				skb.b.unrefLocked(f.chunk) // the skb's reference; the token holds one
				skb.fragIdx++
			}
		}
		if skb.linOff < len(skb.linear) || skb.fragIdx < len(skb.frags) {
			break
		}
		s.rxq = s.rxq[1:]
	}
	return copied, o, nil
}

// truncate drops up to len(p) bytes without reporting them (MSG_TRUNC).
func (s *softSocket) truncate(p []byte, flags int) (int, int, int, error) {
	n := s.nic
	n.mu.Lock()
	if len(s.rxq) == 0 {
		n.mu.Unlock()
		return s.host.recvmsg(p, nil, flags&^unix.MSG_SOCK_DEVMEM)
	}
	dropped := 0
	var release []*softBinding
	for len(s.rxq) > 0 && dropped < len(p) {
		skb := &s.rxq[0]
		take := min(len(skb.linear)-skb.linOff, len(p)-dropped)
		skb.linOff += take
		dropped += take
		for skb.fragIdx < len(skb.frags) && dropped < len(p) {
			f := &skb.frags[skb.fragIdx]
			take := min(int(f.size-f.off), len(p)-dropped)
			f.off += uint32(take)
			dropped += take
			if f.off == f.size {
				if skb.b.unrefLocked(f.chunk) {
					release = append(release, skb.b)
				}
				skb.fragIdx++
			}
		}
		if skb.linOff < len(skb.linear) || skb.fragIdx < len(skb.frags) {
			break
		}
		s.rxq = s.rxq[1:]
	}
	n.mu.Unlock()
	for _, b := range release {
		_ = n.release(b)
	}
	return dropped, 0, 0, nil
}

// dontneed implements SO_DEVMEM_DONTNEED with the checks of
// sock_devmem_dontneed (net/core/sock.c, 6.18).
func (s *softSocket) dontneed(opt []byte) (int, error) {
	const op = "setsockopt SO_DEVMEM_DONTNEED"
	if len(opt) < 4 || len(opt)%uapi.SizeofDmabufToken != 0 || len(opt) > uapi.MAX_DONTNEED_TOKENS*uapi.SizeofDmabufToken {
		return 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.EINVAL}
	}
	n := s.nic
	n.mu.Lock()
	freed, frags := 0, 0
	var release []*softBinding
walk:
	for i := 0; i < len(opt); i += uapi.SizeofDmabufToken {
		start := binary.NativeEndian.Uint32(opt[i:])
		count := binary.NativeEndian.Uint32(opt[i+4:])
		for j := uint32(0); j < count; j++ {
			frags++
			if frags > uapi.MAX_DONTNEED_FRAGS {
				break walk
			}
			ok, b := s.freeTokenLocked(start + j)
			if ok {
				freed++
			}
			if b != nil {
				release = append(release, b)
			}
		}
	}
	n.mu.Unlock()
	for _, b := range release {
		_ = n.release(b)
	}
	return freed, nil
}

func (s *softSocket) setZerocopy() error { return s.host.setZerocopy() }

func (s *softSocket) zerocopyEnabled() (bool, error) {
	var v int
	var gerr error
	err := s.host.rc.Control(func(fd uintptr) {
		v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ZEROCOPY)
	})
	if err == nil {
		err = gerr
	}
	return v != 0, err
}

// parseTXControl extracts the dmabuf id of a devmem TX sendmsg the way
// __sock_cmsg_send does: an SCM_DEVMEM_DMABUF message must be exactly
// CMSG_LEN(4); other SOL_SOCKET messages are not emulated (EINVAL).
func parseTXControl(control []byte) (id uint32, err error) {
	for off := 0; off < len(control); {
		b := control[off:]
		if len(b) < uapi.SizeofCmsghdr {
			return 0, unix.EINVAL
		}
		l := readWord(b)
		level := int32(binary.NativeEndian.Uint32(b[wordSize:]))
		typ := int32(binary.NativeEndian.Uint32(b[wordSize+4:]))
		if l < uint64(uapi.SizeofCmsghdr) || l > uint64(len(b)) {
			return 0, unix.EINVAL
		}
		if level == unix.SOL_SOCKET {
			if typ != unix.SCM_DEVMEM_DMABUF || l != uint64(uapi.CmsgLen(4)) {
				return 0, unix.EINVAL
			}
			id = binary.NativeEndian.Uint32(b[uapi.SizeofCmsghdr:])
		}
		next := uapi.CmsgAlign(int(l))
		if next >= len(b) {
			break
		}
		off += next
	}
	return id, nil
}

// sendmsg implements devmem TX with the checks of tcp_sendmsg_locked and
// net_devmem_get_binding (6.18).
func (s *softSocket) sendmsg(iov []uapi.Iovec, control []byte, flags int) (int, error) {
	const op = "sendmsg"
	id, cerr := parseTXControl(control)
	if cerr == nil && id == 0 {
		// Not a devmem send: the kernel's ordinary path.
		return s.host.sendmsg(iov, control, flags)
	}
	zc, err := s.zerocopyEnabled()
	if err != nil {
		return 0, &OpError{Subsystem: "devmem", Op: op, Err: err}
	}
	var size uint64
	for _, v := range iov {
		size += uint64(v.Len)
	}
	n := s.nic
	var b *softBinding
	if flags&unix.MSG_ZEROCOPY != 0 && size > 0 && zc && cerr == nil {
		n.mu.Lock()
		b = n.bindings[id]
		if b == nil || b.kind != BindingTX {
			n.mu.Unlock()
			return 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.EINVAL}
		}
		b.busy++
		n.mu.Unlock()
		defer func() {
			n.mu.Lock()
			b.busy--
			idle := b.takeIdleLocked()
			n.mu.Unlock()
			if idle {
				_ = n.release(b)
			}
		}()
	}
	if cerr == nil && (flags&unix.MSG_ZEROCOPY == 0 || !zc) {
		return 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.EINVAL}
	}
	if cerr != nil {
		return 0, &OpError{Subsystem: "devmem", Op: op, Err: cerr}
	}
	if b == nil {
		return 0, nil
	}
	// The NIC reads page by page from the dmabuf: bytes before the end are
	// sent, the first byte past it is EFAULT.
	var bufs [][]byte
	fault := false
	for _, v := range iov {
		off, l := uint64(v.Base), uint64(v.Len)
		if l == 0 {
			continue
		}
		if off >= uint64(len(b.mem)) {
			fault = true
			break
		}
		end := min(off+l, uint64(len(b.mem)))
		bufs = append(bufs, b.mem[off:end])
		if end < off+l {
			fault = true
			break
		}
	}
	sent := 0
	if len(bufs) > 0 {
		var werr error
		err := s.host.rc.Write(func(fd uintptr) bool {
			sent, werr = unix.Writev(int(fd), bufs)
			return werr != unix.EAGAIN
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			return 0, &OpError{Subsystem: "devmem", Op: op, Err: err}
		}
	}
	if sent == 0 {
		if fault {
			return 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.EFAULT}
		}
		return 0, nil
	}
	n.mu.Lock()
	n.stats.DevmemTXBytes += int64(sent)
	seq := s.zcNext
	s.zcNext++
	c := Completion{Lo: seq, Hi: seq}
	if n.cfg.HoldCompletions {
		s.held = append(s.held, c)
	} else {
		s.queueCompletionLocked(c)
	}
	n.mu.Unlock()
	return sent, nil
}

// queueCompletionLocked appends a completion to the error queue, extending
// the last one when the ranges are consecutive (the kernel's
// skb_zerocopy_notify_extend).
func (s *softSocket) queueCompletionLocked(c Completion) {
	if k := len(s.errq); k > 0 {
		last := &s.errq[k-1]
		if last.Hi+1 == c.Lo && last.Copied == c.Copied && last.Count()+c.Count() < 1<<32 {
			last.Hi = c.Hi
			return
		}
	}
	s.errq = append(s.errq, c)
	if s.errqArmed {
		close(s.errqWake)
		s.errqArmed = false
	}
}

func (s *softSocket) recvErrqueue(oob []byte, wait bool) (int, error) {
	const op = "recvmsg MSG_ERRQUEUE"
	n := s.nic
	n.mu.Lock()
	for len(s.errq) == 0 {
		if !wait || s.closed {
			n.mu.Unlock()
			return 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.EAGAIN}
		}
		if !s.errqArmed {
			s.errqWake = make(chan struct{})
			s.errqArmed = true
		}
		wake, cancel := s.errqWake, s.cancel
		n.mu.Unlock()
		select {
		case <-wake:
		case <-cancel:
			return 0, &OpError{Subsystem: "devmem", Op: op, Err: errDeadline}
		}
		n.mu.Lock()
	}
	need := uapi.CmsgSpace(uapi.SizeofSockExtendedErr + sizeofSockaddrInet4)
	if s.v6 {
		need = uapi.CmsgSpace(uapi.SizeofSockExtendedErr + sizeofSockaddrInet6)
	}
	if len(oob) < need {
		n.mu.Unlock()
		return 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.ENOBUFS, Message: "control message truncated"}
	}
	c := s.errq[0]
	s.errq = s.errq[1:]
	n.mu.Unlock()
	return len(appendZerocopyCmsg(oob[:0], c, s.v6)), nil
}

// close emulates the socket's destruction for the NIC: queued skbs and
// outstanding tokens are released (tcp_release_user_frags), and counted as
// released on close.
func (s *softSocket) close() error {
	n := s.nic
	n.mu.Lock()
	if s.closed {
		n.mu.Unlock()
		return nil
	}
	s.closed = true
	var release []*softBinding
	for tok := range s.tokens {
		if s.tokens[tok].b != nil {
			n.stats.TokensReleasedOnClose++
			if _, b := s.freeTokenLocked(uint32(tok)); b != nil {
				release = append(release, b)
			}
		}
	}
	for _, skb := range s.rxq {
		for _, f := range skb.frags[skb.fragIdx:] {
			if skb.b.unrefLocked(f.chunk) {
				release = append(release, skb.b)
			}
		}
	}
	s.rxq = nil
	if s.errqArmed {
		close(s.errqWake)
		s.errqArmed = false
	}
	delete(n.socks, s)
	n.mu.Unlock()
	for _, b := range release {
		_ = n.release(b)
	}
	return nil
}
