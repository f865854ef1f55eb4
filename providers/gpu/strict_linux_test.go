//go:build linux && cgo

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport/choose"
)

// TestStandIn runs testdata/fakecuda_check.c against the stand-in driver:
// exported dmabufs refuse mmap, async copies land at the stream's
// synchronization, cuFlushGPUDirectRDMAWrites checks its arguments, and VMM
// memory (cuMemCreate + cuMemMap, as PyTorch's expandable segments
// allocate) exports only in whole allocation granules. The provider
// exports only whole cuMemAlloc allocations today; the granule rule is
// what exporting caller-owned memory will have to respect.
func TestStandIn(t *testing.T) {
	out, err := exec.Command(fakeCheck, fakeCUDA).CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("the stand-in driver lets through calls the real one rejects: %v", err)
	}
}

func TestRDMAFlushPolicy(t *testing.T) {
	unknown := errors.New("cuDeviceGetAttribute: CUDA_ERROR_INVALID_VALUE (1)")
	for _, tc := range []struct {
		ordering    int
		orderingErr error
		options     int
		optionsErr  error
		haveFlush   bool
		flush       bool
		note        string
	}{
		{0, nil, 1, nil, true, true, "unordered (ordering NONE): cuFlushGPUDirectRDMAWrites"},
		{0, nil, 3, nil, true, true, "unordered (ordering NONE)"},
		{100, nil, 1, nil, true, false, "ordered (OWNER): no flush"},
		{200, nil, 0, nil, false, false, "ordered (ALL_DEVICES): no flush"},
		{0, nil, 2, nil, true, false, "no host flush (flush options 0x2)"},
		{0, nil, 1, nil, false, false, "lacks cuFlushGPUDirectRDMAWrites"},
		{0, nil, 0, unknown, true, false, "flush options are unknown"},
		{0, unknown, 1, nil, true, true, "ordering unknown"},
	} {
		flush, note := rdmaFlushPolicy(tc.ordering, tc.orderingErr, tc.options, tc.optionsErr, tc.haveFlush)
		if flush != tc.flush || !strings.Contains(note, tc.note) {
			t.Errorf("rdmaFlushPolicy(%d, %v, %#x, %v, %v) = %v, %q; want %v, %q", tc.ordering, tc.orderingErr, tc.options, tc.optionsErr, tc.haveFlush, flush, note, tc.flush, tc.note)
		}
	}
}

// TestRDMAFlush checks that reads of NIC-written memory (a buffer exported
// as a dmabuf) are preceded by cuFlushGPUDirectRDMAWrites exactly when the
// device's GPUDirect RDMA writes ordering is below OWNER and it offers the
// host flush, and that Version says which.
func TestRDMAFlush(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		env     []string
		flush   bool
		version string
	}{
		{"pre-Hopper: ordering NONE, host flush", []string{"FAKECUDA_RDMA_ORDERING=0", "FAKECUDA_RDMA_FLUSH_OPTIONS=1"}, true, "unordered (ordering NONE): cuFlushGPUDirectRDMAWrites"},
		{"ordering NONE, host and memops flush", []string{"FAKECUDA_RDMA_ORDERING=0", "FAKECUDA_RDMA_FLUSH_OPTIONS=3"}, true, "cuFlushGPUDirectRDMAWrites before"},
		{"ordering unreadable", []string{"FAKECUDA_NO_ATTR=118"}, true, "ordering unknown"},
		{"Hopper: ordering OWNER", []string{"FAKECUDA_RDMA_ORDERING=100"}, false, "ordered (OWNER): no flush"},
		{"ordering ALL_DEVICES", []string{"FAKECUDA_RDMA_ORDERING=200"}, false, "ordered (ALL_DEVICES): no flush"},
		{"ordering NONE, no host flush", []string{"FAKECUDA_RDMA_ORDERING=0", "FAKECUDA_RDMA_FLUSH_OPTIONS=2"}, false, "may be read stale"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trace := filepath.Join(t.TempDir(), "trace")
			p := loadGPU(t, append([]string{"BLOCKXFER_LIBCUDA=" + fakeCUDA, "FAKECUDA_TRACE=" + trace}, tc.env...))
			if why := p.Unusable(); why != "" {
				t.Fatal(why)
			}
			if !strings.Contains(p.Version(), tc.version) {
				t.Errorf("Version() = %q, want it to say %q", p.Version(), tc.version)
			}
			// taken returns the trace since the last call.
			taken := func() string {
				t.Helper()
				b, err := os.ReadFile(trace)
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Fatal(err)
				}
				os.Remove(trace)
				return string(b)
			}
			const n = 64 << 10
			arena, err := p.Alloc(ctx, n, true) // a NIC writes it
			if err != nil {
				t.Fatal(err)
			}
			dst, err := p.Alloc(ctx, n, false)
			if err != nil {
				t.Fatal(err)
			}
			data := pattern(n, 7)
			if err := p.CopyIn(ctx, arena.ID, 0, data); err != nil {
				t.Fatal(err)
			}
			flushed := "flush 0 100\n" // CURRENT_CTX, TO_OWNER
			if !tc.flush {
				flushed = ""
			}
			taken()
			if err := p.Gather(ctx, []memory.Copy{{Src: dst.ID, Dst: arena.ID, Len: 4096}, {Src: arena.ID, SrcOff: 8192, Dst: dst.ID, Len: 4096}}); err != nil {
				t.Fatal(err)
			}
			if got, want := taken(), flushed+"dtod-async\ndtod-async\nstream-sync\n"; got != want {
				t.Errorf("gather from the exported buffer: driver calls\n%s\nwant\n%s", got, want)
			}
			if err := p.Gather(ctx, []memory.Copy{{Src: dst.ID, Dst: dst.ID, DstOff: 4096, Len: 4096}}); err != nil {
				t.Fatal(err)
			}
			if got, want := taken(), "dtod-async\nstream-sync\n"; got != want {
				t.Errorf("gather from a buffer no NIC writes: driver calls\n%s\nwant\n%s", got, want)
			}
			got := make([]byte, n)
			if err := p.ReadBack(ctx, arena.ID, 0, got); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Checksum(ctx, arena.ID, 0, n); err != nil {
				t.Fatal(err)
			}
			if err := p.ReadBack(ctx, dst.ID, 0, got); err != nil {
				t.Fatal(err)
			}
			if got, want := taken(), flushed+flushed; got != want {
				t.Errorf("read-back and checksum of the exported buffer, read-back of another: driver calls\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// TestGatherWaitsForItsCopies proves the stand-in driver catches a Gather
// that returns before its stream is synchronized: its async copies have not
// landed, and a read-back sees the old bytes, as on a GPU.
func TestGatherWaitsForItsCopies(t *testing.T) {
	p := newProvider(resolveConfig(-1, func(k string) string {
		if k == libraryEnv {
			return fakeCUDA
		}
		return ""
	}))
	if p.why != "" {
		t.Fatalf("fake driver unusable: %s", p.why)
	}
	defer p.Close()
	ctx := context.Background()
	const n = 16 << 10
	src, err := p.Alloc(ctx, n, false)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := p.Alloc(ctx, n, false)
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(n, 3)
	if err := p.CopyIn(ctx, src.ID, 0, data); err != nil {
		t.Fatal(err)
	}
	copies := []memory.Copy{{Src: src.ID, Dst: dst.ID, Len: n}}
	got := make([]byte, n)

	p.testSkipGatherSync = true
	if err := p.Gather(ctx, copies); err != nil {
		t.Fatal(err)
	}
	if err := p.ReadBack(ctx, dst.ID, 0, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, make([]byte, n)) {
		t.Error("a gather that skipped cuStreamSynchronize already shows its bytes: the stand-in completes async copies at once, so a missing sync would go unnoticed")
	}

	p.testSkipGatherSync = false
	if err := p.Gather(ctx, copies); err != nil {
		t.Fatal(err)
	}
	if err := p.ReadBack(ctx, dst.ID, 0, got); err != nil || !bytes.Equal(got, data) {
		t.Errorf("gather with its stream synchronized: bytes differ (%v)", err)
	}
}

// TestEmulationRejectsGPUDmabuf: --devmem emulate with the gpu provider
// has the software NIC map the arena's dmabuf, which a GPU refuses; the
// session must fail at setup, not later.
func TestEmulationRejectsGPUDmabuf(t *testing.T) {
	p := loadGPU(t, []string{"BLOCKXFER_LIBCUDA=" + fakeCUDA})
	if why := p.Unusable(); why != "" {
		t.Fatal(why)
	}
	path, err := choose.Client(context.Background(), choose.ClientOptions{
		Mode: choose.Emulate, Server: "127.0.0.1:1", Provider: p, ArenaSize: 1 << 20,
	})
	if err == nil {
		path.Close()
		t.Fatal("devmem emulation into GPU memory set up: the software NIC mapped a GPU dmabuf, which a real GPU refuses")
	}
	t.Logf("choose.Client(emulate, gpu): %v", err)
	if !strings.Contains(err.Error(), "map") {
		t.Errorf("error %q does not say the dmabuf cannot be mapped", err)
	}
}
