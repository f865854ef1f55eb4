package hostmem

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/internal/fdcount"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// callerMemfd makes a memfd of size bytes as a caller would, with seals
// (F_SEAL_* bits, 0 for none), and maps it.
func callerMemfd(t *testing.T, size int64, seals int) (int, []byte) {
	t.Helper()
	fd, err := unix.MemfdCreate("caller", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, size); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	if seals != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
			t.Fatal(err)
		}
	}
	return fd, mem
}

// mappings counts this process's memory mappings.
func mappings(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

func TestImportFD(t *testing.T) {
	ctx := context.Background()
	p := New()
	defer p.Close()
	const size = 5 * 4096
	fd, caller := callerMemfd(t, size, unix.F_SEAL_SHRINK)
	fds, maps := fdcount.Open(t), mappings(t)
	// A sub-range that starts and ends off the page boundaries.
	const off, n = 4096 + 100, 2*4096 + 7
	b, err := p.Import(ctx, memory.ImportDesc{Kind: memory.ImportFD, FD: fd, Offset: off, Size: n})
	if err != nil {
		t.Fatal(err)
	}
	if b.Size != n || b.DmabufFD != -1 {
		t.Fatalf("Import returned %+v", b)
	}
	data := fill(n, 9)
	if err := p.CopyIn(ctx, b.ID, 0, data); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(caller[off:off+n], data) {
		t.Fatal("the caller's mapping does not show the bytes copied into the import")
	}
	if !bytes.Equal(caller[:off], make([]byte, off)) || !bytes.Equal(caller[off+n:], make([]byte, size-off-n)) {
		t.Fatal("bytes outside the imported range changed")
	}
	copy(caller[off:], "caller wrote")
	mem, err := p.Bytes(b.ID)
	if err != nil || !bytes.HasPrefix(mem, []byte("caller wrote")) || len(mem) != n {
		t.Fatalf("Bytes = %d bytes, %v; want the caller's %d bytes", len(mem), err, n)
	}
	if _, err := p.FD(b.ID); err == nil {
		t.Error("FD of an imported buffer succeeded")
	}
	if got := fdcount.Open(t); got != fds {
		t.Errorf("Import kept an fd: %d open, %d before", got, fds)
	}
	if err := p.Free(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if got := mappings(t); got != maps {
		t.Errorf("%d mappings after Free, %d before the import", got, maps)
	}
	if !bytes.HasPrefix(caller[off:], []byte("caller wrote")) {
		t.Error("Free changed the caller's memory")
	}
}

func TestImportRefused(t *testing.T) {
	ctx := context.Background()
	p := New()
	defer p.Close()
	sealed, _ := callerMemfd(t, 8192, unix.F_SEAL_SHRINK)
	unsealed, _ := callerMemfd(t, 8192, 0)
	roSealed, _ := callerMemfd(t, 8192, unix.F_SEAL_SHRINK|unix.F_SEAL_FUTURE_WRITE)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	maps := mappings(t)
	for _, tc := range []struct {
		name string
		d    memory.ImportDesc
		want string
		is   error
	}{
		{"unsealed", memory.ImportDesc{Kind: memory.ImportFD, FD: unsealed, Size: 4096}, "not sealed against shrinking", nil},
		{"write-sealed", memory.ImportDesc{Kind: memory.ImportFD, FD: roSealed, Size: 4096}, "sealed against writing", nil},
		{"past the end", memory.ImportDesc{Kind: memory.ImportFD, FD: sealed, Offset: 4096, Size: 4097}, "past the end", memory.ErrOutOfBounds},
		{"pipe", memory.ImportDesc{Kind: memory.ImportFD, FD: int(r.Fd()), Size: 1}, "not a regular file", nil},
		{"closed fd", memory.ImportDesc{Kind: memory.ImportFD, FD: 1 << 20, Size: 1}, "fstat", nil},
		{"no fd", memory.ImportDesc{Kind: memory.ImportFD, FD: -1, Size: 1}, "no fd", nil},
		{"zero size", memory.ImportDesc{Kind: memory.ImportFD, FD: sealed}, "must be positive", nil},
		{"negative offset", memory.ImportDesc{Kind: memory.ImportFD, FD: sealed, Offset: -1, Size: 1}, "out of range", nil},
		{"cuda-ipc", memory.ImportDesc{Kind: memory.ImportCUDAIPC, FD: -1, Handle: make([]byte, 64), Size: 1}, "not supported", memory.ErrImportNotSupported},
		{"dmabuf", memory.ImportDesc{Kind: memory.ImportDmabuf, FD: sealed, Size: 1}, "not supported", memory.ErrImportNotSupported},
		{"unknown kind", memory.ImportDesc{Kind: "gpu-magic", FD: sealed, Size: 1}, "not supported", memory.ErrImportNotSupported},
	} {
		_, err := p.Import(ctx, tc.d)
		if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Errorf("%s: Import error = %v, want one saying %q", tc.name, err, tc.want)
		}
	}
	if n := p.bufs.Len(); n != 0 {
		t.Errorf("%d buffers left by refused imports", n)
	}
	if got := mappings(t); got != maps {
		t.Errorf("refused imports left mappings: %d, %d before", got, maps)
	}
}

func TestImportReleasedByClose(t *testing.T) {
	p := New()
	fd, _ := callerMemfd(t, 4096, unix.F_SEAL_SHRINK)
	maps := mappings(t)
	if _, err := p.Import(context.Background(), memory.ImportDesc{Kind: memory.ImportFD, FD: fd, Size: 4096}); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mappings(t); got != maps {
		t.Errorf("%d mappings after Close, %d before the import", got, maps)
	}
}

func TestImportBytes(t *testing.T) {
	ctx := context.Background()
	p := New()
	defer p.Close()
	mine := make([]byte, 1000)
	b, err := p.ImportBytes(mine[100:600])
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CopyIn(ctx, b.ID, 10, []byte("into my slice")); err != nil {
		t.Fatal(err)
	}
	if string(mine[110:123]) != "into my slice" {
		t.Fatalf("caller's slice holds %q", mine[110:123])
	}
	if err := p.CopyIn(ctx, b.ID, 495, make([]byte, 6)); !errors.Is(err, memory.ErrOutOfBounds) {
		t.Errorf("CopyIn past the imported slice: %v, want ErrOutOfBounds", err)
	}
	if err := p.Free(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	mine[110] = 'I' // still the caller's: Free did not unmap or free it
	if _, err := p.ImportBytes(nil); err == nil {
		t.Error("ImportBytes(nil) succeeded")
	}
}
