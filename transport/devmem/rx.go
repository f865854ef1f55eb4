package devmem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"syscall"

	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

// RXConfig configures a Receiver.
type RXConfig struct {
	// Kernel performs the socket calls: Host() or a *SoftNIC.
	Kernel Kernel
	// Binding is the RX binding whose dmabuf the connection's frags land
	// in. Frags of any other binding fail with ErrFlowSteering.
	Binding *Binding
	// Arena is the provider buffer that was exported as the bound dmabuf:
	// a frag at dmabuf offset o is memory.Copy{Src: Arena, SrcOff: o}.
	Arena memory.BufferID
	// Gather copies frags from the arena to their destination; it must be
	// complete when it returns (the frags' tokens are returned to the
	// kernel right after, and the NIC may then overwrite them). Pass
	// Provider.Gather. The slice is reused after the call.
	Gather func(ctx context.Context, copies []memory.Copy) error
	// CopyIn copies bytes that arrived in host memory (SCM_DEVMEM_LINEAR
	// frags, and packets the NIC did not split) to the destination. Pass
	// Provider.CopyIn. src is reused after the call.
	CopyIn func(ctx context.Context, dst memory.BufferID, off int64, src []byte) error

	// FragBudget is the most frags (tokens) the receiver holds at once:
	// received and not yet returned with SO_DEVMEM_DONTNEED. Each pins a
	// chunk (up to 4 KiB) of the arena, so the sum of the budgets of the
	// receivers sharing a binding must stay below the number of chunks
	// of the binding's page pool, or the NIC runs out of buffers and
	// drops packets. Default 1024 (4 MiB).
	FragBudget int
	// GatherBatch is the most copies passed to one Gather call. Default
	// 256.
	GatherBatch int
	// IOBufSize is the iovec size of each recvmsg: it caps the stream
	// bytes one call consumes and holds the linear bytes. Default 256 KiB.
	// A recvmsg may consume bytes beyond the current Receive or Discard
	// (read-ahead, saving system calls when extents are small): the
	// extra frags are kept, counted against the budget, and used by the
	// next call.
	IOBufSize int
	// RejectPlain fails a Receive with ErrNotDevmem when payload arrives
	// without devmem cmsgs, instead of copying it in as linear bytes.
	//
	// By default such payload is accepted: the kernel returns a packet the
	// NIC did not header-split (it could not parse it, or its driver
	// copied a small packet into a linear buffer) as an ordinary readable
	// skb, with no SCM_DEVMEM_* cmsg at all, and never in the same recvmsg
	// as devmem frags; its bytes are in the iovec, like SCM_DEVMEM_LINEAR
	// bytes. They are copied in through CopyIn and counted in
	// RXStats.LinearBytes and PlainBytes and in LinearPlaced. The same
	// happens, for every byte, to a flow that is not steered to the bound
	// queue: the counters show it. Payload without cmsgs after the binding
	// was closed is always an error (ErrBindingClosed).
	RejectPlain bool
}

const (
	defaultFragBudget  = 1024
	defaultGatherBatch = 256
	defaultIOBufSize   = 256 << 10
)

// RXStats are a Receiver's counters.
type RXStats struct {
	Bytes       int64 // stream bytes consumed (received and discarded)
	DevmemBytes int64 // bytes that arrived in the dmabuf
	// LinearBytes are the bytes that arrived in host memory: in
	// SCM_DEVMEM_LINEAR frags, or without devmem cmsgs (PlainBytes).
	LinearBytes    int64
	PlainBytes     int64 // bytes that arrived without devmem cmsgs: packets the NIC did not split
	DiscardedBytes int64
	Frags          int64 // dmabuf frags received
	// LinearFrags counts the runs of host-memory bytes received: each
	// SCM_DEVMEM_LINEAR frag, and each recvmsg that returned payload
	// without devmem cmsgs (PlainRecvmsgs).
	LinearFrags   int64
	PlainRecvmsgs int64
	Recvmsgs      int64 // recvmsg calls that returned data
	GatherCalls   int64
	Copies        int64 // gather copies issued
	MaxHeld       int   // most tokens held at once
	// BudgetFull counts the recvmsg calls that found too little of the
	// frag budget left for a full iovec of frags (or for the control
	// buffer ETOOSMALL asked for) and first returned the tokens of what
	// was gathered: the receiver's token exhaustion, and its recovery.
	// Tokens are returned lazily, so this is also the usual way they go
	// back while data keeps arriving.
	BudgetFull int64
	// WaitReturns counts the recvmsg calls that found no data while the
	// receiver held tokens, which it then returned before waiting.
	WaitReturns int64
	// PlacedLinearBytes and PlacedLinearFrags are the host-memory bytes
	// copied into destinations with CopyIn and the copies that took (a
	// frag placed in two extents counts twice); discarded bytes are not
	// counted. LinearPlaced returns them.
	PlacedLinearBytes int64
	PlacedLinearFrags int64
	Tokens            TokenStats
}

// A Receiver reads the payload of one devmem data connection into provider
// memory: it implements transport.Receiver. It reads with
// recvmsg(MSG_SOCK_DEVMEM), maps each frag to its place in the destination by
// the running stream offset, gathers dmabuf frags from the arena in batches,
// copies linear frags in, and returns tokens to the kernel (coalesced,
// batched) only after the gather that read their bytes completed.
//
// Every Receive and Discard has its bytes gathered before it returns, but
// tokens go back lazily, across calls: when a SO_DEVMEM_DONTNEED call is
// full, when the budget has too little room left for a full recvmsg, before
// a recvmsg would wait for data (a MSG_DONTWAIT attempt comes first), and on
// Close.
//
// A recvmsg may report frags past the bytes a call asked for (read-ahead,
// or a frag that straddles two extents); they are kept, still holding their
// tokens, and consumed first by the next Receive or Discard.
//
// A Receiver is used by one goroutine at a time; the engine calls it in
// stream order.
type Receiver struct {
	cfg  RXConfig
	sock socket

	iobuf []byte
	oob   []byte

	pend     []Frag // frags received and not fully consumed, stream order
	pendHead int
	headUsed uint32 // bytes of pend[pendHead] already consumed
	copies   []memory.Copy
	after    []uint32      // tokens to return once the queued copies are gathered
	batch    *TokenBatcher // its Outstanding is the tokens held

	minOOB   int    // control buffer floor after ETOOSMALL
	fullRoom int    // frags a full iovec brings: the room kept free for a recvmsg
	id       uint32 // the binding's id

	// The socket watches a context from the first call that passes it
	// until a call passes one with another Done channel, or Close: the
	// engine passes the same context to every call of a connection.
	// watchCtx is that context if its type is comparable (else nil), so
	// that a call with the same one is recognised without asking for its
	// Done channel.
	watchCtx  context.Context
	watchDone <-chan struct{}
	unwatch   func()

	closed bool
	stats  RXStats
}

// NewReceiver prepares the established connection conn for devmem receive.
// The receiver does not own conn; Close does not close it.
func NewReceiver(conn net.Conn, cfg RXConfig) (*Receiver, error) {
	if cfg.Kernel == nil || cfg.Binding == nil || cfg.Gather == nil || cfg.CopyIn == nil {
		return nil, errors.New("devmem: RXConfig needs Kernel, Binding, Gather and CopyIn")
	}
	if cfg.Binding.Kind() != BindingRX {
		return nil, fmt.Errorf("devmem: %v is not an RX binding", cfg.Binding)
	}
	if cfg.FragBudget <= 0 {
		cfg.FragBudget = defaultFragBudget
	}
	if cfg.GatherBatch <= 0 {
		cfg.GatherBatch = defaultGatherBatch
	}
	if cfg.IOBufSize <= 0 {
		cfg.IOBufSize = defaultIOBufSize
	}
	sock, err := cfg.Kernel.open(conn)
	if err != nil {
		return nil, err
	}
	r := &Receiver{
		cfg:      cfg,
		sock:     sock,
		fullRoom: min(cfg.FragBudget, (cfg.IOBufSize+uapi.DevmemPageSize-1)/uapi.DevmemPageSize),
		id:       cfg.Binding.ID(),
		iobuf:    make([]byte, cfg.IOBufSize),
		oob:      make([]byte, cfg.FragBudget*devmemCmsgSpace),
		pend:     make([]Frag, 0, cfg.FragBudget),
		copies:   make([]memory.Copy, 0, cfg.GatherBatch),
		after:    make([]uint32, 0, cfg.GatherBatch),
	}
	r.batch = NewTokenBatcher(sock.dontneed)
	return r, nil
}

// Receive reads exactly n bytes of the stream into dst at off.
func (r *Receiver) Receive(ctx context.Context, dst memory.BufferID, off, n int64) error {
	p := [1]Piece{{Dst: dst, Off: off, N: n}}
	return r.consume(ctx, p[:], false)
}

// A Piece is a run of the stream and its place: the next N bytes go to Dst
// at Off.
type Piece = transport.Piece

// ReceiveBatch receives pieces of the stream, in order, as one Receive per
// piece would, but gathers them together: one Gather call per GatherBatch
// copies across the pieces instead of at least one per piece. Every
// piece's bytes are in place when it returns. After an error the stream is
// out of step, as after a failed Receive, and the pieces are incomplete.
//
// With small extents the gather call is the largest cost of each Receive;
// the engine hands a connection's queued small extents over in one call
// (transport.BatchReceiver) and pays it once.
func (r *Receiver) ReceiveBatch(ctx context.Context, pieces []Piece) error {
	return r.consume(ctx, pieces, false)
}

// Discard reads and drops exactly n bytes of the stream. Bytes not yet
// received are dropped by the kernel (recvmsg with MSG_TRUNC) without
// producing tokens.
func (r *Receiver) Discard(ctx context.Context, n int64) error {
	p := [1]Piece{{N: n}}
	return r.consume(ctx, p[:], true)
}

// Stats returns the receiver's counters.
func (r *Receiver) Stats() RXStats {
	s := r.stats
	s.Tokens = r.batch.Stats()
	return s
}

// LinearPlaced returns how many payload bytes the receiver has placed in
// destinations from host memory, and in how many copies: bytes of
// SCM_DEVMEM_LINEAR frags and of packets the NIC did not split, which came
// through the iovec and were copied in with CopyIn rather than gathered
// from the dmabuf. The counts only grow; the engine reads them around each
// Receive to count them on the request's result (engine.LinearCounter).
func (r *Receiver) LinearPlaced() (bytes, frags int64) {
	return r.stats.PlacedLinearBytes, r.stats.PlacedLinearFrags
}

// Held returns the number of tokens the receiver holds: frags received and
// not yet returned to the kernel.
func (r *Receiver) Held() int { return int(r.batch.Outstanding()) }

// Close returns every token the receiver still holds (of frags gathered,
// and of frags received ahead and not consumed), and reports a leak
// (ErrTokenLeak) if the books do not balance. It does not close the
// connection; if the connection is closed already, the kernel released
// the tokens with the socket (TokenStats.Closed), which is no error.
func (r *Receiver) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.watch(context.Background())
	var errs []error
	for _, f := range r.pend[r.pendHead:] {
		if !f.Linear {
			errs = append(errs, r.batch.Release(f.Token))
		}
	}
	r.pend, r.pendHead, r.headUsed = r.pend[:0], 0, 0
	errs = append(errs, r.batch.ReleaseAll(r.after))
	r.after, r.copies = r.after[:0], r.copies[:0]
	errs = append(errs, r.batch.Flush())
	for i, err := range errs {
		if errors.Is(err, net.ErrClosed) {
			errs[i] = nil
		}
	}
	errs = append(errs, r.batch.Check(), r.sock.close())
	return errors.Join(errs...)
}

// returnTokens gathers what is queued and returns every token the receiver
// holds that it does not still need.
func (r *Receiver) returnTokens(ctx context.Context) error {
	err := r.flushGather(ctx)
	if ferr := r.batch.Flush(); ferr != nil && err == nil {
		err = ferr
	}
	return err
}

// watch makes the socket watch ctx instead of the context it watches now,
// unless both have the same Done channel.
func (r *Receiver) watch(ctx context.Context) {
	r.watchCtx = nil
	if reflect.TypeOf(ctx).Comparable() {
		// Comparing with a context of another type is then false, not
		// a panic.
		r.watchCtx = ctx
	}
	done := ctx.Done()
	if done == r.watchDone {
		return
	}
	if r.unwatch != nil {
		r.unwatch()
		r.unwatch = nil
	}
	r.watchDone = done
	if done != nil {
		r.unwatch = r.sock.watch(ctx)
	}
}

// flushGather runs the queued copies and then queues their tokens for
// return, even if the gather failed: the frags are of no further use.
func (r *Receiver) flushGather(ctx context.Context) error {
	var err error
	if len(r.copies) > 0 {
		r.stats.GatherCalls++
		r.stats.Copies += int64(len(r.copies))
		err = r.cfg.Gather(ctx, r.copies)
		r.copies = r.copies[:0]
	}
	for _, tok := range r.after {
		if !r.batch.extend(tok) {
			if rerr := r.batch.Release(tok); rerr != nil && err == nil {
				err = rerr
			}
		}
	}
	r.after = r.after[:0]
	return err
}

// consume consumes the stream bytes of pieces, into their places or
// (discard) nowhere.
func (r *Receiver) consume(ctx context.Context, pieces []Piece, discard bool) error {
	if r.closed {
		return ErrClosed
	}
	for _, p := range pieces {
		if p.N < 0 {
			return fmt.Errorf("devmem: negative length %d", p.N)
		}
	}
	if ctx != r.watchCtx {
		r.watch(ctx)
	}
	var err error
	for _, p := range pieces {
		var consumed int64
		consumed, err = r.consumeLocked(ctx, p.Dst, p.Off, p.N, discard)
		r.stats.Bytes += consumed
		if err != nil {
			break
		}
	}
	if err == nil {
		// The bytes are placed when the call returns; their tokens go
		// back later, with others.
		return r.flushGather(ctx)
	}
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	// The stream is out of step: return what was gathered now.
	return errors.Join(err, r.returnTokens(ctx))
}

// consumeLocked consumes n stream bytes and returns how many it consumed.
func (r *Receiver) consumeLocked(ctx context.Context, dst memory.BufferID, off, n int64, discard bool) (int64, error) {
	pos := off
	want := n
	for want > 0 {
		// Frags received earlier come first.
		for want > 0 && r.pendHead < len(r.pend) {
			if !discard && r.headUsed == 0 {
				// The common case, whole dmabuf frags, in a loop that
				// keeps the queues in registers; the rest in
				// consumeHead.
				pend, i, copies, after, arena := r.pend, r.pendHead, r.copies, r.after, r.cfg.Arena
				for i < len(pend) && len(copies) < cap(copies) {
					f := &pend[i]
					size := int64(f.Size)
					if f.Linear || size > want {
						break
					}
					copies = copies[:len(copies)+1]
					c := &copies[len(copies)-1]
					c.Src, c.SrcOff, c.Dst, c.DstOff, c.Len = arena, int64(f.Offset), dst, pos, size
					after = append(after, f.Token)
					pos += size
					want -= size
					i++
				}
				r.pendHead, r.copies, r.after = i, copies, after
				if len(copies) == cap(copies) {
					if err := r.flushGather(ctx); err != nil {
						return pos - off, err
					}
				}
				if want == 0 || i == len(pend) {
					continue
				}
			}
			take, err := r.consumeHead(ctx, dst, pos, want, discard)
			pos += take
			want -= take
			if err != nil {
				return pos - off, err
			}
		}
		if r.pendHead == len(r.pend) {
			r.pend, r.pendHead, r.headUsed = r.pend[:0], 0, 0
		}
		if want == 0 {
			break
		}
		if discard {
			if err := r.discardUnread(want); err != nil {
				return pos - off, err
			}
			pos += want
			r.stats.DiscardedBytes += want
			return pos - off, nil
		}
		if err := r.recv(ctx, want); err != nil {
			return pos - off, err
		}
	}
	return pos - off, nil
}

// consumeHead consumes up to want bytes of the frag at the head of the
// pending queue, placing them in dst at pos (or dropping them), and returns
// how many it took.
func (r *Receiver) consumeHead(ctx context.Context, dst memory.BufferID, pos, want int64, discard bool) (int64, error) {
	f := &r.pend[r.pendHead]
	avail := int64(f.Size - r.headUsed)
	take := min(avail, want)
	switch {
	case discard:
		r.stats.DiscardedBytes += take
	case f.Linear:
		start := f.Offset + uint64(r.headUsed)
		if err := r.cfg.CopyIn(ctx, dst, pos, r.iobuf[start:start+uint64(take)]); err != nil {
			return 0, err
		}
		r.stats.PlacedLinearBytes += take
		r.stats.PlacedLinearFrags++
	default:
		// Written in place: a Copy built aside and copied in stalls on
		// store forwarding (as Frags in ParseCmsgs).
		r.copies = append(r.copies, memory.Copy{})
		c := &r.copies[len(r.copies)-1]
		c.Src = r.cfg.Arena
		c.SrcOff = int64(f.Offset) + int64(r.headUsed)
		c.Dst = dst
		c.DstOff = pos
		c.Len = take
	}
	if take < avail {
		r.headUsed += uint32(take)
	} else {
		if !f.Linear {
			if discard {
				if err := r.batch.Release(f.Token); err != nil {
					return take, err
				}
			} else {
				r.after = append(r.after, f.Token)
			}
		}
		r.pendHead++
		r.headUsed = 0
	}
	if len(r.copies) == cap(r.copies) {
		return take, r.flushGather(ctx)
	}
	return take, nil
}

// discardUnread drops n stream bytes not yet received. Only called with no
// frags pending.
func (r *Receiver) discardUnread(n int64) error {
	for n > 0 {
		l := int64(len(r.iobuf))
		if l > n {
			l = n
		}
		got, _, _, err := r.sock.recvmsg(r.iobuf[:l], nil, uapi.MSG_TRUNC)
		if err != nil {
			return err
		}
		if got == 0 {
			return fmt.Errorf("devmem: discard: %w", io.ErrUnexpectedEOF)
		}
		n -= int64(got)
	}
	return nil
}

// recv performs one recvmsg(MSG_SOCK_DEVMEM) and queues the frags it
// reports. Only called with no frags pending, so every token held is of a
// frag consumed: queued for return, or for a queued gather.
func (r *Receiver) recv(ctx context.Context, want int64) error {
	room := r.cfg.FragBudget - r.Held()
	if room < max(r.fullRoom, r.minOOB) && room < r.cfg.FragBudget {
		// Back-pressure: return everything gathered so far before
		// taking more frags from the kernel.
		r.stats.BudgetFull++
		if err := r.returnTokens(ctx); err != nil {
			return err
		}
		room = r.cfg.FragBudget - r.Held()
	}
	flags := uapi.MSG_SOCK_DEVMEM
	if room < r.cfg.FragBudget {
		// Tokens are held: if the call would wait for data, return
		// them first, so that an idle connection pins no chunk the NIC
		// could fill.
		flags |= uapi.MSG_DONTWAIT
	}
	n, oobn, _, err := r.sock.recvmsg(r.iobuf, r.oob[:room*devmemCmsgSpace], flags)
	if flags&uapi.MSG_DONTWAIT != 0 && errors.Is(err, syscall.EAGAIN) {
		r.stats.WaitReturns++
		if err := r.returnTokens(ctx); err != nil {
			return err
		}
		room = r.cfg.FragBudget - r.Held()
		n, oobn, _, err = r.sock.recvmsg(r.iobuf, r.oob[:room*devmemCmsgSpace], uapi.MSG_SOCK_DEVMEM)
	}
	if err != nil {
		if errors.Is(err, syscall.Errno(uapi.ETOOSMALL)) && room < r.cfg.FragBudget {
			// Another control message took the room; ask for more next
			// time and retry.
			r.minOOB = min(2*max(room, 1), r.cfg.FragBudget)
			return nil
		}
		return err
	}
	if n == 0 {
		return fmt.Errorf("devmem: connection closed with %d bytes of the extent unread: %w", want, io.ErrUnexpectedEOF)
	}
	r.stats.Recvmsgs++
	// Parse straight into the (empty) pending queue; the frags are
	// committed only once they are validated.
	frags, sums, perr := parseCmsgs(r.pend[:0], r.oob[:oobn], r.id)
	r.batch.Received(sums.tokens)
	if h := r.Held(); h > r.stats.MaxHeld {
		r.stats.MaxHeld = h
	}
	switch {
	case perr != nil:
		err = fmt.Errorf("devmem: recvmsg control messages: %w", perr)
	case len(frags) == 0:
		// No devmem cmsg: the kernel copied a readable skb into the
		// iovec. On a bound queue that is a packet the NIC did not
		// header-split; after an unbind, everything.
		switch {
		case isDone(r.cfg.Binding.Done()):
			return fmt.Errorf("%w: %w (%d bytes)", ErrBindingClosed, ErrNotDevmem, n)
		case r.cfg.RejectPlain:
			return fmt.Errorf("%w (%d bytes; RejectPlain is set)", ErrNotDevmem, n)
		}
		r.stats.PlainBytes += int64(n)
		r.stats.PlainRecvmsgs++
		r.stats.LinearBytes += int64(n)
		r.stats.LinearFrags++
		r.pend = append(frags, Frag{Offset: 0, Size: uint32(n), Linear: true})
		return nil
	case sums.devmem+sums.linear != int64(n):
		err = fmt.Errorf("%w: recvmsg returned %d bytes, its cmsgs describe %d", ErrMalformed, n, sums.devmem+sums.linear)
	case sums.linear > int64(len(r.iobuf)):
		err = fmt.Errorf("%w: %d linear bytes in an iovec of %d", ErrMalformed, sums.linear, len(r.iobuf))
	case sums.foreign != 0:
		err = fmt.Errorf("%w: frag of dmabuf %d, receiver bound to %d", ErrFlowSteering, sums.foreign, r.id)
	}
	if err != nil {
		// Return the tokens of this call at once: the data is lost.
		for _, f := range frags {
			if !f.Linear {
				_ = r.batch.Release(f.Token)
			}
		}
		r.pend = r.pend[:0]
		return err
	}
	r.stats.DevmemBytes += sums.devmem
	r.stats.LinearBytes += sums.linear
	r.stats.Frags += int64(sums.tokens)
	r.stats.LinearFrags += int64(len(frags) - sums.tokens)
	r.pend = frags
	return nil
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

var (
	_ transport.Receiver      = (*Receiver)(nil)
	_ transport.BatchReceiver = (*Receiver)(nil)
)
