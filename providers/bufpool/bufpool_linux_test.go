//go:build linux

package bufpool_test

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"

	"github.com/blockxfer/blockxfer/internal/fdcount"
	"github.com/blockxfer/blockxfer/internal/mincore"
	"github.com/blockxfer/blockxfer/providers/bufpool"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// counting counts the Allocs and Frees that reach a host provider, and can
// make Prefault fail.
type counting struct {
	*hostmem.Provider
	allocs, frees atomic.Int64
	prefaultErr   error
}

func (c *counting) Alloc(ctx context.Context, size int64, dmabuf bool) (memory.Buffer, error) {
	c.allocs.Add(1)
	return c.Provider.Alloc(ctx, size, dmabuf)
}

func (c *counting) AllocPrivate(ctx context.Context, size int64) (memory.Buffer, error) {
	c.allocs.Add(1)
	return c.Provider.AllocPrivate(ctx, size)
}

func (c *counting) Free(ctx context.Context, id memory.BufferID) error {
	c.frees.Add(1)
	return c.Provider.Free(ctx, id)
}

func (c *counting) Prefault(ctx context.Context, id memory.BufferID) error {
	if c.prefaultErr != nil {
		return c.prefaultErr
	}
	return c.Provider.Prefault(ctx, id)
}

func newCounting(t *testing.T) *counting {
	t.Helper()
	c := &counting{Provider: hostmem.New()}
	t.Cleanup(func() { c.Provider.Close() })
	return c
}

// mapped reports whether mem's range is still mapped.
func mapped(t *testing.T, mem []byte) bool {
	t.Helper()
	ok, err := mincore.Mapped(mem)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// resident counts the pages of mem that are in memory.
func resident(t *testing.T, mem []byte) int {
	t.Helper()
	n, err := mincore.Resident(mem)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

const win = 1 << 20

func TestSecondReadAllocatesNothing(t *testing.T) {
	ctx := context.Background()
	c := newCounting(t)
	pl := bufpool.New(c)
	defer pl.Close()
	first, err := pl.Get(ctx, win, 4)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.allocs.Load(); got != 4 {
		t.Fatalf("first Get: %d allocs, want 4", got)
	}
	pl.Put(first...)
	// A second read of the same size, and one of a smaller size, reuse
	// the buffers.
	for _, size := range []int64{win, win / 2} {
		again, err := pl.Get(ctx, size, 4)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.allocs.Load(); got != 4 {
			t.Fatalf("Get(%d) after Put: %d allocs in all, want still 4", size, got)
		}
		seen := map[memory.BufferID]bool{}
		for _, b := range first {
			seen[b.ID] = true
		}
		for _, b := range again {
			if !seen[b.ID] || b.Size != win {
				t.Fatalf("Get(%d) after Put returned %+v, not one of the first buffers", size, b)
			}
		}
		pl.Put(again...)
	}
	// More, or larger, buffers than are idle: only the difference is
	// allocated.
	more, err := pl.Get(ctx, win, 6)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.allocs.Load(); got != 6 {
		t.Fatalf("Get of 6 with 4 idle: %d allocs in all, want 6", got)
	}
	pl.Put(more...)
	if _, err := pl.Get(ctx, 2*win, 1); err != nil {
		t.Fatal(err)
	}
	if got := c.allocs.Load(); got != 7 {
		t.Fatalf("Get of a larger buffer: %d allocs in all, want 7", got)
	}
}

func TestBuffersArePrefaulted(t *testing.T) {
	ctx := context.Background()
	c := newCounting(t)
	// The control: a buffer allocated outside the pool is not resident,
	// so the check below can fail.
	plain, err := c.Provider.AllocPrivate(ctx, win)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := c.Bytes(plain.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := resident(t, mem); n != 0 {
		t.Fatalf("a fresh buffer has %d resident pages, want 0", n)
	}
	pl := bufpool.New(c)
	defer pl.Close()
	bufs, err := pl.Get(ctx, win, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bufs {
		mem, err := c.Bytes(b.ID)
		if err != nil {
			t.Fatal(err)
		}
		if n, want := resident(t, mem), len(mem)/os.Getpagesize(); n != want {
			t.Errorf("buffer %d from the pool: %d of %d pages resident", b.ID, n, want)
		}
	}
}

func TestCloseFreesEverything(t *testing.T) {
	ctx := context.Background()
	c := newCounting(t)
	fds := fdcount.Open(t)
	pl := bufpool.New(c)
	idle, err := pl.Get(ctx, win, 2)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pl.Get(ctx, win, 3)
	if err != nil {
		t.Fatal(err)
	}
	pl.Put(idle...) // out stays handed out
	var mems [][]byte
	for _, b := range append(idle, out...) {
		mem, err := c.Bytes(b.ID)
		if err != nil || !mapped(t, mem) {
			t.Fatalf("buffer %d: %v, mapped %v", b.ID, err, err == nil && mapped(t, mem))
		}
		mems = append(mems, mem)
	}
	if err := pl.Close(); err != nil {
		t.Fatal(err)
	}
	if got := fdcount.Open(t); got != fds {
		t.Errorf("%d fds open after Close, want %d", got, fds)
	}
	for i, mem := range mems {
		if mapped(t, mem) {
			t.Errorf("buffer %d still mapped after Close", i)
		}
	}
	if got := c.frees.Load(); got != 5 {
		t.Errorf("Close freed %d buffers, want 5", got)
	}
	if _, err := c.Bytes(out[0].ID); !errors.Is(err, memory.ErrUnknownBuffer) {
		t.Errorf("a buffer handed out before Close: %v, want ErrUnknownBuffer", err)
	}
	if _, err := pl.Get(ctx, win, 1); !errors.Is(err, bufpool.ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	pl.Put(out...) // dropped
	if err := pl.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if got := c.frees.Load(); got != 5 {
		t.Errorf("after a second Close %d frees, want 5", got)
	}
}

func TestPrefaultFailureFreesTheBuffer(t *testing.T) {
	ctx := context.Background()
	c := newCounting(t)
	pl := bufpool.New(c)
	defer pl.Close()
	ok, err := pl.Get(ctx, win, 1)
	if err != nil {
		t.Fatal(err)
	}
	pl.Put(ok...)
	c.prefaultErr = errors.New("no memory")
	if _, err := pl.Get(ctx, win, 3); !errors.Is(err, c.prefaultErr) {
		t.Fatalf("Get with failing prefault: %v, want the prefault error", err)
	}
	if c.frees.Load() != c.allocs.Load()-1 {
		t.Errorf("%d allocs, %d frees: the failed buffer was not freed", c.allocs.Load(), c.frees.Load())
	}
	// The idle buffer taken by the failed Get went back.
	c.prefaultErr = nil
	n := c.allocs.Load()
	if _, err := pl.Get(ctx, win, 1); err != nil {
		t.Fatal(err)
	}
	if c.allocs.Load() != n {
		t.Error("the idle buffer taken by the failed Get was not given back")
	}
}

// shareable hides every optional interface of a host provider: the pool
// then allocates with Alloc (memfds, which have fds) and does not prefault.
type shareable struct{ memory.Provider }

func TestProviderWithoutPrivateMemory(t *testing.T) {
	ctx := context.Background()
	hm := hostmem.New()
	defer hm.Close()
	fds := fdcount.Open(t)
	pl := bufpool.New(shareable{hm})
	bufs, err := pl.Get(ctx, win, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bufs {
		if _, err := hm.FD(b.ID); err != nil {
			t.Errorf("buffer %d: %v, want a memfd-backed buffer from Alloc", b.ID, err)
		}
	}
	if got := fdcount.Open(t); got != fds+2 {
		t.Errorf("%d fds open with 2 buffers, want %d", got, fds+2)
	}
	if err := pl.Close(); err != nil {
		t.Fatal(err)
	}
	if got := fdcount.Open(t); got != fds {
		t.Errorf("%d fds open after Close, want %d", got, fds)
	}
}
