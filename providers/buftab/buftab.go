// Package buftab is the buffer table of a memory.Provider: it hands out a
// memory.BufferID per buffer, looks buffers up with the range check every
// copy needs, and keeps a buffer in place while a copy runs on it. The
// providers in this module (hostmem, udmabuf, gpu, example) share it, and a
// provider plugin may use it too: it imports only providers/memory.
//
// A provider keeps its own buffer type B (a mapping, a device pointer, the
// fds) with its size; the table stores them, never touches them and never
// releases them.
//
// # Ownership
//
// Add hands a buffer to the table. Remove, Drain and Close hand buffers back:
// once they return, no lookup can find those buffers and no Reader still
// holds them, so the caller may release them without holding any lock.
// A buffer returned by a lookup is borrowed: through a Reader, until Done;
// through Table.Get or Table.Lookup, only as long as nothing removes it.
//
// # Concurrency
//
// A Table is safe for concurrent use. One read-write lock guards it:
//
//   - Read takes the read lock and returns a Reader, which looks buffers up
//     under it until Done. Any number of Readers are open at once; a copy
//     that runs between Read and Done cannot have its buffer removed (and so
//     released) under it.
//   - Add, Remove, Drain and Close take the write lock: Remove, Drain and
//     Close wait for every Reader open at the time to be Done.
//   - Get, Lookup and Len take the read lock for the lookup only.
//
// A goroutine holding a Reader must not call the Table's methods until
// Done: Add, Remove, Drain and Close would wait for that Reader, and with a
// writer waiting, taking the read lock a second time deadlocks.
//
// # Ids
//
// Ids start at 1 and only grow: an id is never handed out twice, not after
// Remove, Drain or Close, so a stale id is unknown rather than someone else's
// buffer.
//
// # Errors
//
// Errors name the table (the provider), the operation (the op argument) and
// the buffer, and wrap memory.ErrUnknownBuffer or memory.ErrOutOfBounds:
//
//	hostmem: copy-in: buffer 3: unknown buffer
//	hostmem: copy-in: buffer 3: [4000, 4000+100) of 4096 bytes: range outside buffer
//
// A closed table (see Close) answers with the error it was closed with, as
// is.
package buftab

import (
	"fmt"
	"slices"
	"sync"

	"github.com/blockxfer/blockxfer/providers/memory"
)

// Table maps memory.BufferIDs to buffers of type B with their sizes. The zero
// value is not usable; call New.
type Table[B any] struct {
	name string

	mu     sync.RWMutex
	bufs   map[memory.BufferID]entry[B]
	last   memory.BufferID // the last id handed out
	closed error           // set by Close
}

// entry is one buffer and its size in bytes.
type entry[B any] struct {
	buf  B
	size int64
}

// New returns an empty table. name starts the errors it returns (e.g.
// "hostmem").
func New[B any](name string) *Table[B] {
	return &Table[B]{name: name, bufs: make(map[memory.BufferID]entry[B])}
}

// Add stores b, a buffer of size bytes, under a new id and returns the id.
// The table owns b until Remove, Drain or Close returns it. On a closed
// table Add stores nothing and returns the error the table was closed with;
// b stays the caller's. Add panics if size is negative.
func (t *Table[B]) Add(b B, size int64) (memory.BufferID, error) {
	if size < 0 {
		panic(fmt.Sprintf("buftab: %s: add a buffer of %d bytes", t.name, size))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed != nil {
		return 0, t.closed
	}
	t.last++
	t.bufs[t.last] = entry[B]{buf: b, size: size}
	return t.last, nil
}

// Remove takes buffer id out of the table, after every open Reader is Done,
// and returns it: the caller owns it again. It returns an error wrapping
// memory.ErrUnknownBuffer if id is not in the table. op names the
// operation in the error (e.g. "free").
func (t *Table[B]) Remove(op string, id memory.BufferID) (B, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, err := t.get(op, id)
	if err != nil {
		return e.buf, err
	}
	delete(t.bufs, id)
	return e.buf, nil
}

// Get returns buffer id. It returns an error wrapping
// memory.ErrUnknownBuffer if id is not in the table; op names the operation
// in it. The buffer may be removed as soon as Get returns: look it up
// through a Reader to keep it.
func (t *Table[B]) Get(op string, id memory.BufferID) (B, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	e, err := t.get(op, id)
	return e.buf, err
}

// Lookup returns buffer id after checking that [off, off+n) lies within it
// (negative offsets and lengths do not; off+n cannot overflow). It returns
// an error wrapping memory.ErrUnknownBuffer or memory.ErrOutOfBounds; op
// names the operation in it. The buffer may be removed as soon as Lookup
// returns: look it up through a Reader to keep it.
func (t *Table[B]) Lookup(op string, id memory.BufferID, off, n int64) (B, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	e, err := t.get(op, id)
	if err != nil {
		return e.buf, err
	}
	if !inBounds(off, n, e.size) {
		return zero[B](), t.outOfBounds(op, id, off, n, e.size)
	}
	return e.buf, nil
}

// Len returns how many buffers the table holds.
func (t *Table[B]) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.bufs)
}

// Drain takes every buffer out of the table, after every open Reader is
// Done, and returns them in id order: the caller owns them again. The table
// stays usable, and keeps its ids growing.
func (t *Table[B]) Drain() []B {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.drain()
}

// Close drains the table like Drain and closes it: from then on Add, Remove,
// Get and Lookup, and every Reader, fail with err (which must not be nil),
// returned as is. Closing a closed table returns nil and keeps the first
// error.
func (t *Table[B]) Close(err error) []B {
	if err == nil {
		panic("buftab: Close with a nil error")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed != nil {
		return nil
	}
	t.closed = err
	return t.drain()
}

// drain empties the map. Callers hold t.mu for writing.
func (t *Table[B]) drain() []B {
	if len(t.bufs) == 0 {
		return nil
	}
	ids := make([]memory.BufferID, 0, len(t.bufs))
	for id := range t.bufs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]B, len(ids))
	for i, id := range ids {
		out[i] = t.bufs[id].buf
		delete(t.bufs, id)
	}
	return out
}

// Read takes the table's read lock and returns a Reader that looks buffers
// up under it. The buffers it returns stay in the table until Done, which
// the caller must call exactly once (typically deferred):
//
//	r := t.Read()
//	defer r.Done()
//
// Read does not allocate.
func (t *Table[B]) Read() Reader[B] {
	t.mu.RLock()
	return Reader[B]{t: t}
}

// Reader looks buffers up under a table's read lock, which it holds from
// Table.Read until Done. Its Get and Lookup are the Table's, except that the
// buffers they return stay in the table until Done. It remembers the last
// two buffers it found, so a gather of many pieces between two buffers costs
// few map lookups. A Reader is for one goroutine; keep it in a variable (its
// methods have pointer receivers) and do not copy it.
type Reader[B any] struct {
	t *Table[B]
	// The last two buffers found; id 0 (never handed out) marks an empty
	// slot.
	ids  [2]memory.BufferID
	ents [2]entry[B]
	next int // the slot to fill next
}

// Done releases the read lock. A Reader is unusable afterwards; calling Done
// again does nothing.
func (r *Reader[B]) Done() {
	if r.t == nil {
		return
	}
	t := r.t
	*r = Reader[B]{}
	t.mu.RUnlock()
}

// Err returns the error the table was closed with, or nil while it is open.
func (r *Reader[B]) Err() error {
	return r.table().closed
}

// Get is Table.Get, except that the buffer stays in the table until Done.
// It does not allocate unless it fails.
func (r *Reader[B]) Get(op string, id memory.BufferID) (B, error) {
	e, err := r.get(op, id)
	return e.buf, err
}

// Lookup is Table.Lookup, except that the buffer stays in the table until
// Done. It does not allocate unless it fails.
func (r *Reader[B]) Lookup(op string, id memory.BufferID, off, n int64) (B, error) {
	e, err := r.get(op, id)
	if err != nil {
		return e.buf, err
	}
	if !inBounds(off, n, e.size) {
		return zero[B](), r.t.outOfBounds(op, id, off, n, e.size)
	}
	return e.buf, nil
}

// CheckGather checks every copy of a gather, in order, stopping at the
// first error: for each copy both buffers must exist (that is checked first,
// so a copy wrong on both counts reports the unknown buffer), then both
// ranges must lie within them. Its errors wrap memory.ErrUnknownBuffer or
// memory.ErrOutOfBounds and name the operation "gather src" or "gather
// dst". The buffers stay in the table until Done, so the copies may be made
// after it, looking the buffers up with Get. It does not allocate unless it
// fails.
func (r *Reader[B]) CheckGather(copies []memory.Copy) error {
	for i := range copies {
		c := &copies[i]
		// The cache checks are written out, not calls of get: they are
		// inlined, and a gather of small pieces is bound by them.
		var s, d entry[B]
		var err error
		if j, ok := r.cached(c.Src); ok {
			s = r.ents[j]
		} else if s, err = r.miss("gather src", c.Src); err != nil {
			return err
		}
		if j, ok := r.cached(c.Dst); ok {
			d = r.ents[j]
		} else if d, err = r.miss("gather dst", c.Dst); err != nil {
			return err
		}
		if !inBounds(c.SrcOff, c.Len, s.size) {
			return r.t.outOfBounds("gather src", c.Src, c.SrcOff, c.Len, s.size)
		}
		if !inBounds(c.DstOff, c.Len, d.size) {
			return r.t.outOfBounds("gather dst", c.Dst, c.DstOff, c.Len, d.size)
		}
	}
	return nil
}

// get is Table.get through the Reader's cache.
func (r *Reader[B]) get(op string, id memory.BufferID) (entry[B], error) {
	if i, ok := r.cached(id); ok {
		return r.ents[i], nil
	}
	return r.miss(op, id)
}

// cached returns the cache slot that holds id. It is small enough to be
// inlined.
func (r *Reader[B]) cached(id memory.BufferID) (int, bool) {
	if id == 0 {
		return 0, false
	}
	if r.ids[0] == id {
		return 0, true
	}
	return 1, r.ids[1] == id
}

// miss looks id up in the table and caches it.
func (r *Reader[B]) miss(op string, id memory.BufferID) (entry[B], error) {
	e, err := r.table().get(op, id)
	if err == nil {
		r.ids[r.next], r.ents[r.next] = id, e
		r.next ^= 1
	}
	return e, err
}

// table returns the Reader's table, or panics after Done.
func (r *Reader[B]) table() *Table[B] {
	if r.t == nil {
		panic("buftab: Reader used after Done (or not made by Table.Read)")
	}
	return r.t
}

// get returns buffer id. Callers hold t.mu.
func (t *Table[B]) get(op string, id memory.BufferID) (entry[B], error) {
	if t.closed != nil {
		return entry[B]{}, t.closed
	}
	e, ok := t.bufs[id]
	if !ok {
		return entry[B]{}, fmt.Errorf("%s: %s: buffer %d: %w", t.name, op, id, memory.ErrUnknownBuffer)
	}
	return e, nil
}

// inBounds reports whether [off, off+n) lies within a buffer of size bytes,
// without overflowing.
func inBounds(off, n, size int64) bool {
	return off >= 0 && n >= 0 && off <= size && n <= size-off
}

// outOfBounds is the error for [off, off+n) outside buffer id of size bytes.
func (t *Table[B]) outOfBounds(op string, id memory.BufferID, off, n, size int64) error {
	return fmt.Errorf("%s: %s: buffer %d: [%d, %d+%d) of %d bytes: %w", t.name, op, id, off, off, n, size, memory.ErrOutOfBounds)
}

// zero returns the zero B.
func zero[B any]() (b B) { return b }
