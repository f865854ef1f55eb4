package providers

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/blockxfer/blockxfer/providers/internal/memfd"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/providers/providerpb"
)

// Plugin-side ring settings.
const (
	// ringWorkers is how many operations the plugin runs at once.
	ringWorkers = 8
	// ringHandoffBytes: an operation moving at least this many bytes is
	// run after handing the ring to another worker, so operations
	// submitted meanwhile run beside it; smaller ones run inline, one
	// after another (a small operation that blocks holds up the ones
	// behind it).
	ringHandoffBytes = 1 << 20
)

// ringServer is the plugin's end of the ring. Workers take turns leading:
// the leader waits for descriptors and takes one operation; a large one it
// runs after handing the lead on, so that operations submitted meanwhile
// run beside it; a small one it runs itself, which keeps the next
// descriptor's latency to a memory access instead of a goroutine wake-up.
type ringServer struct {
	s        *GRPCServer
	mem      []byte
	w        *ringWords
	maxBatch uint32
	spin     time.Duration
	logger   hclog.Logger

	ctx      context.Context // ends when the ring stops
	cancel   context.CancelFunc
	lead     chan struct{} // holds the lead token while no worker leads
	stopping atomic.Bool
	wg       sync.WaitGroup
	head     uint32 // sq_head; only the leader touches it

	cqMu   sync.Mutex
	cqTail uint32
}

// AttachRing implements providerpb.ProviderServer: it maps the ring memfd
// the host sent, checks its header and starts serving it.
func (s *GRPCServer) AttachRing(ctx context.Context, req *providerpb.AttachRingRequest) (*providerpb.AttachRingResponse, error) {
	if s.fds == nil {
		return nil, status.Error(codes.FailedPrecondition, "providers: no side socket to receive the ring on")
	}
	if !ringEnabled() {
		return nil, status.Errorf(codes.FailedPrecondition, "providers: the ring is turned off (%s)", RingEnv)
	}
	if v := req.GetVersion(); v != ringVersion {
		return nil, status.Errorf(codes.FailedPrecondition, "providers: ring version %d, this plugin speaks %d", v, ringVersion)
	}
	if req.GetRingId()&ringTag == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "providers: ring id %#x lacks bit 63", req.GetRingId())
	}
	s.mu.Lock()
	busy := s.ringBusy
	s.ringBusy = true
	s.mu.Unlock()
	if busy {
		return nil, status.Error(codes.AlreadyExists, "providers: a ring is already attached")
	}
	r, err := s.attachRing(ctx, req)
	s.mu.Lock()
	s.ring, s.ringBusy = r, r != nil
	s.mu.Unlock()
	if err != nil {
		return nil, toStatus(fmt.Errorf("providers: attach ring: %w", err))
	}
	return &providerpb.AttachRingResponse{}, nil
}

// attachRing takes, checks and maps the ring memfd and starts its workers.
func (s *GRPCServer) attachRing(ctx context.Context, req *providerpb.AttachRingRequest) (*ringServer, error) {
	fd, err := s.fds.Take(ctx, req.GetRingId())
	if err != nil {
		return nil, err
	}
	sq, cq, size := req.GetSqEntries(), req.GetCqEntries(), req.GetSize()
	if size <= 0 || size > ringSize(maxRingEntries, maxRingEntries) {
		memfd.Close(fd)
		return nil, fmt.Errorf("ring of %d bytes", size)
	}
	if err := memfd.CheckSealed(fd, size); err != nil {
		memfd.Close(fd)
		return nil, err
	}
	mem, err := memfd.Map(fd, size)
	memfd.Close(fd) // the mapping keeps the memory
	if err != nil {
		return nil, err
	}
	w, err := parseRing(mem, sq, cq)
	if err != nil {
		memfd.Unmap(mem)
		return nil, err
	}
	r := &ringServer{
		s: s, mem: mem, w: w, maxBatch: max(1, sq/4), spin: ringSpin(), logger: s.logger,
		lead: make(chan struct{}, 1), head: w.sqHead.Load(), cqTail: w.cqTail.Load(),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.lead <- struct{}{}
	r.wg.Add(ringWorkers)
	for range ringWorkers {
		go r.worker()
	}
	return r, nil
}

// worker runs operations, leading the ring when it holds the token.
func (r *ringServer) worker() {
	defer r.wg.Done()
	var copies []memory.Copy
	for range r.lead {
		for {
			req, ok := r.next(copies)
			if !ok {
				r.lead <- struct{}{} // so the next worker sees the stop too
				return
			}
			copies = req.copies[:0]
			handoff := req.bytes() >= ringHandoffBytes
			if handoff {
				r.lead <- struct{}{}
			}
			r.run(&req)
			if handoff {
				break
			}
		}
	}
}

// next waits for an operation and takes it off the submission queue. It
// reports false when the ring stops, or breaks.
func (r *ringServer) next(copies []memory.Copy) (ringReq, bool) {
	entries := r.w.sqMask + 1
	for {
		if r.stopping.Load() {
			return ringReq{}, false
		}
		avail := r.w.sqTail.Load() - r.head
		if avail == 0 {
			r.idle()
			continue
		}
		if avail > entries {
			r.broken(fmt.Errorf("sq_tail is %d entries past sq_head %d, in a ring of %d", avail, r.head, entries))
			return ringReq{}, false
		}
		req, used, fatal := takeSQEs(r.w.sq, r.w.sqMask, r.head, avail, r.maxBatch, copies)
		if fatal != nil {
			r.broken(fatal)
			return ringReq{}, false
		}
		r.head += used
		r.w.sqHead.Store(r.head)
		if req.skip {
			continue
		}
		if req.err == nil {
			req.stage, req.err = r.s.checkRingReq(&req)
		}
		return req, true
	}
}

// idle spins briefly for the next descriptor, then sleeps on sq_wait until
// the host rings (or a second passes).
func (r *ringServer) idle() {
	ready := func() bool { return r.w.sqTail.Load() != r.head || r.stopping.Load() }
	if r.spin > 0 {
		start := time.Now()
		for i := 0; ; i++ {
			if ready() {
				return
			}
			if i&15 == 15 && time.Since(start) >= r.spin {
				break
			}
			runtime.Gosched()
		}
	}
	r.w.sqWait.Store(1)
	if !ready() {
		futexWait(r.w.sqWait, 1, time.Second)
	}
	r.w.sqWait.Store(0)
}

// broken stops serving a ring the host wrote nonsense into, and says so in
// the state word, which the host's reaper checks.
func (r *ringServer) broken(err error) {
	r.logger.Error("ring protocol broken by the host; ring stopped, RPCs still served", "error", err)
	r.stopping.Store(true)
	r.w.state.Store(ringBroken)
	r.w.cqWait.Store(0)
	futexWake(r.w.cqWait)
}

// run performs a request and posts its completion.
func (r *ringServer) run(req *ringReq) {
	if req.err != nil {
		r.complete(req.tag, 0, req.err)
		return
	}
	var (
		crc  uint32
		err  error
		impl = r.s.impl
		id   = memory.BufferID(req.buf)
	)
	switch req.op {
	case opCopyIn:
		err = impl.CopyIn(r.ctx, id, req.off, req.stage)
	case opCopyInChecksum:
		if cs, ok := impl.(memory.CopyInChecksummer); ok {
			crc, err = cs.CopyInChecksum(r.ctx, id, req.off, req.stage, req.seed)
		} else {
			err = fmt.Errorf("%w: copy-in with checksum: the provider does not checksum copy-ins (memory.CopyInChecksummer)", errBadDescriptor)
		}
	case opReadBack:
		err = impl.ReadBack(r.ctx, id, req.off, req.stage)
	case opChecksum:
		crc, err = impl.Checksum(r.ctx, id, req.off, req.n)
	case opGather:
		err = impl.Gather(r.ctx, req.copies)
	}
	r.complete(req.tag, crc, err)
}

// complete posts a completion and rings the host's doorbell if it sleeps.
// It waits while the completion queue is full (the host reaps it; it never
// has more operations in flight than entries).
func (r *ringServer) complete(tag uint64, crc uint32, err error) {
	var msg string
	if err != nil {
		msg = err.Error()
		if len(msg) > cqeMsgMax {
			msg = strings.ToValidUTF8(msg[:cqeMsgMax], "")
		}
	}
	entries := r.w.cqMask + 1
	r.cqMu.Lock()
	for r.cqTail-r.w.cqHead.Load() >= entries {
		if r.stopping.Load() {
			r.cqMu.Unlock()
			return
		}
		r.cqMu.Unlock()
		time.Sleep(50 * time.Microsecond)
		r.cqMu.Lock()
	}
	j := int(r.cqTail&r.w.cqMask) * cqeSize
	encodeCQE(r.w.cq[j:j+cqeSize], tag, ringStatus(err), crc, msg)
	r.cqTail++
	r.w.cqTail.Store(r.cqTail)
	r.cqMu.Unlock()
	if r.w.cqWait.Load() != 0 && r.w.cqWait.Swap(0) != 0 {
		futexWake(r.w.cqWait)
	}
}

// stop stops the workers, waiting for the operations they run, and
// unmaps the ring.
func (r *ringServer) stop() {
	r.stopping.Store(true)
	r.cancel()
	r.w.sqWait.Store(0)
	futexWake(r.w.sqWait)
	r.wg.Wait()
	if err := memfd.Unmap(r.mem); err != nil {
		r.logger.Warn("unmap ring", "error", err)
	}
}

// checkRingReq checks a request against what the plugin knows: the buffers
// it allocated for this host and the staging buffers attached, every range
// inside them. It returns the staging bytes a copy-in or read-back names.
func (s *GRPCServer) checkRingReq(req *ringReq) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch req.op {
	case opCopyIn, opCopyInChecksum, opReadBack, opChecksum:
		op := ringOpName(req.op)
		if err := s.checkBufLocked(op, memory.BufferID(req.buf), req.off, req.n); err != nil {
			return nil, err
		}
		if req.op == opChecksum {
			return nil, nil
		}
		mem, ok := s.staging[req.stg]
		if !ok {
			return nil, fmt.Errorf("%w: %s: staging %d not attached", errBadDescriptor, op, req.stg)
		}
		if req.stgOff > int64(len(mem)) || req.n > int64(len(mem))-req.stgOff {
			return nil, fmt.Errorf("%w: %s: staging %d: [%d, %d+%d) outside %d bytes", errBadDescriptor, op, req.stg, req.stgOff, req.stgOff, req.n, len(mem))
		}
		return mem[req.stgOff : req.stgOff+req.n : req.stgOff+req.n], nil
	case opGather:
		// Frags of one batch mostly name the same two buffers: look each
		// up once.
		var (
			srcID, dstID     memory.BufferID
			srcSize, dstSize int64 = -1, -1
		)
		for _, c := range req.copies {
			if c.Src != srcID || srcSize < 0 {
				srcID, srcSize = c.Src, s.bufSizeLocked(c.Src)
			}
			if c.Dst != dstID || dstSize < 0 {
				dstID, dstSize = c.Dst, s.bufSizeLocked(c.Dst)
			}
			if srcSize < 0 || dstSize < 0 || c.SrcOff > srcSize || c.Len > srcSize-c.SrcOff || c.DstOff > dstSize || c.Len > dstSize-c.DstOff {
				// Slow path, for the error.
				if err := s.checkBufLocked("gather src", c.Src, c.SrcOff, c.Len); err != nil {
					return nil, err
				}
				return nil, s.checkBufLocked("gather dst", c.Dst, c.DstOff, c.Len)
			}
		}
		return nil, nil
	}
	return nil, fmt.Errorf("%w: op %d", errBadDescriptor, req.op)
}

// bufSizeLocked returns buffer id's size, or -1 when there is no such
// buffer (s.mu held).
func (s *GRPCServer) bufSizeLocked(id memory.BufferID) int64 {
	if size, ok := s.bufs[id]; ok {
		return size
	}
	return -1
}

// checkBufLocked checks [off, off+n) against buffer id (s.mu held).
func (s *GRPCServer) checkBufLocked(op string, id memory.BufferID, off, n int64) error {
	size, ok := s.bufs[id]
	if !ok {
		return fmt.Errorf("providers: %s: buffer %d: %w", op, id, memory.ErrUnknownBuffer)
	}
	if off < 0 || n < 0 || off > size || n > size-off {
		return fmt.Errorf("providers: %s: buffer %d: [%d, %d+%d) of %d bytes: %w", op, id, off, off, n, size, memory.ErrOutOfBounds)
	}
	return nil
}
