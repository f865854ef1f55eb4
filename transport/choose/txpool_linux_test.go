package choose

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport/devmem"
)

// poolProvider is a TX pool provider whose one buffer's dmabuf is fd.
type poolProvider struct {
	kind          memory.Kind
	fd            int
	allocs, frees int
}

func (p *poolProvider) Name() string { return string(p.kind) }
func (p *poolProvider) Capabilities() memory.Capabilities {
	return memory.Capabilities{Kind: p.kind, DmabufExport: true}
}
func (p *poolProvider) Alloc(_ context.Context, size int64, dmabuf bool) (memory.Buffer, error) {
	p.allocs++
	return memory.Buffer{ID: 1, Size: size, DmabufFD: p.fd}, nil
}
func (p *poolProvider) Free(context.Context, memory.BufferID) error {
	p.frees++
	return unix.Close(p.fd)
}
func (p *poolProvider) CopyIn(context.Context, memory.BufferID, int64, []byte) error   { return nil }
func (p *poolProvider) Gather(context.Context, []memory.Copy) error                    { return nil }
func (p *poolProvider) ReadBack(context.Context, memory.BufferID, int64, []byte) error { return nil }
func (p *poolProvider) Checksum(context.Context, memory.BufferID, int64, int64) (uint32, error) {
	return 0, nil
}
func (p *poolProvider) Close() error { return nil }

const poolSize = 1 << 20

// memfdOf returns a memfd of poolSize bytes, which maps like a udmabuf.
func memfdOf(t *testing.T) int {
	t.Helper()
	fd, err := unix.MemfdCreate("txpool", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, poolSize); err != nil {
		t.Fatal(err)
	}
	return fd
}

// unmappable returns an fd of poolSize bytes that mmap refuses, as the
// NVIDIA exporter refuses to map a GPU's dmabuf.
func unmappable(t *testing.T) int {
	t.Helper()
	m := memfdOf(t)
	defer unix.Close(m)
	fd, err := unix.Open(filepath.Join("/proc/self/fd", strconv.Itoa(m)), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestTXPoolRefusesGPU: blockd fills the TX pool through a CPU mapping of
// its dmabuf, which a GPU's refuses; --tx-provider gpu must say so before
// allocating, not fail later with an mmap errno.
func TestTXPoolRefusesGPU(t *testing.T) {
	p := &poolProvider{kind: memory.GPU, fd: unmappable(t)}
	defer unix.Close(p.fd)
	var s ServerPath
	_, _, fb := s.txPool(context.Background(), p, poolSize)
	if fb == nil || fb.code != "no-udmabuf" || !strings.Contains(fb.detail, "GPU dmabufs cannot be mapped by the CPU: use host or udmabuf memory for the TX pool") {
		t.Errorf("TX pool from a GPU provider: fallback %v, want one saying GPU dmabufs cannot be mapped by the CPU", fb)
	}
	if p.allocs != 0 {
		t.Errorf("%d allocations from the GPU provider, want none", p.allocs)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}

// TestTXPoolUnmappableDmabuf: another exporter whose dmabuf the CPU cannot
// map gets the same explanation, with the errno, and its buffer is freed.
func TestTXPoolUnmappableDmabuf(t *testing.T) {
	p := &poolProvider{kind: "vendor", fd: unmappable(t)}
	var s ServerPath
	_, _, fb := s.txPool(context.Background(), p, poolSize)
	if fb == nil || !strings.Contains(fb.detail, "the vendor dmabuf cannot be mapped by the CPU (mmap: ") || !strings.Contains(fb.detail, "udmabuf") {
		t.Errorf("unmappable TX pool dmabuf: fallback %v", fb)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	if p.allocs != 1 || p.frees != 1 {
		t.Errorf("%d allocations, %d frees; want 1, 1", p.allocs, p.frees)
	}
}

// TestTXPoolMapsAndSyncs: a mappable dmabuf (udmabuf) becomes the pool
// mapping, and the transport brackets the server's writes into it with
// DMA_BUF_IOCTL_SYNC.
func TestTXPoolMapsAndSyncs(t *testing.T) {
	p := &poolProvider{kind: memory.Udmabuf, fd: memfdOf(t)}
	var s ServerPath
	buf, mem, fb := s.txPool(context.Background(), p, poolSize)
	if fb != nil || len(mem) != poolSize || buf.DmabufFD != p.fd {
		t.Fatalf("txPool = %+v, %d bytes, %v", buf, len(mem), fb)
	}
	mem[poolSize-1] = 1 // mapped read-write
	tr := txTransport(devmem.Host(), nil, nil, mem, buf.DmabufFD)
	if tr.Config.Sync == nil || &tr.Mem[0] != &mem[0] {
		t.Error("the TX transport does not bracket its pool writes with DMA_BUF_IOCTL_SYNC")
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	if p.frees != 1 {
		t.Errorf("%d frees, want 1", p.frees)
	}
}
