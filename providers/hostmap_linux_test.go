package providers

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/blockxfer/blockxfer/engine/enginetest"
	"github.com/blockxfer/blockxfer/internal/fdcount"
	"github.com/blockxfer/blockxfer/providers/internal/memfd"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// hostMapEnv makes the test plugin host-mappable.
var hostMapEnv = []string{"TESTPLUGIN_HOST_MAP=1"}

// mappedBuffers counts this process's mappings of the test plugin's buffer
// memfds (hostmem names them blockxfer-host).
func mappedBuffers(tb testing.TB) int {
	tb.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		tb.Fatal(err)
	}
	return strings.Count(string(maps), "/memfd:blockxfer-host ")
}

// TestHostMappedBuffers checks a host-mappable plugin's buffers: mapped in
// the host (CPUMappable, Bytes), the same memory as the plugin's in both
// directions, the fd closed once mapped and the mapping gone after Free.
func TestHostMappedBuffers(t *testing.T) {
	ctx := context.Background()
	p := load(t, testPath, &LoadOptions{Env: hostMapEnv})
	if !p.Capabilities().CPUMappable {
		t.Fatal("host-mappable plugin: CPUMappable = false")
	}
	// The test plugin lists fd and shm: only fd can be mapped here.
	if got := p.Capabilities().ImportKinds; len(got) != 1 || got[0] != memory.ImportFD {
		t.Errorf("ImportKinds = %q, want [fd]", got)
	}
	fds, maps := fdcount.Open(t), mappedBuffers(t)
	const size = 3 << 20
	b, err := p.Alloc(ctx, size, false)
	if err != nil {
		t.Fatal(err)
	}
	if n := fdcount.Open(t); n != fds {
		t.Errorf("%d fds open after Alloc, want %d: the buffer's fd was kept", n, fds)
	}
	if n := mappedBuffers(t); n != maps+1 {
		t.Errorf("%d buffer mappings after Alloc, want %d", n, maps+1)
	}
	if err := p.Prefault(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	mem, err := p.Bytes(b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(mem) != size {
		t.Fatalf("Bytes: %d bytes, want %d", len(mem), size)
	}
	// Host writes, the plugin reads (ReadBack over the ring).
	data := pattern(size, 3)
	copy(mem, data)
	got := make([]byte, size)
	if err := p.ReadBack(ctx, b.ID, 0, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the plugin does not see the bytes written through the host mapping")
	}
	// The plugin writes (CopyIn, Gather), the host reads.
	in := pattern(100000, 9)
	if err := p.CopyIn(ctx, b.ID, 12345, in); err != nil {
		t.Fatal(err)
	}
	if err := p.Gather(ctx, []memory.Copy{{Src: b.ID, SrcOff: 12345, Dst: b.ID, DstOff: 2 << 20, Len: int64(len(in))}}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mem[12345:12345+len(in)], in) || !bytes.Equal(mem[2<<20:2<<20+len(in)], in) {
		t.Fatal("the host mapping does not show the bytes the plugin wrote")
	}

	if err := p.Free(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if n := mappedBuffers(t); n != maps {
		t.Errorf("%d buffer mappings after Free, want %d: Free did not unmap", n, maps)
	}
	if _, err := p.Bytes(b.ID); !errors.Is(err, memory.ErrUnknownBuffer) {
		t.Errorf("Bytes after Free: %v, want ErrUnknownBuffer", err)
	}
	if n := fdcount.Open(t); n != fds {
		t.Errorf("%d fds open after Free, want %d", n, fds)
	}
}

// TestNotHostMappable checks that a plugin that does not declare itself
// host-mappable behaves as before: not CPUMappable, nothing mapped, Bytes
// refused.
func TestNotHostMappable(t *testing.T) {
	ctx := context.Background()
	p := load(t, testPath, nil)
	if p.Capabilities().CPUMappable {
		t.Error("plugin that is not host-mappable: CPUMappable = true")
	}
	maps := mappedBuffers(t)
	b, err := p.Alloc(ctx, 1<<16, false)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Free(ctx, b.ID)
	if n := mappedBuffers(t); n != maps {
		t.Errorf("%d buffer mappings after Alloc, want %d", n, maps)
	}
	if mem, err := p.Bytes(b.ID); err == nil {
		t.Errorf("Bytes = %d bytes, want an error", len(mem))
	}
}

// TestHostMapRefusesUnsealed has the plugin send a memfd that is not
// sealed against shrinking: the host refuses to map it, Alloc fails and
// nothing leaks.
func TestHostMapRefusesUnsealed(t *testing.T) {
	ctx := context.Background()
	p := load(t, testPath, &LoadOptions{Env: []string{"TESTPLUGIN_HOST_MAP=unsealed"}})
	fds, maps := fdcount.Open(t), mappedBuffers(t)
	_, err := p.Alloc(ctx, 1<<16, false)
	if err == nil || !strings.Contains(err.Error(), "not sealed against shrinking") {
		t.Fatalf("Alloc with an unsealed buffer file: %v, want a refusal", err)
	}
	if n := fdcount.Open(t); n != fds {
		t.Errorf("%d fds open after the refusal, want %d", n, fds)
	}
	if n := mappedBuffers(t); n != maps {
		t.Errorf("%d buffer mappings after the refusal, want %d", n, maps)
	}
}

// TestHostMappedImport imports a caller's memfd into a host-mappable
// plugin: Bytes is the caller's memory.
func TestHostMappedImport(t *testing.T) {
	ctx := context.Background()
	p := load(t, testPath, &LoadOptions{Env: hostMapEnv})
	const size = 1 << 16
	fd, err := memfd.Create("caller", size, memfd.SealShrink)
	if err != nil {
		t.Fatal(err)
	}
	defer memfd.Close(fd)
	own, err := memfd.Map(fd, size)
	if err != nil {
		t.Fatal(err)
	}
	defer memfd.Unmap(own)
	b, err := p.Import(ctx, memory.ImportDesc{Kind: memory.ImportFD, FD: fd, Offset: 4096, Size: 8192})
	if err != nil {
		t.Fatal(err)
	}
	mem, err := p.Bytes(b.ID)
	if err != nil {
		t.Fatal(err)
	}
	copy(mem, "through the host mapping")
	if !bytes.HasPrefix(own[4096:], []byte("through the host mapping")) {
		t.Error("the caller does not see bytes written through Bytes")
	}
	got := make([]byte, 24)
	if err := p.ReadBack(ctx, b.ID, 0, got); err != nil || string(got) != "through the host mapping" {
		t.Errorf("plugin read back %q, %v", got, err)
	}
	if err := p.Free(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Import(ctx, memory.ImportDesc{Kind: memory.ImportShm, FD: fd, Size: size}); !errors.Is(err, memory.ErrImportNotSupported) {
		t.Errorf("shm import into a host-mappable plugin: %v, want ErrImportNotSupported", err)
	}
}

// TestHostMappedPluginKilled kills a host-mappable plugin holding a buffer:
// calls fail with ErrPluginExited, the mapping stays valid memory (touching
// it does not crash the host), and Free then unmaps it.
func TestHostMappedPluginKilled(t *testing.T) {
	ctx := context.Background()
	p := load(t, testPath, &LoadOptions{Env: hostMapEnv})
	maps := mappedBuffers(t)
	b, err := p.Alloc(ctx, 1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := p.Bytes(b.ID)
	if err != nil {
		t.Fatal(err)
	}
	copy(mem, "before")
	if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.Exited()
	// The pages outlive the plugin: writing and reading them is safe.
	copy(mem[len(mem)-5:], "after")
	if string(mem[:6]) != "before" || string(mem[len(mem)-5:]) != "after" {
		t.Error("the mapping of a dead plugin's buffer lost its bytes")
	}
	if _, err := p.Bytes(b.ID); !errors.Is(err, ErrPluginExited) {
		t.Errorf("Bytes after kill: %v, want ErrPluginExited", err)
	}
	if err := p.ReadBack(ctx, b.ID, 0, make([]byte, 6)); !errors.Is(err, ErrPluginExited) {
		t.Errorf("ReadBack after kill: %v, want ErrPluginExited", err)
	}
	if _, err := p.Alloc(ctx, 4096, false); !errors.Is(err, ErrPluginExited) {
		t.Errorf("Alloc after kill: %v, want ErrPluginExited", err)
	}
	if n := mappedBuffers(t); n != maps+1 {
		t.Errorf("%d buffer mappings after the kill, want %d (kept until Free)", n, maps+1)
	}
	if err := p.Free(ctx, b.ID); !errors.Is(err, ErrPluginExited) {
		t.Errorf("Free after kill: %v, want ErrPluginExited", err)
	}
	if n := mappedBuffers(t); n != maps {
		t.Errorf("%d buffer mappings after Free, want %d", n, maps)
	}
}

// TestCloseUnmaps checks that Close unmaps the buffers never freed.
func TestCloseUnmaps(t *testing.T) {
	ctx := context.Background()
	p := load(t, testPath, &LoadOptions{Env: hostMapEnv})
	maps := mappedBuffers(t)
	if _, err := p.Alloc(ctx, 1<<16, false); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if n := mappedBuffers(t); n != maps {
		t.Errorf("%d buffer mappings after Close, want %d", n, maps)
	}
}

// TestFetchIntoHostMappedPlugin fetches a volume from a blockd engine into
// the test plugin over TCP. Host-mappable, every extent is verified and no
// CopyIn or Checksum reaches the plugin: the bytes land in the host's
// mapping and are summed inline. Not host-mappable, the same fetch does
// reach the plugin (which shows the count is taken).
func TestFetchIntoHostMappedPlugin(t *testing.T) {
	for _, mapped := range []bool{true, false} {
		count := filepath.Join(t.TempDir(), "calls")
		env := []string{"TESTPLUGIN_COUNT=" + count}
		if mapped {
			env = append(env, hostMapEnv...)
		}
		p := load(t, testPath, &LoadOptions{Env: env})
		enginetest.FetchAll(t, p, 8<<20+4096)
		calls, err := os.ReadFile(count)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		reached := len(calls) > 0
		if reached == mapped {
			t.Errorf("mapped=%v: the plugin saw %q (i: CopyIn, c: Checksum)", mapped, calls)
		}
	}
}
