package providers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/blockxfer/blockxfer/providers/internal/fdpass"
	"github.com/blockxfer/blockxfer/providers/internal/memfd"
	"github.com/blockxfer/blockxfer/providers/providerpb"
)

// Staging defaults.
const (
	// DefaultStagingSlotSize is the size of one staging buffer. CopyIn and
	// ReadBack move larger ranges in slot-sized chunks, pipelined so the
	// host's copy of one chunk overlaps the plugin's copy of the previous.
	DefaultStagingSlotSize = 4 << 20
	// DefaultStagingSlots is how many staging buffers a plugin gets at most.
	DefaultStagingSlots = 8
)

// attachTimeout bounds the AttachStaging call. Attaching is internal to the
// client, so it is not cut short by the caller's ctx: a staging buffer the
// host sent must be attached or the call must fail, never left half done.
const attachTimeout = 30 * time.Second

// stagingSlot is one staging buffer: a memfd mapped here and in the plugin.
type stagingSlot struct {
	id  uint64
	mem []byte
}

// stagingPool hands out staging slots, creating and attaching them on
// demand up to max.
type stagingPool struct {
	rpc      providerpb.ProviderClient
	fds      *fdpass.Conn
	slotSize int64
	free     chan *stagingSlot

	mu      sync.Mutex
	all     []*stagingSlot
	lent    []*stagingSlot // slots lent out through Staging
	created int
	max     int
	closed  bool
}

func newStagingPool(rpc providerpb.ProviderClient, fds *fdpass.Conn, slotSize int64, slots int) *stagingPool {
	if slotSize <= 0 {
		slotSize = DefaultStagingSlotSize
	}
	if slots <= 0 {
		slots = DefaultStagingSlots
	}
	return &stagingPool{rpc: rpc, fds: fds, slotSize: slotSize, max: slots, free: make(chan *stagingSlot, slots)}
}

// get returns a free slot, creating one if fewer than max exist, else
// waiting for one to be put back. dead ends the wait when the plugin is gone.
func (p *stagingPool) get(ctx context.Context, dead <-chan struct{}) (*stagingSlot, error) {
	select {
	case s := <-p.free:
		return s, nil
	default:
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if p.created < p.max {
		p.created++
		id := uint64(p.created)
		p.mu.Unlock()
		s, err := p.create(ctx, id)
		p.mu.Lock()
		defer p.mu.Unlock()
		if err != nil {
			p.created--
			return nil, err
		}
		if p.closed { // closed while attaching: nothing else will unmap it
			memfd.Unmap(s.mem)
			return nil, ErrClosed
		}
		p.all = append(p.all, s)
		return s, nil
	}
	p.mu.Unlock()
	select {
	case s := <-p.free:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-dead:
		return nil, ErrClosed
	}
}

// put returns a slot to the pool.
func (p *stagingPool) put(s *stagingSlot) { p.free <- s }

// create makes staging slot id: a sealed memfd mapped here, sent to the
// plugin over the side socket and attached with AttachStaging.
func (p *stagingPool) create(ctx context.Context, id uint64) (*stagingSlot, error) {
	if p.fds == nil {
		return nil, errors.New("providers: no side socket for staging")
	}
	fd, err := memfd.Create("blockxfer-staging", p.slotSize, memfd.SealShrink|memfd.SealGrow)
	if err != nil {
		return nil, fmt.Errorf("providers: staging: %w", err)
	}
	defer memfd.Close(fd) // the mappings (ours and the plugin's) keep the memory
	mem, err := memfd.Map(fd, p.slotSize)
	if err != nil {
		return nil, fmt.Errorf("providers: staging: %w", err)
	}
	if err := p.fds.Send(fdpass.KindStaging, id, fd); err != nil {
		memfd.Unmap(mem)
		return nil, fmt.Errorf("providers: staging %d: %w", id, err)
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), attachTimeout)
	defer cancel()
	if _, err := p.rpc.AttachStaging(actx, &providerpb.AttachStagingRequest{StagingId: id, Size: p.slotSize}); err != nil {
		memfd.Unmap(mem)
		return nil, err
	}
	return &stagingSlot{id: id, mem: mem}, nil
}

// lend marks s as lent to a caller through Staging.
func (p *stagingPool) lend(s *stagingSlot) {
	p.mu.Lock()
	p.lent = append(p.lent, s)
	p.mu.Unlock()
}

// giveBack ends the loan of s and returns it to the pool.
func (p *stagingPool) giveBack(s *stagingSlot) {
	p.mu.Lock()
	for i, l := range p.lent {
		if l == s {
			p.lent = append(p.lent[:i], p.lent[i+1:]...)
			break
		}
	}
	p.mu.Unlock()
	p.put(s)
}

// within returns the lent slot holding all of b and b's offset in it, or
// nil when b is not inside a lent staging buffer.
func (p *stagingPool) within(b []byte) (*stagingSlot, int64) {
	if len(b) == 0 {
		return nil, 0
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.lent {
		base := uintptr(unsafe.Pointer(unsafe.SliceData(s.mem)))
		if start >= base && start-base <= uintptr(len(s.mem)) && uintptr(len(b)) <= uintptr(len(s.mem))-(start-base) {
			return s, int64(start - base)
		}
	}
	return nil, 0
}

// close unmaps every slot. No call may be using the pool.
func (p *stagingPool) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var errs []error
	for _, s := range p.all {
		errs = append(errs, memfd.Unmap(s.mem))
	}
	p.all = nil
	return errors.Join(errs...)
}

// Staging is a staging buffer lent to the caller: memory mapped both here
// and in the plugin process. Bytes passed to CopyIn from inside Bytes, or
// read back with ReadBack into Bytes, cross to the plugin without the
// host-side copy that an arbitrary slice costs: fill Bytes where the data is
// produced (e.g. read a socket into it). Release it when done; its memory
// must not be used afterwards. A Staging is not safe for concurrent use, but
// several may be held at once (each takes one of the plugin's staging slots).
type Staging struct {
	// Bytes is the staging memory, DefaultStagingSlotSize bytes unless
	// LoadOptions.StagingSlotSize says otherwise.
	Bytes []byte

	slot *stagingSlot
	pool *stagingPool
}

// Release returns the buffer to the plugin's staging pool. Calling it again
// does nothing.
func (s *Staging) Release() {
	if s.slot == nil {
		return
	}
	s.pool.giveBack(s.slot)
	s.slot, s.Bytes = nil, nil
}
