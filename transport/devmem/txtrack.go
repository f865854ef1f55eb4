package devmem

import (
	"errors"
	"fmt"
)

// ErrCompletionMismatch reports a zerocopy completion for send calls the
// tracker did not record (or already completed): the socket's counter and
// the tracker disagree, for example because something else sent with
// MSG_ZEROCOPY on the socket.
var ErrCompletionMismatch = errors.New("devmem: zerocopy completion does not match recorded sends")

// A CompletionTracker maps MSG_ZEROCOPY (and devmem TX) send calls to the
// buffers they used, and frees each buffer once every send call that used it
// is complete.
//
// The kernel numbers a socket's zerocopy send calls with a 32-bit counter
// that starts at 0 and grows by one for each call that sends data (calls that
// fail send nothing and do not count); it reports completions as inclusive
// ranges [lo, hi] of that counter, which wrap past 2^32 like the counter.
// Sent must therefore be called exactly once per successful send call, in
// call order.
//
// A CompletionTracker is not safe for concurrent use.
type CompletionTracker struct {
	release func(buf uint32)

	next   uint32 // counter of the next send call
	oldest uint32 // oldest send not yet completed; == next when none
	ring   []trackRec
	mask   uint32
	refs   []int32 // per buffer: in-flight send calls using it

	stats TrackerStats
}

type trackRec struct {
	bufs []uint32
	done bool
}

// TrackerStats are a CompletionTracker's counters.
type TrackerStats struct {
	Sends         uint64 // send calls recorded
	Completed     uint64 // send calls completed
	Copied        uint64 // completed send calls the kernel reported as copied
	Notifications uint64 // completion notifications (ranges) processed
	Released      uint64 // buffers released
}

// NewCompletionTracker returns a tracker whose next send call has counter
// first (0 for a socket that has not sent with MSG_ZEROCOPY yet). release is
// called with each buffer id once no in-flight send uses it.
func NewCompletionTracker(first uint32, release func(buf uint32)) *CompletionTracker {
	const initial = 64
	return &CompletionTracker{
		release: release,
		next:    first,
		oldest:  first,
		ring:    make([]trackRec, initial),
		mask:    initial - 1,
	}
}

// Next returns the counter the next send call will get.
func (t *CompletionTracker) Next() uint32 { return t.next }

// InFlight returns the number of send calls not yet completed.
func (t *CompletionTracker) InFlight() int { return int(t.next - t.oldest) }

// Stats returns the tracker's counters.
func (t *CompletionTracker) Stats() TrackerStats { return t.stats }

// Sent records a successful send call that used bufs (buffer ids; a buffer
// may appear in several calls, for example when a partial send is resumed)
// and returns the call's counter.
func (t *CompletionTracker) Sent(bufs ...uint32) uint32 {
	if t.InFlight() == len(t.ring) {
		t.grow()
	}
	seq := t.next
	r := &t.ring[seq&t.mask]
	r.bufs = append(r.bufs[:0], bufs...)
	r.done = false
	for _, b := range bufs {
		if int(b) >= len(t.refs) {
			t.refs = append(t.refs, make([]int32, int(b)+1-len(t.refs))...)
		}
		t.refs[b]++
	}
	t.next++
	t.stats.Sends++
	return seq
}

// Hold takes a reference on buf for its owner: it is not released, however
// many of its sends complete, until Drop. A sender holds each buffer while
// parts of it remain to be sent (after a partial send).
func (t *CompletionTracker) Hold(buf uint32) {
	if int(buf) >= len(t.refs) {
		t.refs = append(t.refs, make([]int32, int(buf)+1-len(t.refs))...)
	}
	t.refs[buf]++
}

// Drop releases the owner's reference taken by Hold; buf is released at once
// if no send in flight uses it.
func (t *CompletionTracker) Drop(buf uint32) {
	t.refs[buf]--
	if t.refs[buf] == 0 {
		t.stats.Released++
		t.release(buf)
	}
}

func (t *CompletionTracker) grow() {
	n := len(t.ring)
	ring := make([]trackRec, 2*n)
	mask := uint32(2*n - 1)
	for i := uint32(0); i < uint32(n); i++ {
		seq := t.oldest + i
		ring[seq&mask] = t.ring[seq&t.mask]
	}
	t.ring, t.mask = ring, mask
}

// Complete processes one completion notification: each send call in
// [c.Lo, c.Hi] is marked complete and the buffers no longer used by any
// in-flight call are released. A range that is not entirely made of
// in-flight, not yet completed calls is rejected with an error wrapping
// ErrCompletionMismatch, and nothing is released.
func (t *CompletionTracker) Complete(c Completion) error {
	count := c.Count()
	window := uint64(t.next - t.oldest)
	if uint64(c.Lo-t.oldest) >= window || uint64(c.Lo-t.oldest)+count > window {
		return fmt.Errorf("%w: completion [%d, %d] outside in-flight sends [%d, %d)", ErrCompletionMismatch, c.Lo, c.Hi, t.oldest, t.next)
	}
	for i := uint64(0); i < count; i++ {
		if t.ring[(c.Lo+uint32(i))&t.mask].done {
			return fmt.Errorf("%w: send %d completed twice", ErrCompletionMismatch, c.Lo+uint32(i))
		}
	}
	for i := uint64(0); i < count; i++ {
		r := &t.ring[(c.Lo+uint32(i))&t.mask]
		r.done = true
		for _, b := range r.bufs {
			t.refs[b]--
			if t.refs[b] == 0 {
				t.stats.Released++
				t.release(b)
			}
		}
		r.bufs = r.bufs[:0]
	}
	t.stats.Notifications++
	t.stats.Completed += count
	if c.Copied {
		t.stats.Copied += count
	}
	for t.oldest != t.next && t.ring[t.oldest&t.mask].done {
		t.ring[t.oldest&t.mask].done = false
		t.oldest++
	}
	return nil
}
