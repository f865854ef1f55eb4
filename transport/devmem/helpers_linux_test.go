//go:build linux

package devmem

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/providers/memory"
)

func TestMain(m *testing.M) {
	// Warm up what the runtime opens once (the netpoller's epoll and
	// event fds) so that fd counts before and after tests compare.
	if l, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		_ = l.Close()
	}
	before := countFDs()
	code := m.Run()
	if after := countFDs(); code == 0 && after != before {
		fmt.Fprintf(os.Stderr, "fd leak: %d open before the tests, %d after\n", before, after)
		code = 1
	}
	os.Exit(code)
}

func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		panic(err)
	}
	return len(ents)
}

// leakCheck fails the test if it leaves file descriptors open or goroutines
// of this package running.
func leakCheck(t testing.TB) {
	t.Helper()
	fds := countFDs()
	t.Cleanup(func() {
		if n := countFDs(); n != fds {
			t.Errorf("fd leak: %d open before, %d after", fds, n)
		}
		var stacks string
		for i := 0; i < 1000; i++ {
			stacks = ourGoroutines()
			if stacks == "" {
				return
			}
			runtime.Gosched()
		}
		t.Errorf("goroutines left running:\n%s", stacks)
	})
}

func ourGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "transport/devmem.") && !strings.Contains(g, "testing.tRunner") && !strings.Contains(g, "testing.(*T).Run") && !strings.Contains(g, "leakCheck") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB, network string) (client, server *net.TCPConn) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "tcp6" {
		addr = "[::1]:0"
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept()
		ch <- res{c, err}
	}()
	c, err := net.Dial(network, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { c.Close(); r.c.Close() })
	return c.(*net.TCPConn), r.c.(*net.TCPConn)
}

// memfd returns a memfd of size bytes (standing for a dmabuf) and a shared
// mapping of it, both released at cleanup.
func memfd(t testing.TB, size int) (int, []byte) {
	t.Helper()
	fd, err := unix.MemfdCreate("devmem-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = unix.Munmap(mem)
		_ = unix.Close(fd)
	})
	return fd, mem
}

// hostProvider is an memory.Provider over host memory whose dmabuf buffers
// are memfds (the software NIC maps them as it would a udmabuf).
type hostProvider struct {
	mu     sync.Mutex
	next   memory.BufferID
	bufs   map[memory.BufferID]*hostBuf
	copies int
}

type hostBuf struct {
	mem []byte
	fd  int
}

func newHostProvider() *hostProvider {
	return &hostProvider{bufs: make(map[memory.BufferID]*hostBuf)}
}

func (p *hostProvider) Name() string { return "host-test" }

func (p *hostProvider) Capabilities() memory.Capabilities {
	return memory.Capabilities{Kind: memory.Host, DmabufExport: true, CPUMappable: true}
}

func (p *hostProvider) Alloc(_ context.Context, size int64, dmabuf bool) (memory.Buffer, error) {
	b := &hostBuf{fd: -1}
	if dmabuf {
		fd, err := unix.MemfdCreate("devmem-arena", unix.MFD_CLOEXEC)
		if err != nil {
			return memory.Buffer{}, err
		}
		if err := unix.Ftruncate(fd, size); err != nil {
			unix.Close(fd)
			return memory.Buffer{}, err
		}
		mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			unix.Close(fd)
			return memory.Buffer{}, err
		}
		b.mem, b.fd = mem, fd
	} else {
		b.mem = make([]byte, size)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	p.bufs[p.next] = b
	return memory.Buffer{ID: p.next, Size: size, DmabufFD: b.fd}, nil
}

func (p *hostProvider) buf(id memory.BufferID) (*hostBuf, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.bufs[id]
	if !ok {
		return nil, memory.ErrUnknownBuffer
	}
	return b, nil
}

func (p *hostProvider) Free(_ context.Context, id memory.BufferID) error {
	p.mu.Lock()
	b, ok := p.bufs[id]
	delete(p.bufs, id)
	p.mu.Unlock()
	if !ok {
		return memory.ErrUnknownBuffer
	}
	if b.fd >= 0 {
		return errors.Join(unix.Munmap(b.mem), unix.Close(b.fd))
	}
	return nil
}

func (p *hostProvider) CopyIn(_ context.Context, dst memory.BufferID, off int64, src []byte) error {
	b, err := p.buf(dst)
	if err != nil {
		return err
	}
	if off < 0 || off+int64(len(src)) > int64(len(b.mem)) {
		return memory.ErrOutOfBounds
	}
	copy(b.mem[off:], src)
	return nil
}

func (p *hostProvider) Gather(_ context.Context, copies []memory.Copy) error {
	for _, c := range copies {
		src, err := p.buf(c.Src)
		if err != nil {
			return err
		}
		dst, err := p.buf(c.Dst)
		if err != nil {
			return err
		}
		if c.SrcOff < 0 || c.DstOff < 0 || c.SrcOff+c.Len > int64(len(src.mem)) || c.DstOff+c.Len > int64(len(dst.mem)) {
			return memory.ErrOutOfBounds
		}
		copy(dst.mem[c.DstOff:c.DstOff+c.Len], src.mem[c.SrcOff:c.SrcOff+c.Len])
	}
	p.mu.Lock()
	p.copies += len(copies)
	p.mu.Unlock()
	return nil
}

func (p *hostProvider) ReadBack(_ context.Context, src memory.BufferID, off int64, dst []byte) error {
	b, err := p.buf(src)
	if err != nil {
		return err
	}
	if off < 0 || off+int64(len(dst)) > int64(len(b.mem)) {
		return memory.ErrOutOfBounds
	}
	copy(dst, b.mem[off:])
	return nil
}

func (p *hostProvider) Checksum(context.Context, memory.BufferID, int64, int64) (uint32, error) {
	return 0, errors.New("not implemented in tests")
}

func (p *hostProvider) Close() error {
	p.mu.Lock()
	ids := make([]memory.BufferID, 0, len(p.bufs))
	for id := range p.bufs {
		ids = append(ids, id)
	}
	p.mu.Unlock()
	var errs []error
	for _, id := range ids {
		errs = append(errs, p.Free(context.Background(), id))
	}
	return errors.Join(errs...)
}

func (p *hostProvider) Bytes(id memory.BufferID) ([]byte, error) {
	b, err := p.buf(id)
	if err != nil {
		return nil, err
	}
	return b.mem, nil
}

var _ memory.Provider = (*hostProvider)(nil)

// pattern returns n deterministic bytes that differ at every offset of a
// page, so misplaced frags are caught.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}
