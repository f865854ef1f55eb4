package main

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/providers/memory"
)

// provider is an memory.Provider over memfds. providers.Serve calls it from
// many goroutines at once, so it locks: copies under the read lock, Free
// under the write lock (so a buffer is never unmapped mid-copy).
type provider struct {
	mu   sync.RWMutex
	bufs map[memory.BufferID]*buffer
	next memory.BufferID
}

// buffer is one allocation: a sealed memfd and its shared mapping.
type buffer struct {
	fd  int
	mem []byte
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func newProvider() memory.Provider {
	return &provider{bufs: make(map[memory.BufferID]*buffer)}
}

func (p *provider) Name() string { return "example" }

// Version is reported in Capabilities (optional providers.Versioner).
func (p *provider) Version() string { return "1.0.0" }

func (p *provider) Capabilities() memory.Capabilities {
	return memory.Capabilities{
		Kind:           "memfd-example",
		DmabufExport:   true, // a memfd standing in for a dmabuf
		CPUMappable:    true, // in the plugin process
		Gather:         true,
		DeviceChecksum: true,
	}
}

// Alloc creates a memfd the way udmabuf wants one (sealable, shrink-sealed),
// maps it, and with dmabuf true returns the memfd as the buffer's fd. The
// buffer keeps owning that fd: providers.Serve sends a copy to the host.
func (p *provider) Alloc(ctx context.Context, size int64, dmabuf bool) (memory.Buffer, error) {
	if size <= 0 {
		return memory.Buffer{DmabufFD: -1}, fmt.Errorf("example: alloc %d bytes: size must be positive", size)
	}
	fd, err := unix.MemfdCreate("blockxfer-example", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return memory.Buffer{DmabufFD: -1}, fmt.Errorf("example: memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		unix.Close(fd)
		return memory.Buffer{DmabufFD: -1}, fmt.Errorf("example: ftruncate: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW); err != nil {
		unix.Close(fd)
		return memory.Buffer{DmabufFD: -1}, fmt.Errorf("example: seal: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return memory.Buffer{DmabufFD: -1}, fmt.Errorf("example: mmap: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	p.bufs[p.next] = &buffer{fd: fd, mem: mem}
	out := memory.Buffer{ID: p.next, Size: size, DmabufFD: -1}
	if dmabuf {
		out.DmabufFD = fd
	}
	return out, nil
}

func (p *provider) Free(ctx context.Context, id memory.BufferID) error {
	p.mu.Lock()
	b, ok := p.bufs[id]
	delete(p.bufs, id)
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("example: free %d: %w", id, memory.ErrUnknownBuffer)
	}
	return errors.Join(unix.Munmap(b.mem), unix.Close(b.fd))
}

// span returns n bytes of buffer id at off. Callers hold p.mu for reading.
// The engine sentinels it wraps reach the host intact.
func (p *provider) span(id memory.BufferID, off, n int64) ([]byte, error) {
	b, ok := p.bufs[id]
	if !ok {
		return nil, fmt.Errorf("example: buffer %d: %w", id, memory.ErrUnknownBuffer)
	}
	if off < 0 || n < 0 || off > int64(len(b.mem)) || n > int64(len(b.mem))-off {
		return nil, fmt.Errorf("example: buffer %d: [%d, %d+%d): %w", id, off, off, n, memory.ErrOutOfBounds)
	}
	return b.mem[off : off+n], nil
}

// CopyIn's src is a slice of a staging buffer shared with the host.
func (p *provider) CopyIn(ctx context.Context, dst memory.BufferID, off int64, src []byte) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	d, err := p.span(dst, off, int64(len(src)))
	if err != nil {
		return err
	}
	copy(d, src)
	return nil
}

// Gather checks every copy before moving a byte, then copies in order.
func (p *provider) Gather(ctx context.Context, copies []memory.Copy) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, c := range copies {
		if _, err := p.span(c.Src, c.SrcOff, c.Len); err != nil {
			return err
		}
		if _, err := p.span(c.Dst, c.DstOff, c.Len); err != nil {
			return err
		}
	}
	for _, c := range copies {
		s, _ := p.span(c.Src, c.SrcOff, c.Len)
		d, _ := p.span(c.Dst, c.DstOff, c.Len)
		copy(d, s)
	}
	return nil
}

// ReadBack's dst is a slice of a staging buffer shared with the host.
func (p *provider) ReadBack(ctx context.Context, src memory.BufferID, off int64, dst []byte) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	s, err := p.span(src, off, int64(len(dst)))
	if err != nil {
		return err
	}
	copy(dst, s)
	return nil
}

func (p *provider) Checksum(ctx context.Context, buf memory.BufferID, off, n int64) (uint32, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	s, err := p.span(buf, off, n)
	if err != nil {
		return 0, err
	}
	return crc32.Checksum(s, castagnoli), nil
}

func (p *provider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for id, b := range p.bufs {
		errs = append(errs, unix.Munmap(b.mem), unix.Close(b.fd))
		delete(p.bufs, id)
	}
	return errors.Join(errs...)
}
