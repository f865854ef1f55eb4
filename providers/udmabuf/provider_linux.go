package main

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/providers"
	"github.com/blockxfer/blockxfer/providers/buftab"
	"github.com/blockxfer/blockxfer/providers/internal/memfd"
	"github.com/blockxfer/blockxfer/providers/internal/uapi"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// Where the kernel exposes udmabuf.
const (
	devicePath    = "/dev/udmabuf"
	sizeLimitPath = "/sys/module/udmabuf/parameters/size_limit_mb"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// provider is the udmabuf memory.Provider. It is safe for concurrent use:
// copies look their buffers up through a buftab.Reader and run before Done,
// so Free and Close, which take buffers out of the table, wait for them.
type provider struct {
	why      string // unusable reason, when dev is -1
	limit    int64  // size_limit_mb in bytes, 0 if unknown
	limitMB  int64
	pageSize int64

	mu  sync.RWMutex // guards dev
	dev int          // /dev/udmabuf, or -1

	bufs *buftab.Table[*buffer]
}

// buffer is one udmabuf: the dmabuf fd and its mapping (rounded up to a
// page; size is what was asked for), and the memfd holding its pages,
// which the host maps.
type buffer struct {
	dmabuf int
	memfd  int
	mem    []byte
	size   int64
}

// newProvider opens the udmabuf device at dev and reads the size limit at
// limitPath. A missing or unusable device makes the provider unusable, with
// the reason.
func newProvider(dev, limitPath string) *provider {
	p := &provider{dev: -1, pageSize: int64(unix.Getpagesize()), bufs: buftab.New[*buffer]("udmabuf")}
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	switch {
	case err == nil:
		p.dev = fd
	case errors.Is(err, unix.ENOENT):
		p.why = fmt.Sprintf("%s not found: the kernel needs CONFIG_UDMABUF (=y, or =m and `modprobe udmabuf`)", dev)
	case errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM):
		p.why = fmt.Sprintf("open %s: permission denied: run the engine as root or give its user access to the device (e.g. a udev rule)", dev)
	default:
		p.why = fmt.Sprintf("open %s: %v", dev, err)
	}
	if b, err := os.ReadFile(limitPath); err == nil {
		if mb, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && mb > 0 {
			p.limitMB, p.limit = mb, mb<<20
		}
	}
	return p
}

func (p *provider) Name() string { return "udmabuf" }

// Version is the plugin's version (providers.Versioner).
func (p *provider) Version() string { return "1" }

// UnusableReason says why /dev/udmabuf cannot be used
// (providers.UnusableReasoner).
func (p *provider) UnusableReason() string { return p.why }

func (p *provider) Capabilities() memory.Capabilities {
	return memory.Capabilities{
		Kind:           memory.Udmabuf,
		DmabufExport:   true,
		CPUMappable:    true,
		Gather:         true,
		DeviceChecksum: true,
		MaxAlloc:       p.limit,
	}
}

// limitError explains size_limit_mb and how to raise it.
func (p *provider) limitError(size int64) error {
	need := (size + 1<<20 - 1) >> 20
	return fmt.Errorf("udmabuf: %d bytes exceeds the udmabuf module's size_limit_mb=%d: raise it with `echo %d > %s` or `modprobe udmabuf size_limit_mb=%d`",
		size, p.limitMB, need, sizeLimitPath, need)
}

// Alloc creates a memfd of size bytes rounded up to a page, seals it against
// shrinking, wraps it with UDMABUF_CREATE and maps the dmabuf. The buffer
// owns the dmabuf fd; with dmabuf true it is also the Buffer's DmabufFD.
func (p *provider) Alloc(ctx context.Context, size int64, dmabuf bool) (memory.Buffer, error) {
	none := memory.Buffer{DmabufFD: -1}
	p.mu.RLock()
	dev := p.dev
	p.mu.RUnlock()
	if dev < 0 {
		return none, fmt.Errorf("udmabuf: %w: %s", providers.ErrUnusable, p.why)
	}
	if size <= 0 {
		return none, fmt.Errorf("udmabuf: alloc %d bytes: size must be positive", size)
	}
	rounded := (size + p.pageSize - 1) &^ (p.pageSize - 1)
	if p.limit > 0 && rounded > p.limit {
		return none, p.limitError(rounded)
	}
	mfd, err := memfd.Create("blockxfer-udmabuf", rounded, memfd.SealShrink)
	if err != nil {
		return none, fmt.Errorf("udmabuf: %w", err)
	}
	dfd, err := createUdmabuf(dev, mfd, rounded)
	if err != nil {
		memfd.Close(mfd)
		if errors.Is(err, unix.EINVAL) && p.limit == 0 {
			return none, fmt.Errorf("%w (if the size exceeds the module's size_limit_mb, raise it in %s)", err, sizeLimitPath)
		}
		return none, err
	}
	mem, err := unix.Mmap(dfd, 0, int(rounded), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(dfd)
		memfd.Close(mfd)
		return none, fmt.Errorf("udmabuf: mmap dmabuf: %w", os.NewSyscallError("mmap", err))
	}
	b := &buffer{dmabuf: dfd, memfd: mfd, mem: mem, size: size}
	id, err := p.bufs.Add(b, size)
	if err != nil {
		b.release()
		return none, err
	}
	out := memory.Buffer{ID: id, Size: size, DmabufFD: -1}
	if dmabuf {
		out.DmabufFD = dfd
	}
	return out, nil
}

// createUdmabuf issues UDMABUF_CREATE on dev for size bytes of memfd mfd.
func createUdmabuf(dev, mfd int, size int64) (int, error) {
	arg := uapi.UdmabufCreate{Memfd: uint32(mfd), Flags: uapi.UdmabufFlagsCloexec, Offset: 0, Size: uint64(size)}
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(dev), uapi.UdmabufCreateIoctl, uintptr(unsafe.Pointer(&arg)))
	if errno != 0 {
		return -1, fmt.Errorf("udmabuf: %w", os.NewSyscallError("ioctl(UDMABUF_CREATE)", errno))
	}
	return int(r), nil
}

// syncDmabuf issues DMA_BUF_IOCTL_SYNC with flags on a dmabuf.
func syncDmabuf(fd int, flags uint64) error {
	arg := uapi.DmaBufSync{Flags: flags}
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uapi.DmaBufIoctlSync, uintptr(unsafe.Pointer(&arg)))
		switch errno {
		case 0:
			return nil
		case unix.EINTR, unix.EAGAIN:
			continue
		}
		return fmt.Errorf("udmabuf: %w", os.NewSyscallError("ioctl(DMA_BUF_IOCTL_SYNC)", errno))
	}
}

// access runs f with CPU access to the buffers bracketed by
// DMA_BUF_IOCTL_SYNC: mode is DmaBufSyncRead, Write or RW per buffer.
func access(bufs []*buffer, modes []uint64, f func()) error {
	for i, b := range bufs {
		if err := syncDmabuf(b.dmabuf, uapi.DmaBufSyncStart|modes[i]); err != nil {
			for j := range i {
				syncDmabuf(bufs[j].dmabuf, uapi.DmaBufSyncEnd|modes[j])
			}
			return err
		}
	}
	f()
	var errs []error
	for i, b := range bufs {
		errs = append(errs, syncDmabuf(b.dmabuf, uapi.DmaBufSyncEnd|modes[i]))
	}
	return errors.Join(errs...)
}

func (p *provider) Free(ctx context.Context, id memory.BufferID) error {
	b, err := p.bufs.Remove("free", id)
	if err != nil {
		return err
	}
	return b.release()
}

func (b *buffer) release() error {
	return errors.Join(unix.Munmap(b.mem), unix.Close(b.dmabuf), memfd.Close(b.memfd))
}

// HostMappable reports that the host may map the buffers (the optional
// providers.HostMapper): each is a memfd sealed against shrinking, the
// pages the dmabuf wraps, so the engine receives straight into them. The
// host's writes are not bracketed by DMA_BUF_IOCTL_SYNC: a device that
// reads the dmabuf must be cache-coherent with the CPU, as on x86.
func (p *provider) HostMappable() bool { return true }

// HostFD returns the memfd behind the buffer's dmabuf for the host to map
// (a copy is sent).
func (p *provider) HostFD(id memory.BufferID) (int, error) {
	b, err := p.bufs.Get("host fd", id)
	if err != nil {
		return -1, err
	}
	return b.memfd, nil
}

func (p *provider) CopyIn(ctx context.Context, dst memory.BufferID, off int64, src []byte) error {
	r := p.bufs.Read()
	defer r.Done()
	b, err := r.Lookup("copy-in", dst, off, int64(len(src)))
	if err != nil {
		return err
	}
	return access([]*buffer{b}, []uint64{uapi.DmaBufSyncWrite}, func() { copy(b.mem[off:], src) })
}

func (p *provider) ReadBack(ctx context.Context, src memory.BufferID, off int64, dst []byte) error {
	r := p.bufs.Read()
	defer r.Done()
	b, err := r.Lookup("read-back", src, off, int64(len(dst)))
	if err != nil {
		return err
	}
	return access([]*buffer{b}, []uint64{uapi.DmaBufSyncRead}, func() { copy(dst, b.mem[off:]) })
}

// Gather checks every copy (source, then destination), opens CPU access once
// per distinct buffer (read for sources, write for destinations), copies in
// order and closes access.
func (p *provider) Gather(ctx context.Context, copies []memory.Copy) error {
	r := p.bufs.Read()
	defer r.Done()
	var (
		bufs  []*buffer
		modes []uint64
	)
	note := func(b *buffer, mode uint64) {
		for i := range bufs {
			if bufs[i] == b {
				modes[i] |= mode
				return
			}
		}
		bufs, modes = append(bufs, b), append(modes, mode)
	}
	for _, c := range copies {
		s, err := r.Lookup("gather src", c.Src, c.SrcOff, c.Len)
		if err != nil {
			return err
		}
		d, err := r.Lookup("gather dst", c.Dst, c.DstOff, c.Len)
		if err != nil {
			return err
		}
		note(s, uapi.DmaBufSyncRead)
		note(d, uapi.DmaBufSyncWrite)
	}
	return access(bufs, modes, func() {
		for _, c := range copies {
			s, _ := r.Get("gather src", c.Src)
			d, _ := r.Get("gather dst", c.Dst)
			copy(d.mem[c.DstOff:c.DstOff+c.Len], s.mem[c.SrcOff:c.SrcOff+c.Len])
		}
	})
}

func (p *provider) Checksum(ctx context.Context, buf memory.BufferID, off, n int64) (uint32, error) {
	r := p.bufs.Read()
	defer r.Done()
	b, err := r.Lookup("checksum", buf, off, n)
	if err != nil {
		return 0, err
	}
	var sum uint32
	err = access([]*buffer{b}, []uint64{uapi.DmaBufSyncRead}, func() { sum = crc32.Checksum(b.mem[off:off+n], castagnoli) })
	return sum, err
}

func (p *provider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, b := range p.bufs.Drain() {
		errs = append(errs, b.release())
	}
	if p.dev >= 0 {
		errs = append(errs, unix.Close(p.dev))
		p.dev = -1
	}
	return errors.Join(errs...)
}
