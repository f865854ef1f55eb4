//go:build linux

package devmem

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/transport"
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
//   - skbs that failed header split entirely (on demand with
//     FailHeaderSplit, or every UnsplitEvery-th): their payload is in host
//     memory, so they are readable skbs, returned as plain bytes without
//     devmem control messages and never in the same recvmsg as devmem
//     frags (the kernel's last_copied_dmabuf rule);
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
	unsplit  int // skbs still to fail header split (FailHeaderSplit)
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

// FailHeaderSplit makes the next skbs skbs the NIC receives, on any
// steered connection, fail header split entirely, as a NIC does with a
// packet it cannot parse or one its driver copies into a linear buffer: the
// whole payload lands in host memory, the skb is an ordinary readable one,
// and recvmsg(MSG_SOCK_DEVMEM) returns its bytes without devmem control
// messages (and not in the same call as devmem frags). It replaces any count
// still pending; 0 cancels.
func (n *SoftNIC) FailHeaderSplit(skbs int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.unsplit = max(skbs, 0)
}

func flowKey(conn net.Conn) string {
	return conn.LocalAddr().String() + "|" + conn.RemoteAddr().String()
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
