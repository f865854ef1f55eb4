package providers

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockxfer/blockxfer/providers/memory"
)

// Operation states of a ringOp.
const (
	opPending   = iota // submitted, its waiter waits
	opDone             // completed (or failed); the waiter consumes it
	opAbandoned        // its waiter gave up (ctx ended); the reaper recycles it
)

// ringOp is one operation in flight: what its waiter waits on. The
// completion-queue slot it takes is freed as soon as its completion is
// reaped, so a caller holding completed ops never keeps another from
// submitting.
type ringOp struct {
	state atomic.Uint32
	done  chan struct{} // receives once the op is done
	sqes  uint32
	res   cqe
	err   error  // the ring stopped before the op completed
	undo  func() // run by the reaper when an abandoned op completes
}

// opPool recycles ringOps.
var opPool = sync.Pool{New: func() any { return &ringOp{done: make(chan struct{}, 1)} }}

// ringClient is the host's end of a plugin's ring: callers submit
// descriptors and wait for their completions, which one reaper goroutine
// takes off the completion queue. It is safe for concurrent use.
type ringClient struct {
	mem      []byte
	w        *ringWords
	maxBatch uint32 // most copies in one gather batch
	spin     time.Duration

	mu      sync.Mutex
	tail    uint32 // sq_tail, owned by the submitters
	credits uint32 // submission entries not taken by ops in flight
	// slots are the ops in flight by completion slot; an op's tag is
	// gen<<32 | slot, so a completion for an op no longer in flight is
	// recognised.
	slots []*ringOp
	gens  []uint32
	free  []uint32
	err   error         // once set, the ring is stopped and calls fail with it
	space chan struct{} // closed when credits or slots come back, if anyone waits

	stopping atomic.Bool
	reaped   chan struct{} // closed when the reaper has exited
	// noCopySum is set once the plugin refused an opCopyInChecksum: it
	// predates the op, or its provider cannot checksum copy-ins.
	noCopySum atomic.Bool
}

// newRingClient starts serving the completions of a ring mapped at mem,
// whose header is written and which the plugin has attached.
func newRingClient(mem []byte, sqEntries, cqEntries uint32, spin time.Duration) *ringClient {
	r := &ringClient{
		mem:      mem,
		w:        ringWordsOf(mem, sqEntries, cqEntries),
		maxBatch: max(1, sqEntries/4),
		spin:     spin,
		credits:  sqEntries,
		slots:    make([]*ringOp, cqEntries),
		gens:     make([]uint32, cqEntries),
		free:     make([]uint32, 0, cqEntries),
		reaped:   make(chan struct{}),
	}
	for i := range cqEntries {
		r.free = append(r.free, cqEntries-1-i)
	}
	go r.reap()
	return r
}

// reserve takes n submission entries and a completion slot, waiting for
// them while the ring is full, and returns with r.mu held.
func (r *ringClient) reserve(ctx context.Context, n uint32) (*ringOp, uint64, error) {
	r.mu.Lock()
	for {
		if r.err != nil {
			err := r.err
			r.mu.Unlock()
			return nil, 0, err
		}
		if r.credits >= n && len(r.free) > 0 {
			break
		}
		if r.space == nil {
			r.space = make(chan struct{})
		}
		ch := r.space
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		r.mu.Lock()
	}
	idx := r.free[len(r.free)-1]
	r.free = r.free[:len(r.free)-1]
	op := opPool.Get().(*ringOp)
	op.sqes, op.undo, op.err, op.res = n, nil, nil, cqe{}
	op.state.Store(opPending)
	r.slots[idx] = op
	r.gens[idx]++
	r.credits -= n
	return op, uint64(r.gens[idx])<<32 | uint64(idx), nil
}

// publish makes the entries written since reserve visible to the plugin,
// releases r.mu and rings the plugin's doorbell if it sleeps.
func (r *ringClient) publish(n uint32) {
	r.tail += n
	r.w.sqTail.Store(r.tail) // the entries' plain writes happen before (sync/atomic is sequentially consistent)
	r.mu.Unlock()
	if r.w.sqWait.Load() != 0 && r.w.sqWait.Swap(0) != 0 {
		futexWake(r.w.sqWait)
	}
}

// entry returns submission entry i past the tail (r.mu held).
func (r *ringClient) entry(i uint32) []byte {
	j := int((r.tail+i)&r.w.sqMask) * sqeSize
	return r.w.sq[j : j+sqeSize]
}

// submit submits one descriptor.
func (r *ringClient) submit(ctx context.Context, e sqe) (*ringOp, error) {
	op, tag, err := r.reserve(ctx, 1)
	if err != nil {
		return nil, err
	}
	e.count, e.tag = 1, tag
	e.encode(r.entry(0))
	r.publish(1)
	return op, nil
}

// submitGather submits copies (at most maxBatch) as one gather batch.
func (r *ringClient) submitGather(ctx context.Context, copies []memory.Copy) (*ringOp, error) {
	n := uint32(len(copies))
	op, tag, err := r.reserve(ctx, n)
	if err != nil {
		return nil, err
	}
	for i, c := range copies {
		e := sqe{op: opGatherMore, tag: tag, buf: uint64(c.Src), off: c.SrcOff, stg: uint64(c.Dst), stgOff: c.DstOff, n: c.Len}
		if i == 0 {
			e.op, e.count = opGather, n
		}
		e.encode(r.entry(uint32(i)))
	}
	r.publish(n)
	return op, nil
}

// wait waits for op's completion. When ctx ends first, op is abandoned to
// the reaper and wait returns ctx's error.
func (r *ringClient) wait(ctx context.Context, op *ringOp) (cqe, error) {
	res, ok, err := r.await(ctx, op)
	if !ok {
		r.abandon(op, nil)
	}
	return res, err
}

// await waits for op's completion and recycles it, unless ctx ends first:
// then op stays in flight (ok false), to be waited for again or abandoned.
func (r *ringClient) await(ctx context.Context, op *ringOp) (res cqe, ok bool, err error) {
	select {
	case <-op.done:
	case <-ctx.Done():
		return cqe{}, false, ctx.Err()
	}
	res, err = op.res, op.err
	opPool.Put(op)
	return res, true, err
}

// abandon gives op up: true when the reaper took it over, to run undo (if
// any) and recycle it once the plugin completes it; false when it had
// completed already, and has been recycled here.
func (r *ringClient) abandon(op *ringOp, undo func()) bool {
	r.mu.Lock()
	op.undo = undo // the reaper reads it under r.mu once it sees the op abandoned
	r.mu.Unlock()
	if op.state.CompareAndSwap(opPending, opAbandoned) {
		return true
	}
	<-op.done
	opPool.Put(op)
	return false
}

// wakeSpaceLocked wakes the submitters waiting for room (r.mu held).
func (r *ringClient) wakeSpaceLocked() {
	if r.space != nil {
		close(r.space)
		r.space = nil
	}
}

// spinFor polls cond for up to r.spin, yielding the processor between
// polls; it reports whether cond became true.
func (r *ringClient) spinFor(cond func() bool) bool {
	if r.spin <= 0 {
		return false
	}
	start := time.Now()
	for i := 0; ; i++ {
		if cond() {
			return true
		}
		if i&15 == 15 && time.Since(start) >= r.spin {
			return false
		}
		runtime.Gosched()
	}
}

// reap takes completions off the completion queue until the ring stops,
// then fails every operation still in flight.
func (r *ringClient) reap() {
	defer close(r.reaped)
	var (
		head = r.w.cqHead.Load()
		done []*ringOp
		b    [cqeSize]byte
	)
	entries := r.w.cqMask + 1
	for {
		tail := r.w.cqTail.Load()
		if tail == head {
			if r.stopping.Load() {
				break
			}
			if r.w.state.Load() == ringBroken {
				r.stop(fmt.Errorf("%w: the plugin stopped serving the ring (see its log)", ErrProtocol))
				break
			}
			if r.spinFor(func() bool { return r.w.cqTail.Load() != head || r.stopping.Load() }) {
				continue
			}
			r.w.cqWait.Store(1)
			if r.w.cqTail.Load() == head && !r.stopping.Load() {
				futexWait(r.w.cqWait, 1, time.Second)
			}
			r.w.cqWait.Store(0)
			continue
		}
		if tail-head > entries {
			r.stop(fmt.Errorf("%w: cq_tail %d is %d entries past cq_head %d", ErrProtocol, tail, tail-head, head))
			break
		}
		var perr error
		r.mu.Lock()
		for ; head != tail; head++ {
			j := int(head&r.w.cqMask) * cqeSize
			copy(b[:], r.w.cq[j:j+cqeSize])
			c, err := decodeCQE(&b)
			var op *ringOp
			if err == nil {
				idx := uint32(c.tag)
				if idx >= uint32(len(r.slots)) || r.slots[idx] == nil || r.gens[idx] != uint32(c.tag>>32) {
					err = fmt.Errorf("completion for tag %#x, which is not in flight", c.tag)
				} else {
					op = r.slots[idx]
					r.slots[idx] = nil
					r.free = append(r.free, idx)
				}
			}
			if err != nil {
				perr = fmt.Errorf("%w: %w", ErrProtocol, err)
				break
			}
			op.res = c
			r.credits += op.sqes
			done = append(done, op)
		}
		r.w.cqHead.Store(head)
		r.finishLocked(done)
		r.mu.Unlock()
		woke := len(done) > 0
		done = done[:0]
		if perr != nil {
			r.stop(perr)
			break
		}
		if woke {
			// Let the waiters just made runnable run on this P before the
			// reaper may block its thread in futex(2).
			runtime.Gosched()
		}
	}
	// Stopped: whatever is still in flight fails with r.err.
	r.mu.Lock()
	for i, op := range r.slots {
		if op != nil {
			op.err = r.err
			done = append(done, op)
			r.slots[i] = nil
		}
	}
	r.finishLocked(done)
	r.mu.Unlock()
}

// finishLocked hands completed ops to their waiters, or recycles the
// abandoned ones after running their undo (r.mu held).
func (r *ringClient) finishLocked(done []*ringOp) {
	for _, op := range done {
		if op.state.CompareAndSwap(opPending, opDone) {
			op.done <- struct{}{}
			continue
		}
		if op.undo != nil {
			op.undo()
		}
		opPool.Put(op)
	}
	r.wakeSpaceLocked()
}

// stop makes every later call fail with err and wakes the reaper, which
// fails the operations in flight. The first reason sticks.
func (r *ringClient) stop(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.wakeSpaceLocked()
	r.mu.Unlock()
	r.stopping.Store(true)
	r.w.cqWait.Store(0)
	futexWake(r.w.cqWait)
}

// close stops the ring with err, waits for the reaper and returns the
// mapping to unmap.
func (r *ringClient) close(err error) []byte {
	r.stop(err)
	<-r.reaped
	return r.mem
}

// opGroup counts a pipeline's abandoned operations: the staging slot they
// use goes back to the pool when the last one completes.
type opGroup struct {
	refs    atomic.Int32
	release func()
}

// drop drops one reference, releasing the slot with the last.
func (g *opGroup) drop() {
	if g.refs.Add(-1) == 0 {
		g.release()
	}
}
