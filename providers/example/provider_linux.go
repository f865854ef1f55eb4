package main

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/providers/buftab"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// provider is a memory.Provider over memfds. providers.Serve calls it from
// many goroutines at once. The buffer table handles that: copies look their
// buffers up through a buftab.Reader and copy before Done, and Free waits
// for the Readers before it unmaps (so a buffer is never unmapped mid-copy).
type provider struct {
	bufs    *buftab.Table[*buffer]
	hostMap bool // every buffer is a memfd the host maps
}

// buffer is one allocation: a sealed memfd and its shared mapping, or
// anonymous memory (fd -1) for a buffer not exported.
type buffer struct {
	fd  int
	mem []byte
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var _ memory.CopyInChecksummer = (*provider)(nil)

// ringCopyEnv names the environment variable that, set to 1, keeps the
// host from mapping the buffers: every byte then goes through staging and
// the plugin's copy (the path of a plugin whose memory the host cannot map,
// kept measurable by scripts/bench-provider.sh).
const ringCopyEnv = "BLOCKXFER_EXAMPLE_NO_HOST_MAP"

func newProvider() memory.Provider {
	return &provider{bufs: buftab.New[*buffer]("example"), hostMap: os.Getenv(ringCopyEnv) != "1"}
}

// HostMappable reports that the host may map the buffers (the optional
// providers.HostMapper): they are memfds sealed against shrinking, so the
// engine receives straight into them.
func (p *provider) HostMappable() bool { return p.hostMap }

// HostFD returns the buffer's memfd for the host to map (a copy is sent).
func (p *provider) HostFD(id memory.BufferID) (int, error) {
	b, err := p.bufs.Get("host fd", id)
	if err != nil {
		return -1, err
	}
	if b.fd < 0 {
		return -1, fmt.Errorf("example: host fd: buffer %d is anonymous memory", id)
	}
	return b.fd, nil
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

// Alloc allocates zeroed memory. With dmabuf true, or when the host maps
// the buffers, it creates a memfd the way udmabuf wants one (sealable,
// shrink-sealed) and maps it; with dmabuf true it returns the memfd as the
// buffer's fd, which the buffer keeps owning (providers.Serve sends a copy
// to the host). Otherwise nothing outside this process maps the buffer, so
// it is anonymous memory in transparent huge pages, which takes a fault
// per 2 MiB instead of per 4 KiB page.
func (p *provider) Alloc(ctx context.Context, size int64, dmabuf bool) (memory.Buffer, error) {
	if size <= 0 {
		return memory.Buffer{DmabufFD: -1}, fmt.Errorf("example: alloc %d bytes: size must be positive", size)
	}
	b := &buffer{fd: -1}
	var err error
	if dmabuf || p.hostMap {
		b.fd, b.mem, err = mapMemfd(size)
	} else if b.mem, err = unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS); err == nil {
		unix.Madvise(b.mem, unix.MADV_HUGEPAGE) // advice only: small pages otherwise
	} else {
		err = fmt.Errorf("example: mmap: %w", err)
	}
	if err != nil {
		return memory.Buffer{DmabufFD: -1}, err
	}
	// Make the pages resident now, so the copies into the buffer take no
	// page faults. A kernel before 5.14 refuses the advice (EINVAL): the
	// pages then fault in on first use. Not when the host maps the
	// buffer: the host writes it and makes its own mapping resident
	// (Plugin.Prefault), which allocates the pages; populating here too
	// would only add a second set of page-table entries.
	if !p.hostMap {
		if err := unix.Madvise(b.mem, unix.MADV_POPULATE_WRITE); err != nil && err != unix.EINVAL {
			b.release()
			return memory.Buffer{DmabufFD: -1}, fmt.Errorf("example: populate %d bytes: %w", size, err)
		}
	}
	id, err := p.bufs.Add(b, size)
	if err != nil {
		b.release()
		return memory.Buffer{DmabufFD: -1}, err
	}
	out := memory.Buffer{ID: id, Size: size, DmabufFD: -1}
	if dmabuf {
		out.DmabufFD = b.fd
	}
	return out, nil
}

// mapMemfd creates a sealed memfd of size bytes and maps it shared.
func mapMemfd(size int64) (int, []byte, error) {
	fd, err := unix.MemfdCreate("blockxfer-example", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, nil, fmt.Errorf("example: memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("example: ftruncate: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("example: seal: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("example: mmap: %w", err)
	}
	return fd, mem, nil
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

// release unmaps the buffer and closes its memfd, if it has one.
func (b *buffer) release() error {
	err := unix.Munmap(b.mem)
	if b.fd >= 0 {
		err = errors.Join(err, unix.Close(b.fd))
	}
	return err
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

// sumBlock is how much CopyInChecksum copies before it checksums what it
// copied: small enough to be read back from the core's own cache.
const sumBlock = 64 << 10

// CopyInChecksum copies like CopyIn and checksums the bytes it copied,
// read back from the destination block by block right after each block's
// copy, while they are still in cache (the optional
// memory.CopyInChecksummer): the engine then needs no Checksum of the
// extent once it has landed.
func (p *provider) CopyInChecksum(ctx context.Context, dst memory.BufferID, off int64, src []byte, crc uint32) (uint32, error) {
	r := p.bufs.Read()
	defer r.Done()
	b, err := r.Lookup("copy-in", dst, off, int64(len(src)))
	if err != nil {
		return 0, err
	}
	d := b.mem[off : off+int64(len(src))]
	for len(src) > 0 {
		n := copy(d[:min(len(d), sumBlock)], src)
		crc = crc32.Update(crc, castagnoli, d[:n])
		d, src = d[n:], src[n:]
	}
	return crc, nil
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
