package devmem

import (
	"context"
	"fmt"
	"sync"
)

// A Buf is one buffer of a BufferPool: BufferPool.BufSize bytes at offset Off
// of the pool's memory (for devmem TX, the bound dmabuf).
type Buf struct {
	Index uint32 // 0 <= Index < BufferPool.Len
	Off   int64
}

// A BufferPool hands out fixed-size buffers carved from one region, modelled
// on the kernel's page_pool: each user (a connection's sender) takes and
// returns buffers through its own PoolCache, a small array used without
// locks, in front of a shared ring guarded by a mutex. Caches refill from
// and spill to the ring in bulk.
//
// For devmem TX a buffer is returned only after the zerocopy completion of
// every send that used it (see CompletionTracker); returning it earlier would
// let new data overwrite bytes the NIC has yet to read.
//
// A BufferPool is safe for concurrent use; a PoolCache is not.
type BufferPool struct {
	base, bufSize int64
	count         int

	mu    sync.Mutex
	ring  []uint32 // FIFO of free buffer indexes
	head  int
	free  int
	wake  chan struct{} // closed when buffers reach an empty ring
	empty bool          // wake is armed
}

const (
	poolCacheSize   = 128 // like page_pool's PP_ALLOC_CACHE_SIZE
	poolCacheRefill = 64  // like PP_ALLOC_CACHE_REFILL
)

// NewBufferPool carves size bytes starting at base into buffers of bufSize
// bytes (a trailing remainder is unused). bufSize should be a multiple of the
// page size (4096) so that buffers never share a devmem net_iov.
func NewBufferPool(base, size, bufSize int64) (*BufferPool, error) {
	if bufSize <= 0 || size < bufSize || base < 0 {
		return nil, fmt.Errorf("devmem: buffer pool of %d bytes at %d cannot hold buffers of %d bytes", size, base, bufSize)
	}
	count := size / bufSize
	if count > 1<<31 {
		return nil, fmt.Errorf("devmem: buffer pool of %d buffers is too large", count)
	}
	p := &BufferPool{base: base, bufSize: bufSize, count: int(count), ring: make([]uint32, count), free: int(count)}
	for i := range p.ring {
		p.ring[i] = uint32(i)
	}
	return p, nil
}

// BufSize returns the size of every buffer.
func (p *BufferPool) BufSize() int64 { return p.bufSize }

// Len returns the number of buffers.
func (p *BufferPool) Len() int { return p.count }

// Free returns the number of buffers in the shared ring (not counting those
// sitting in caches).
func (p *BufferPool) Free() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.free
}

// Buf returns the buffer with the given index.
func (p *BufferPool) Buf(index uint32) Buf {
	return Buf{Index: index, Off: p.base + int64(index)*p.bufSize}
}

// take moves up to len(dst) buffers from the ring into dst.
func (p *BufferPool) take(dst []uint32) int {
	p.mu.Lock()
	n := min(len(dst), p.free)
	for i := 0; i < n; i++ {
		dst[i] = p.ring[p.head]
		p.head++
		if p.head == len(p.ring) {
			p.head = 0
		}
	}
	p.free -= n
	if p.free == 0 && !p.empty {
		p.wake = make(chan struct{})
		p.empty = true
	}
	p.mu.Unlock()
	return n
}

// give returns buffers to the ring.
func (p *BufferPool) give(src []uint32) {
	if len(src) == 0 {
		return
	}
	p.mu.Lock()
	for _, b := range src {
		tail := p.head + p.free
		if tail >= len(p.ring) {
			tail -= len(p.ring)
		}
		p.ring[tail] = b
		p.free++
	}
	if p.empty {
		close(p.wake)
		p.empty = false
	}
	p.mu.Unlock()
}

// Wait blocks until the shared ring holds a buffer or ctx is done. Users with
// sends in flight should wait for their own completions instead, which
// return buffers to their cache.
func (p *BufferPool) Wait(ctx context.Context) error {
	p.mu.Lock()
	if p.free > 0 {
		p.mu.Unlock()
		return nil
	}
	if !p.empty {
		p.wake = make(chan struct{})
		p.empty = true
	}
	wake := p.wake
	p.mu.Unlock()
	select {
	case <-wake:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// NewCache returns a per-user cache of the pool.
func (p *BufferPool) NewCache() *PoolCache { return &PoolCache{p: p} }

// A PoolCache is one user's lock-free front of a BufferPool. It is not safe
// for concurrent use.
type PoolCache struct {
	p     *BufferPool
	n     int
	items [poolCacheSize]uint32
}

// Get returns a free buffer, refilling the cache from the shared ring when it
// is empty. ok is false when no buffer is free anywhere.
func (c *PoolCache) Get() (b Buf, ok bool) {
	if c.n == 0 {
		c.n = c.p.take(c.items[:poolCacheRefill])
		if c.n == 0 {
			return Buf{}, false
		}
	}
	c.n--
	return c.p.Buf(c.items[c.n]), true
}

// Put returns a buffer, to the cache while it has room and otherwise, with
// half of the cache, to the shared ring.
func (c *PoolCache) Put(b Buf) {
	if c.n == len(c.items) {
		half := len(c.items) / 2
		c.p.give(c.items[half:])
		c.n = half
	}
	c.items[c.n] = b.Index
	c.n++
}

// Cached returns the number of buffers in the cache.
func (c *PoolCache) Cached() int { return c.n }

// Drain returns every cached buffer to the shared ring.
func (c *PoolCache) Drain() {
	c.p.give(c.items[:c.n])
	c.n = 0
}
