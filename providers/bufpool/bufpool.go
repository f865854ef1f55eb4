// Package bufpool keeps a provider's buffers for reuse. A process that
// reads window after window (blockcat get, blockcat bench) takes its
// destination buffers from a Pool: each is allocated (as memory private to
// this process where the provider offers it, memory.PrivateAllocator), and
// prefaulted where the provider can (memory.Prefaulter), once, then handed
// out again for every later window and every later read of the process, so
// the data path neither allocates nor takes first-touch page faults.
// Closing the pool frees them.
package bufpool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/blockxfer/blockxfer/providers/memory"
)

// ErrClosed is returned by Get after Close.
var ErrClosed = errors.New("bufpool: pool closed")

// Pool hands out buffers of one provider and takes them back. It is safe
// for concurrent use.
type Pool struct {
	p memory.Provider

	mu     sync.Mutex
	idle   []memory.Buffer // given back, smallest first
	all    []memory.Buffer // every buffer the pool allocated and has not freed
	closed bool
}

// New returns an empty pool of p's buffers. The pool does not own p: close
// the pool before p.
func New(p memory.Provider) *Pool {
	return &Pool{p: p}
}

// Get returns n buffers of at least size bytes each: idle ones first (the
// smallest that fit), the rest newly allocated and prefaulted. The caller
// gives them back with Put. On error, the buffers taken so far go back to
// the pool.
func (pl *Pool) Get(ctx context.Context, size int64, n int) ([]memory.Buffer, error) {
	if size <= 0 || n < 0 {
		return nil, fmt.Errorf("bufpool: %d buffers of %d bytes", n, size)
	}
	out := make([]memory.Buffer, 0, n)
	pl.mu.Lock()
	if pl.closed {
		pl.mu.Unlock()
		return nil, ErrClosed
	}
	for i := 0; i < len(pl.idle) && len(out) < n; {
		if pl.idle[i].Size >= size {
			out = append(out, pl.idle[i])
			pl.idle = slices.Delete(pl.idle, i, i+1)
			continue
		}
		i++
	}
	pl.mu.Unlock()
	// The missing buffers are allocated and prefaulted on as many threads
	// as Go runs: making fresh memory resident is most of the cost of a
	// short read, and it is the kernel zeroing pages, which the cores
	// share out.
	fresh := make([]memory.Buffer, n-len(out))
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i := range fresh {
		g.Go(func() (err error) {
			fresh[i], err = pl.alloc(ctx, size)
			return err
		})
	}
	err := g.Wait()
	for _, b := range fresh {
		if b.Size > 0 { // allocated
			out = append(out, b)
		}
	}
	if err != nil {
		pl.Put(out...)
		return nil, err
	}
	return out, nil
}

// alloc allocates and prefaults one buffer and records it. The pool's
// buffers are this process's own, so it allocates private memory where the
// provider has it (memory.PrivateAllocator), which is cheaper to make
// resident.
func (pl *Pool) alloc(ctx context.Context, size int64) (memory.Buffer, error) {
	var (
		b   memory.Buffer
		err error
	)
	if pa, ok := pl.p.(memory.PrivateAllocator); ok {
		b, err = pa.AllocPrivate(ctx, size)
	} else {
		b, err = pl.p.Alloc(ctx, size, false)
	}
	if err != nil {
		return b, err
	}
	if pf, ok := pl.p.(memory.Prefaulter); ok {
		if err := pf.Prefault(ctx, b.ID); err != nil {
			pl.p.Free(context.WithoutCancel(ctx), b.ID)
			return memory.Buffer{DmabufFD: -1}, err
		}
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.closed { // closed meanwhile: nothing else would free it
		pl.p.Free(context.WithoutCancel(ctx), b.ID)
		return memory.Buffer{DmabufFD: -1}, ErrClosed
	}
	pl.all = append(pl.all, b)
	return b, nil
}

// Put gives buffers back for reuse. Buffers put back after Close are
// already freed and are dropped.
func (pl *Pool) Put(bufs ...memory.Buffer) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.closed {
		return
	}
	pl.idle = append(pl.idle, bufs...)
	slices.SortStableFunc(pl.idle, func(a, b memory.Buffer) int { return cmp.Compare(a.Size, b.Size) })
}

// Close frees every buffer the pool allocated, idle or handed out (the
// caller must be done with them), and makes Get fail with ErrClosed.
// Calling it again does nothing.
func (pl *Pool) Close() error {
	pl.mu.Lock()
	all := pl.all
	pl.all, pl.idle, pl.closed = nil, nil, true
	pl.mu.Unlock()
	var errs []error
	for _, b := range all {
		if err := pl.p.Free(context.Background(), b.ID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
