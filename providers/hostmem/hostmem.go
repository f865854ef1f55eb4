// Package hostmem is the built-in host-memory provider: an in-process
// memory.Provider whose buffers are sealed memfds mapped MAP_SHARED into this
// process. It is the engine's default provider.
//
// Buffers are CPU-mappable (Provider implements memory.Mapper), Gather is a
// memmove through the mappings and Checksum is CRC-32C over the mapping, both
// without copies or allocations. Host memory cannot be exported as a dmabuf:
// Alloc with dmabuf true fails with memory.ErrNoDmabuf (use the udmabuf
// provider plugin for host memory a NIC can be bound to).
//
// # Concurrency
//
// A Provider is safe for concurrent use. Copies run under a read lock, so any
// number of CopyIn, Gather, ReadBack and Checksum calls proceed in parallel;
// Free and Close wait for the copies in flight to finish before unmapping.
//
// # Platform
//
// memfd is Linux-only: on other systems Alloc returns an error wrapping
// memfd's not-supported error.
package hostmem

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/blockxfer/blockxfer/providers/buftab"
	"github.com/blockxfer/blockxfer/providers/internal/memfd"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// ErrClosed is returned by every method called after Close.
var ErrClosed = errors.New("hostmem: provider closed")

// castagnoli is the CRC-32C table (hardware accelerated on amd64 and arm64).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Provider is the host-memory provider. The zero value is not usable; call
// New.
type Provider struct {
	// bufs holds the buffers. Copies look buffers up through a Reader and
	// copy before Done, so Free (Remove) and Close (which closes the table
	// with ErrClosed) wait for them before unmapping.
	bufs *buftab.Table[*buffer]
}

// buffer is one memfd-backed allocation.
type buffer struct {
	fd  int
	mem []byte // the mapping; len(mem) is the buffer size
}

var (
	_ memory.Provider = (*Provider)(nil)
	_ memory.Mapper   = (*Provider)(nil)
)

// New returns an empty host-memory provider.
func New() *Provider {
	return &Provider{bufs: buftab.New[*buffer]("hostmem")}
}

// Name returns "host".
func (p *Provider) Name() string { return "host" }

// Capabilities reports host memory: CPU-mappable, gather and checksum done
// in place, no dmabuf export, no stated allocation limit.
func (p *Provider) Capabilities() memory.Capabilities {
	return memory.Capabilities{
		Kind:           memory.Host,
		CPUMappable:    true,
		Gather:         true,
		DeviceChecksum: true,
	}
}

// Alloc allocates size bytes of zeroed host memory backed by a memfd created
// with MFD_CLOEXEC|MFD_ALLOW_SEALING and sealed against shrinking and growing.
// With dmabuf true it returns an error wrapping memory.ErrNoDmabuf. The
// returned Buffer's DmabufFD is -1.
func (p *Provider) Alloc(ctx context.Context, size int64, dmabuf bool) (memory.Buffer, error) {
	if dmabuf {
		return memory.Buffer{DmabufFD: -1}, fmt.Errorf("hostmem: alloc: %w: host memory has no dmabuf exporter (use the udmabuf provider)", memory.ErrNoDmabuf)
	}
	if err := ctx.Err(); err != nil {
		return memory.Buffer{DmabufFD: -1}, err
	}
	if size <= 0 {
		return memory.Buffer{DmabufFD: -1}, fmt.Errorf("hostmem: alloc %d bytes: size must be positive", size)
	}
	fd, err := memfd.Create("blockxfer-host", size, memfd.SealShrink|memfd.SealGrow)
	if err != nil {
		return memory.Buffer{DmabufFD: -1}, fmt.Errorf("hostmem: alloc %d bytes: %w", size, err)
	}
	mem, err := memfd.Map(fd, size)
	if err != nil {
		memfd.Close(fd)
		return memory.Buffer{DmabufFD: -1}, fmt.Errorf("hostmem: alloc %d bytes: %w", size, err)
	}
	b := &buffer{fd: fd, mem: mem}
	id, err := p.bufs.Add(b, size)
	if err != nil { // closed: err is ErrClosed
		b.release()
		return memory.Buffer{DmabufFD: -1}, err
	}
	return memory.Buffer{ID: id, Size: size, DmabufFD: -1}, nil
}

// Free unmaps the buffer and closes its memfd, after any copy in flight on it
// has finished. It returns an error wrapping memory.ErrUnknownBuffer if id is
// not allocated.
func (p *Provider) Free(ctx context.Context, id memory.BufferID) error {
	b, err := p.bufs.Remove("free", id)
	if err != nil {
		return err
	}
	return b.release()
}

// Bytes returns the buffer's mapping. The slice is valid until Free or Close;
// touching it afterwards faults. It returns an error wrapping
// memory.ErrUnknownBuffer if id is not allocated.
func (p *Provider) Bytes(id memory.BufferID) ([]byte, error) {
	b, err := p.bufs.Get("bytes", id)
	if err != nil {
		return nil, err
	}
	return b.mem[:len(b.mem):len(b.mem)], nil
}

// FD returns the memfd backing the buffer, e.g. to map it in another
// process or to bind it where a mappable fd stands in for a dmabuf (the
// software NIC). The buffer owns the fd: it is closed by Free and must not be
// closed by the caller (dup it to keep it). It returns an error wrapping
// memory.ErrUnknownBuffer if id is not allocated.
func (p *Provider) FD(id memory.BufferID) (int, error) {
	b, err := p.bufs.Get("fd", id)
	if err != nil {
		return -1, err
	}
	return b.fd, nil
}

// CopyIn copies src into dst at off. It returns an error wrapping
// memory.ErrUnknownBuffer or memory.ErrOutOfBounds, and does not allocate.
func (p *Provider) CopyIn(ctx context.Context, dst memory.BufferID, off int64, src []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := p.bufs.Read()
	defer r.Done()
	b, err := r.Lookup("copy-in", dst, off, int64(len(src)))
	if err != nil {
		return err
	}
	copy(b.mem[off:], src)
	return nil
}

// Gather performs copies in order with memmove semantics (a copy may overlap
// itself or an earlier one in the same buffer). Every copy is checked before
// any byte moves, so on an error wrapping memory.ErrUnknownBuffer or
// memory.ErrOutOfBounds no buffer has changed. It does not allocate.
func (p *Provider) Gather(ctx context.Context, copies []memory.Copy) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := p.bufs.Read()
	defer r.Done()
	if err := r.Err(); err != nil {
		return err
	}
	if err := r.CheckGather(copies); err != nil {
		return err
	}
	for i := range copies {
		cp := &copies[i]
		src, _ := r.Get("gather src", cp.Src)
		dst, _ := r.Get("gather dst", cp.Dst)
		copy(dst.mem[cp.DstOff:cp.DstOff+cp.Len], src.mem[cp.SrcOff:cp.SrcOff+cp.Len])
	}
	return nil
}

// ReadBack copies len(dst) bytes of src at off into dst. It returns an error
// wrapping memory.ErrUnknownBuffer or memory.ErrOutOfBounds, and does not
// allocate.
func (p *Provider) ReadBack(ctx context.Context, src memory.BufferID, off int64, dst []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := p.bufs.Read()
	defer r.Done()
	b, err := r.Lookup("read-back", src, off, int64(len(dst)))
	if err != nil {
		return err
	}
	copy(dst, b.mem[off:])
	return nil
}

// Checksum returns the CRC-32C (Castagnoli) of n bytes of buf at off,
// computed over the mapping. It returns an error wrapping
// memory.ErrUnknownBuffer or memory.ErrOutOfBounds.
func (p *Provider) Checksum(ctx context.Context, buf memory.BufferID, off, n int64) (uint32, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	r := p.bufs.Read()
	defer r.Done()
	b, err := r.Lookup("checksum", buf, off, n)
	if err != nil {
		return 0, err
	}
	return crc32.Checksum(b.mem[off:off+n], castagnoli), nil
}

// Close frees every buffer, after the copies in flight have finished. Later
// calls return ErrClosed; Close itself may be called again and then returns
// nil.
func (p *Provider) Close() error {
	var errs []error
	for _, b := range p.bufs.Close(ErrClosed) {
		errs = append(errs, b.release())
	}
	return errors.Join(errs...)
}

// release unmaps the buffer and closes its memfd.
func (b *buffer) release() error {
	return errors.Join(memfd.Unmap(b.mem), memfd.Close(b.fd))
}
