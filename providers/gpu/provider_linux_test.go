//go:build linux && cgo

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/internal/fdcount"
	"github.com/blockxfer/blockxfer/providers"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// Built once by TestMain.
var (
	pluginPath string // blockxfer-provider-gpu
	fakeCUDA   string // libfakecuda.so, from testdata/fakecuda.c
	fakeCheck  string // fakecuda_check, from testdata/fakecuda_check.c
	// fakeOld is the stand-in without cuMemImportFromShareableHandle, as
	// a driver too old to import VMM memory.
	fakeOld   string
	ownerPath string // ipc_owner, from testdata/ipc_owner.c
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gpu-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginPath = filepath.Join(dir, providers.ExecutablePrefix+"gpu")
	fakeCUDA = filepath.Join(dir, "libfakecuda.so")
	fakeCheck = filepath.Join(dir, "fakecuda_check")
	fakeOld = filepath.Join(dir, "libfakecuda-old.so")
	ownerPath = filepath.Join(dir, "ipc_owner")
	for _, args := range [][]string{
		{"go", "build", "-o", pluginPath, "."},
		{"gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", fakeCUDA, "testdata/fakecuda.c"},
		{"gcc", "-O2", "-Wall", "-Werror", "-o", fakeCheck, "testdata/fakecuda_check.c", "-ldl"},
		{"gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-DFAKECUDA_NO_VMM_IMPORT", "-o", fakeOld, "testdata/fakecuda.c"},
		{"gcc", "-O2", "-Wall", "-Werror", "-o", ownerPath, "testdata/ipc_owner.c", "-ldl"},
	} {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", strings.Join(args, " "), err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// loadGPU starts the plugin with env added to its environment.
func loadGPU(t *testing.T, env []string, args ...string) *providers.Plugin {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := providers.Load(ctx, pluginPath, &providers.LoadOptions{
		Env:    env,
		Args:   args,
		Logger: hclog.NewNullLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i) + byte(i>>10)
	}
	return p
}

// TestDrivers runs the same checks against the stand-in driver and, where
// one is installed, the real libcuda.so.1.
func TestDrivers(t *testing.T) {
	eachDriver(t, func(t *testing.T, p *providers.Plugin, fake bool) { testProvider(t, p, fake) })
}

// eachDriver runs test on the GPU plugin loaded with the stand-in driver
// and, where one is installed, with the real libcuda.so.1 (skipped, with
// the reason, where there is none).
func eachDriver(t *testing.T, test func(t *testing.T, p *providers.Plugin, fake bool)) {
	for _, d := range []struct {
		name string
		env  []string
	}{
		{"fake", []string{"BLOCKXFER_LIBCUDA=" + fakeCUDA}},
		{"real", nil},
	} {
		t.Run(d.name, func(t *testing.T) {
			p := loadGPU(t, d.env)
			if why := p.Unusable(); why != "" {
				if d.name == "real" {
					t.Skip("no usable CUDA driver here: " + why)
				}
				t.Fatalf("fake driver unusable: %s", why)
			}
			test(t, p, d.name == "fake")
		})
	}
}

func testProvider(t *testing.T, p *providers.Plugin, fake bool) {
	ctx := context.Background()
	c := p.Capabilities()
	if p.Name() != "gpu" || c.Kind != memory.GPU || c.Device != "cuda:0" || !c.Gather || c.DeviceChecksum || c.CPUMappable {
		t.Errorf("Name %q, Capabilities %+v", p.Name(), c)
	}
	if fake {
		if !c.DmabufExport || c.MaxAlloc != 1<<30 || !strings.Contains(p.Version(), "CUDA driver 12.4") {
			t.Errorf("fake driver: Capabilities %+v, Version %q", c, p.Version())
		}
	}

	// A dmabuf buffer: the fd reaches the host, with the exported size. The
	// CPU cannot map it: the NVIDIA exporter refuses mmap of video memory,
	// and so does the stand-in. (Some platforms' drivers map C2C memory,
	// so the real driver's answer is only logged.)
	const size = 5<<20 + 100 // spans two Checksum read-back chunks
	data := pattern(size, 1)
	if c.DmabufExport {
		before := fdcount.Open(t)
		b, err := p.Alloc(ctx, size, true)
		if err != nil {
			t.Fatal(err)
		}
		if b.DmabufFD < 0 {
			t.Fatal("no dmabuf fd")
		}
		link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", b.DmabufFD))
		if err != nil {
			t.Fatal(err)
		}
		if fake && !strings.Contains(link, "fakecuda-dmabuf") || !fake && !strings.Contains(link, "dmabuf") {
			t.Errorf("received fd is %q", link)
		}
		var st unix.Stat_t
		if err := unix.Fstat(b.DmabufFD, &st); err != nil || st.Size != roundPage(size) {
			t.Errorf("dmabuf fstat: size %d, %v; want %d", st.Size, err, roundPage(size))
		}
		if err := p.CopyIn(ctx, b.ID, 0, data); err != nil {
			t.Fatal(err)
		}
		// What blockd's TX pool and the software NIC did with it.
		mem, err := unix.Mmap(b.DmabufFD, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		switch {
		case err == nil:
			unix.Munmap(mem)
			if fake {
				t.Error("the stand-in's dmabuf can be mapped by the CPU; a GPU's cannot")
			} else {
				t.Log("this driver lets the CPU map its dmabuf (C2C memory?)")
			}
		case !fake:
			t.Logf("mmap of the GPU dmabuf: %v (as expected)", err)
		}
		got := make([]byte, size)
		if err := p.ReadBack(ctx, b.ID, 0, got); err != nil || !bytes.Equal(got, data) {
			t.Errorf("read back of the dmabuf buffer differs (%v)", err)
		}
		if err := p.Free(ctx, b.ID); err != nil {
			t.Fatal(err)
		}
		if n := fdcount.Open(t); n != before {
			t.Errorf("%d fds open after Free, want %d", n, before)
		}
	}

	src, err := p.Alloc(ctx, size, false)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := p.Alloc(ctx, size, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CopyIn(ctx, src.ID, 0, data); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if err := p.ReadBack(ctx, src.ID, 0, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back differs from copied in (%v)", err)
	}
	sum, err := p.Checksum(ctx, src.ID, 50, size-50)
	if want := crc32.Checksum(data[50:], crc32.MakeTable(crc32.Castagnoli)); err != nil || sum != want {
		t.Errorf("Checksum = %#x, %v; want %#x", sum, err, want)
	}

	// Gather: reverse the 4 KiB pages of the first 4 MiB.
	const pages = 1024
	copies := make([]memory.Copy, pages)
	for i := range copies {
		copies[i] = memory.Copy{Src: src.ID, SrcOff: int64(pages-1-i) * 4096, Dst: dst.ID, DstOff: int64(i) * 4096, Len: 4096}
	}
	if err := p.Gather(ctx, copies); err != nil {
		t.Fatal(err)
	}
	if err := p.ReadBack(ctx, dst.ID, 0, got[:pages*4096]); err != nil {
		t.Fatal(err)
	}
	for i := range pages {
		if !bytes.Equal(got[i*4096:(i+1)*4096], data[(pages-1-i)*4096:(pages-i)*4096]) {
			t.Fatalf("page %d not gathered", i)
		}
	}

	// Concurrent calls: each runs on whatever thread, so the plugin must
	// make its context current in every driver call (the stand-in checks).
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			off := int64(g) * 65536
			chunk := pattern(65536, byte(g))
			buf := make([]byte, len(chunk))
			for range 10 {
				if err := p.CopyIn(ctx, dst.ID, off, chunk); err != nil {
					t.Error(err)
					return
				}
				if err := p.Gather(ctx, []memory.Copy{{Src: dst.ID, SrcOff: off, Dst: src.ID, DstOff: off, Len: 65536}}); err != nil {
					t.Error(err)
					return
				}
				if err := p.ReadBack(ctx, src.ID, off, buf); err != nil || !bytes.Equal(buf, chunk) {
					t.Errorf("goroutine %d: round trip failed (%v)", g, err)
					return
				}
			}
		})
	}
	wg.Wait()

	if err := p.CopyIn(ctx, src.ID, size-1, []byte{1, 2}); !errors.Is(err, memory.ErrOutOfBounds) {
		t.Errorf("CopyIn past the end: %v", err)
	}
	if err := p.Free(ctx, 12345); !errors.Is(err, memory.ErrUnknownBuffer) {
		t.Errorf("Free(unknown): %v", err)
	}
	if _, err := p.Alloc(ctx, 1<<50, false); err == nil || !strings.Contains(err.Error(), "CUDA_ERROR_OUT_OF_MEMORY") {
		t.Errorf("Alloc(1 PiB): %v, want the driver's CUDA_ERROR_OUT_OF_MEMORY", err)
	}
	for _, id := range []memory.BufferID{src.ID, dst.ID} {
		if err := p.Free(ctx, id); err != nil {
			t.Error(err)
		}
	}
}

func roundPage(n int64) int64 {
	pg := int64(os.Getpagesize())
	return (n + pg - 1) &^ (pg - 1)
}

func TestNoDmabufSupport(t *testing.T) {
	ctx := context.Background()
	p := loadGPU(t, []string{"BLOCKXFER_LIBCUDA=" + fakeCUDA, "FAKECUDA_NO_DMABUF=1"})
	if p.Unusable() != "" {
		t.Fatal(p.Unusable())
	}
	if p.Capabilities().DmabufExport {
		t.Error("DmabufExport with CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED = 0")
	}
	_, err := p.Alloc(ctx, 4096, true)
	if !errors.Is(err, memory.ErrNoDmabuf) || !strings.Contains(err.Error(), "CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED = 0") {
		t.Errorf("Alloc(dmabuf): %v, want ErrNoDmabuf naming the attribute", err)
	}
	if b, err := p.Alloc(ctx, 4096, false); err != nil || b.DmabufFD != -1 {
		t.Errorf("Alloc without dmabuf = %+v, %v", b, err)
	}
}

func TestDeviceSelection(t *testing.T) {
	fake := "BLOCKXFER_LIBCUDA=" + fakeCUDA
	p := loadGPU(t, []string{fake, "FAKECUDA_DEVICES=2", "BLOCKXFER_GPU_DEVICE=1"})
	if got := p.Capabilities().Device; got != "cuda:1" || p.Unusable() != "" {
		t.Errorf("BLOCKXFER_GPU_DEVICE=1: device %q, unusable %q", got, p.Unusable())
	}
	p = loadGPU(t, []string{fake, "FAKECUDA_DEVICES=2", "BLOCKXFER_GPU_DEVICE=1"}, "-device", "0")
	if got := p.Capabilities().Device; got != "cuda:0" {
		t.Errorf("-device 0 over BLOCKXFER_GPU_DEVICE=1: device %q", got)
	}
	p = loadGPU(t, []string{fake, "FAKECUDA_DEVICES=2", "BLOCKXFER_GPU_DEVICE=5"})
	if why := p.Unusable(); !strings.Contains(why, "device 5") || !strings.Contains(why, "2 device(s)") {
		t.Errorf("BLOCKXFER_GPU_DEVICE=5 of 2: unusable %q", why)
	}
	if _, err := p.Alloc(context.Background(), 4096, false); !errors.Is(err, providers.ErrUnusable) {
		t.Errorf("Alloc on an unusable device: %v", err)
	}
}

func TestDriverErrors(t *testing.T) {
	p := loadGPU(t, []string{"BLOCKXFER_LIBCUDA=" + fakeCUDA, "FAKECUDA_NO_DEVICE=1"})
	if why := p.Unusable(); !strings.Contains(why, "cuInit: CUDA_ERROR_NO_DEVICE") {
		t.Errorf("cuInit failure: unusable %q, want the CUDA error name", why)
	}
	p = loadGPU(t, []string{"BLOCKXFER_LIBCUDA=" + filepath.Join(t.TempDir(), "libcuda.so.1")})
	if why := p.Unusable(); !strings.Contains(why, "BLOCKXFER_LIBCUDA") || !strings.Contains(why, "cannot be loaded") {
		t.Errorf("bad BLOCKXFER_LIBCUDA: unusable %q", why)
	}
	// A library without the driver's entry points.
	libc, err := filepath.Glob("/lib/*/libc.so.6")
	if err != nil || len(libc) == 0 {
		libc = []string{"libc.so.6"}
	}
	p = loadGPU(t, []string{"BLOCKXFER_LIBCUDA=" + libc[0]})
	if why := p.Unusable(); !strings.Contains(why, "cuInit") || !strings.Contains(why, "too old") {
		t.Errorf("library without cuInit: unusable %q", why)
	}
}

// TestNoDriverMessage checks the message for a missing libcuda.so.1 under
// its default name, in process (dlopen of a name that does not exist).
func TestNoDriverMessage(t *testing.T) {
	p := newProvider(config{library: "libblockxfer-no-such-driver.so.1"})
	defer p.Close()
	if why := p.UnusableReason(); !strings.Contains(why, "libblockxfer-no-such-driver.so.1 not found: install the NVIDIA driver") {
		t.Errorf("UnusableReason() = %q", why)
	}
	if _, err := p.Alloc(context.Background(), 4096, false); !errors.Is(err, providers.ErrUnusable) {
		t.Errorf("Alloc without a driver: %v", err)
	}
}

// TestConcurrentUse drives the provider in process with the stand-in driver
// from many goroutines (run it with -race): copies, gathers and frees
// interleave, and Close, with gathers in flight, waits for them and finds
// every stream back in the pool.
func TestConcurrentUse(t *testing.T) {
	p := newProvider(resolveConfig(-1, func(k string) string {
		if k == libraryEnv {
			return fakeCUDA
		}
		return ""
	}))
	if p.why != "" {
		t.Fatalf("fake driver unusable: %s", p.why)
	}
	ctx := context.Background()
	const piece = 4096
	shared, err := p.Alloc(ctx, 8*piece, false)
	if err != nil {
		p.Close()
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			data := pattern(piece, byte(g))
			got := make([]byte, piece)
			off := int64(g) * piece
			for range 20 {
				b, err := p.Alloc(ctx, piece, false)
				if err != nil {
					t.Error(err)
					return
				}
				if err := p.CopyIn(ctx, b.ID, 0, data); err != nil {
					t.Error(err)
				}
				if err := p.Gather(ctx, []memory.Copy{{Src: b.ID, Dst: shared.ID, DstOff: off, Len: piece}}); err != nil {
					t.Error(err)
				}
				if err := p.ReadBack(ctx, shared.ID, off, got); err != nil || !bytes.Equal(got, data) {
					t.Errorf("ReadBack after gather: %v (or other bytes)", err)
				}
				if sum, err := p.Checksum(ctx, b.ID, 0, piece); err != nil || sum != crc32.Checksum(data, castagnoli) {
					t.Errorf("Checksum = %#x, %v", sum, err)
				}
				if err := p.Free(ctx, b.ID); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()

	// Close while gathers run: each one either completes or finds the
	// buffer gone.
	for range 4 {
		wg.Go(func() {
			for {
				err := p.Gather(ctx, []memory.Copy{{Src: shared.ID, Dst: shared.ID, DstOff: piece, Len: piece}})
				if err != nil {
					if !errors.Is(err, memory.ErrUnknownBuffer) {
						t.Errorf("Gather during Close: %v, want ErrUnknownBuffer", err)
					}
					return
				}
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return with gathers in flight")
	}
	wg.Wait()
	if b, err := p.Alloc(ctx, piece, false); err == nil {
		t.Errorf("Alloc after Close = %+v, want an error", b)
	}
	if err := p.Free(ctx, shared.ID); !errors.Is(err, memory.ErrUnknownBuffer) {
		t.Errorf("Free after Close: %v, want ErrUnknownBuffer", err)
	}
}
