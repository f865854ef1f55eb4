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

// buffer is one memfd-backed allocation, a private one (AllocPrivate), or
// an import of caller-owned memory (see Import and ImportBytes).
type buffer struct {
	fd  int    // the memfd backing an allocation; -1 for a private one or an import
	mem []byte // the buffer's bytes; len(mem) is the buffer size
	// mapping is what release unmaps: the whole mapping, of which mem is
	// a part (an import need not start on a page); nil for ImportBytes,
	// whose memory stays the caller's.
	mapping []byte
}

var (
	_ memory.Provider         = (*Provider)(nil)
	_ memory.Mapper           = (*Provider)(nil)
	_ memory.Importer         = (*Provider)(nil)
	_ memory.Prefaulter       = (*Provider)(nil)
	_ memory.PrivateAllocator = (*Provider)(nil)
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
		ImportKinds:    importKinds,
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
	b := &buffer{fd: fd, mem: mem, mapping: mem}
	id, err := p.bufs.Add(b, size)
	if err != nil { // closed: err is ErrClosed
		b.release()
		return memory.Buffer{DmabufFD: -1}, err
	}
	return memory.Buffer{ID: id, Size: size, DmabufFD: -1}, nil
}

// AllocPrivate allocates size bytes of zeroed host memory that only this
// process maps: anonymous memory advised to use transparent huge pages
// (MADV_HUGEPAGE), so that making it resident takes a fault per 2 MiB
// rather than per 4 KiB page (in a virtual machine, populating 64 MiB so
// took about 15 ms instead of 200). It is for destination buffers that no
// other process or device maps, such as blockcat's windows: it has no
// memfd (FD fails). The returned Buffer's DmabufFD is -1.
func (p *Provider) AllocPrivate(ctx context.Context, size int64) (memory.Buffer, error) {
	if err := ctx.Err(); err != nil {
		return memory.Buffer{DmabufFD: -1}, err
	}
	if size <= 0 {
		return memory.Buffer{DmabufFD: -1}, fmt.Errorf("hostmem: alloc %d private bytes: size must be positive", size)
	}
	mem, err := mapPrivate(size)
	if err != nil {
		return memory.Buffer{DmabufFD: -1}, fmt.Errorf("hostmem: alloc %d private bytes: %w", size, err)
	}
	b := &buffer{fd: -1, mem: mem, mapping: mem}
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

// Prefault makes the buffer's pages resident and writable
// (MADV_POPULATE_WRITE, or a write touch of each page where the kernel
// refuses that advice), so that receiving into it takes no page faults. It
// keeps the buffer's bytes. It returns an error wrapping
// memory.ErrUnknownBuffer if id is not allocated.
func (p *Provider) Prefault(ctx context.Context, id memory.BufferID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := p.bufs.Read()
	defer r.Done()
	b, err := r.Get("prefault", id)
	if err != nil {
		return err
	}
	if err := memfd.Populate(b.mem); err != nil {
		return fmt.Errorf("hostmem: prefault buffer %d: %w", id, err)
	}
	return nil
}

// FD returns the memfd backing the buffer, e.g. to map it in another
// process or to bind it where a mappable fd stands in for a dmabuf (the
// software NIC). The buffer owns the fd: it is closed by Free and must not be
// closed by the caller (dup it to keep it). It returns an error wrapping
// memory.ErrUnknownBuffer if id is not allocated, and an error for an
// imported buffer, which holds no fd (the caller has its own).
func (p *Provider) FD(id memory.BufferID) (int, error) {
	b, err := p.bufs.Get("fd", id)
	if err != nil {
		return -1, err
	}
	if b.fd < 0 {
		return -1, fmt.Errorf("hostmem: fd: buffer %d is imported caller memory or private memory (AllocPrivate), which has no memfd", id)
	}
	return b.fd, nil
}

// ImportBytes makes mem, memory the caller owns, a buffer of the provider,
// so the engine reads straight into it: a Go program's own []byte as a
// destination. The provider never frees mem; Free (or Close) only forgets
// it, after any copy in flight on it has finished. mem must stay valid, and
// should not be touched by the caller, until then. It returns an error for
// an empty mem.
func (p *Provider) ImportBytes(mem []byte) (memory.Buffer, error) {
	if len(mem) == 0 {
		return memory.Buffer{DmabufFD: -1}, errors.New("hostmem: import bytes: empty slice")
	}
	b := &buffer{fd: -1, mem: mem[:len(mem):len(mem)]}
	id, err := p.bufs.Add(b, int64(len(mem)))
	if err != nil {
		return memory.Buffer{DmabufFD: -1}, err
	}
	return memory.Buffer{ID: id, Size: int64(len(mem)), DmabufFD: -1}, nil
}

// Import maps caller-owned host memory shared by fd (memory.ImportFD, or
// memory.ImportShm) and makes it a buffer of the provider: the engine
// writes into the caller's pages, which the caller sees through its own
// mapping of the same file. The file must be a regular file open for
// reading and writing, at least d.Offset+d.Size bytes long, and sealed
// against shrinking (F_SEAL_SHRINK, as a memfd created with
// MFD_ALLOW_SEALING can be): a file cut short under a read would crash
// this process with SIGBUS. d.Offset need not be page-aligned. Import does
// not keep d.FD (the mapping holds the file); Free unmaps, after any copy
// in flight has finished. Other kinds fail with an error wrapping
// memory.ErrImportNotSupported.
func (p *Provider) Import(ctx context.Context, d memory.ImportDesc) (memory.Buffer, error) {
	none := memory.Buffer{DmabufFD: -1}
	if err := ctx.Err(); err != nil {
		return none, err
	}
	if d.Kind != memory.ImportFD && d.Kind != memory.ImportShm {
		return none, fmt.Errorf("hostmem: import %q: %w: host memory imports only %s and %s (device memory is imported by its provider)",
			d.Kind, memory.ErrImportNotSupported, memory.ImportFD, memory.ImportShm)
	}
	if err := d.Check(); err != nil {
		return none, fmt.Errorf("hostmem: %w", err)
	}
	mapping, mem, err := MapImport(d)
	if err != nil {
		return none, fmt.Errorf("hostmem: import %s: %w", d.Kind, err)
	}
	b := &buffer{fd: -1, mem: mem, mapping: mapping}
	id, err := p.bufs.Add(b, d.Size)
	if err != nil {
		b.release()
		return none, err
	}
	return memory.Buffer{ID: id, Size: d.Size, DmabufFD: -1}, nil
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

// release unmaps the buffer and closes its memfd; for an import it undoes
// the mapping only.
func (b *buffer) release() error {
	err := memfd.Unmap(b.mapping)
	if b.fd >= 0 {
		err = errors.Join(err, memfd.Close(b.fd))
	}
	return err
}
