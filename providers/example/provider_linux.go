package main

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/providers/buftab"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// provider is a memory.Provider over memfds. providers.Serve calls it from
// many goroutines at once. The buffer table handles that: copies look their
// buffers up through a buftab.Reader and copy before Done, and Free waits
// for the Readers before it unmaps (so a buffer is never unmapped mid-copy).
type provider struct {
	bufs *buftab.Table[*buffer]
}

// buffer is one allocation: a sealed memfd and its shared mapping.
type buffer struct {
	fd  int
	mem []byte
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func newProvider() memory.Provider {
	return &provider{bufs: buftab.New[*buffer]("example")}
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
	b := &buffer{fd: fd, mem: mem}
	id, err := p.bufs.Add(b, size)
	if err != nil {
		b.release()
		return memory.Buffer{DmabufFD: -1}, err
	}
	out := memory.Buffer{ID: id, Size: size, DmabufFD: -1}
	if dmabuf {
		out.DmabufFD = fd
	}
	return out, nil
}

// Free takes the buffer out of the table, which waits for the copies on it,
// then unmaps it and closes its memfd.
func (p *provider) Free(ctx context.Context, id memory.BufferID) error {
	b, err := p.bufs.Remove("free", id)
	if err != nil {
		return err
	}
	return b.release()
}

// release unmaps the buffer and closes its memfd.
func (b *buffer) release() error {
	return errors.Join(unix.Munmap(b.mem), unix.Close(b.fd))
}

// CopyIn's src is a slice of a staging buffer shared with the host. The
// table's errors wrap the engine's sentinels, which reach the host intact.
func (p *provider) CopyIn(ctx context.Context, dst memory.BufferID, off int64, src []byte) error {
	r := p.bufs.Read()
	defer r.Done()
	b, err := r.Lookup("copy-in", dst, off, int64(len(src)))
	if err != nil {
		return err
	}
	copy(b.mem[off:], src)
	return nil
}

// Gather checks every copy (source, then destination) before moving a byte,
// then copies in order.
func (p *provider) Gather(ctx context.Context, copies []memory.Copy) error {
	r := p.bufs.Read()
	defer r.Done()
	for _, c := range copies {
		if _, err := r.Lookup("gather src", c.Src, c.SrcOff, c.Len); err != nil {
			return err
		}
		if _, err := r.Lookup("gather dst", c.Dst, c.DstOff, c.Len); err != nil {
			return err
		}
	}
	for _, c := range copies {
		s, _ := r.Get("gather src", c.Src)
		d, _ := r.Get("gather dst", c.Dst)
		copy(d.mem[c.DstOff:c.DstOff+c.Len], s.mem[c.SrcOff:c.SrcOff+c.Len])
	}
	return nil
}

// ReadBack's dst is a slice of a staging buffer shared with the host.
func (p *provider) ReadBack(ctx context.Context, src memory.BufferID, off int64, dst []byte) error {
	r := p.bufs.Read()
	defer r.Done()
	b, err := r.Lookup("read-back", src, off, int64(len(dst)))
	if err != nil {
		return err
	}
	copy(dst, b.mem[off:])
	return nil
}

func (p *provider) Checksum(ctx context.Context, buf memory.BufferID, off, n int64) (uint32, error) {
	r := p.bufs.Read()
	defer r.Done()
	b, err := r.Lookup("checksum", buf, off, n)
	if err != nil {
		return 0, err
	}
	return crc32.Checksum(b.mem[off:off+n], castagnoli), nil
}

// Close frees every buffer, after the copies in flight have finished.
func (p *provider) Close() error {
	var errs []error
	for _, b := range p.bufs.Drain() {
		errs = append(errs, b.release())
	}
	return errors.Join(errs...)
}
