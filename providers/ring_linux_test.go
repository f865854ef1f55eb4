package providers

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/internal/fdcount"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// roundTrip copies data in, gathers it, reads both copies back and checks
// the checksum: every data-plane call once.
func roundTrip(t *testing.T, p *Plugin) {
	t.Helper()
	ctx := context.Background()
	const size = 1<<20 + 4096
	b, err := p.Alloc(ctx, size, false)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Free(ctx, b.ID)
	data := pattern(size/2, 5)
	if err := p.CopyIn(ctx, b.ID, 0, data); err != nil {
		t.Fatal(err)
	}
	copies := make([]memory.Copy, 0, len(data)/4096)
	for i := 0; i+4096 <= len(data); i += 4096 {
		copies = append(copies, memory.Copy{Src: b.ID, SrcOff: int64(i), Dst: b.ID, DstOff: size/2 + int64(i), Len: 4096})
	}
	if err := p.Gather(ctx, copies); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if err := p.ReadBack(ctx, b.ID, 0, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(data)], data) || !bytes.Equal(got[size/2:size/2+len(data)/4096*4096], data[:len(data)/4096*4096]) {
		t.Fatal("bytes read back differ from those copied in and gathered")
	}
	sum, err := p.Checksum(ctx, b.ID, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	if want := crc32.Checksum(got, crc32.MakeTable(crc32.Castagnoli)); sum != want {
		t.Fatalf("Checksum = %#x, want %#x", sum, want)
	}
}

// TestRingNegotiation checks that a plugin built with this package gets the
// ring, and that a plugin that does not offer it (RingEnv=off in the plugin,
// standing for an older build) or a host that declines it keeps working
// over gRPC.
func TestRingNegotiation(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     *LoadOptions
		wantRing bool
	}{
		{"ring", nil, true},
		{"plugin-without-ring", &LoadOptions{Env: []string{RingEnv + "=off"}}, false},
		{"host-declines", &LoadOptions{NoRing: true}, false},
		{"spinning-plugin-small-ring", &LoadOptions{Env: []string{RingEnv + "=20us"}, RingEntries: 3}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := load(t, examplePath, tc.opts)
			if got := p.client.ring != nil; got != tc.wantRing {
				t.Fatalf("ring in use = %v, want %v", got, tc.wantRing)
			}
			roundTrip(t, p)
		})
	}
}

// TestRingConcurrent runs many callers at once through a ring small enough
// that they wait for room, with staging slots smaller than one copy.
func TestRingConcurrent(t *testing.T) {
	ctx := context.Background()
	p := load(t, examplePath, &LoadOptions{RingEntries: 16, StagingSlotSize: 512 << 10, StagingSlots: 3})
	if p.client.ring == nil {
		t.Fatal("no ring")
	}
	const per = 3<<20 + 777
	b, err := p.Alloc(ctx, 8*per, false)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			off := int64(g * per)
			data := pattern(per, byte(g))
			for range 3 {
				if err := p.CopyIn(ctx, b.ID, off, data); err != nil {
					t.Error(err)
					return
				}
				got := make([]byte, per)
				if err := p.ReadBack(ctx, b.ID, off, got); err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(got, data) {
					t.Errorf("caller %d: read back differs", g)
					return
				}
				sum, err := p.Checksum(ctx, b.ID, off, per)
				if err != nil || sum != crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)) {
					t.Errorf("caller %d: checksum %#x, %v", g, sum, err)
					return
				}
				// A gather batch larger than a quarter of the ring goes in
				// several batches, in order: shift the range by 1 KiB,
				// twice over the same bytes.
				var copies []memory.Copy
				for i := int64(0); i < 64; i++ {
					copies = append(copies, memory.Copy{Src: b.ID, SrcOff: off + i*1024, Dst: b.ID, DstOff: off + (i+1)*1024, Len: 1024})
				}
				for i, j := 0, len(copies)-1; i < j; i, j = i+1, j-1 {
					copies[i], copies[j] = copies[j], copies[i]
				}
				if err := p.Gather(ctx, copies); err != nil {
					t.Error(err)
					return
				}
				if err := p.ReadBack(ctx, b.ID, off, got[:65*1024]); err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(got[1024:65*1024], data[:64*1024]) {
					t.Errorf("caller %d: gather batches ran out of order", g)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestRingErrors checks the plugin's own checks of descriptors (the host
// checks first, so these are sent raw) and that errors keep their
// sentinels across the ring.
func TestRingErrors(t *testing.T) {
	ctx := context.Background()
	p := load(t, testPath, nil)
	c := p.client
	b, err := p.Alloc(ctx, 4096, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CopyIn(ctx, b.ID, 0, []byte("take a staging slot")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		e    sqe
		want error
	}{
		{"unknown buffer", sqe{op: opChecksum, buf: 999, n: 1}, memory.ErrUnknownBuffer},
		{"past the end", sqe{op: opChecksum, buf: uint64(b.ID), off: 4000, n: 97}, memory.ErrOutOfBounds},
		{"offset overflow", sqe{op: opCopyIn, buf: uint64(b.ID), off: 1<<63 - 1, stg: 1, n: 2}, memory.ErrOutOfBounds},
		{"staging not attached", sqe{op: opCopyIn, buf: uint64(b.ID), stg: 77, n: 1}, ErrProtocol},
		{"past the staging", sqe{op: opReadBack, buf: uint64(b.ID), stg: 1, stgOff: DefaultStagingSlotSize - 1, n: 2}, ErrProtocol},
		{"negative length", sqe{op: opChecksum, buf: uint64(b.ID), n: -1}, ErrProtocol},
		{"unknown op", sqe{op: 42, buf: uint64(b.ID)}, ErrProtocol},
	} {
		_, err := c.ringOne(ctx, "test", tc.e)
		var re *RemoteError
		if !errors.Is(err, tc.want) || !errors.As(err, &re) {
			t.Errorf("%s: %v, want a RemoteError wrapping %v", tc.name, err, tc.want)
		}
	}
	o, err := c.ring.submitGather(ctx, []memory.Copy{{Src: b.ID, Dst: b.ID, Len: 1}, {Src: b.ID, Dst: 4242, Len: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := c.ring.wait(ctx, o); !errors.Is(c.ringResult("gather", res, err), memory.ErrUnknownBuffer) {
		t.Errorf("gather naming an unknown destination: %v, want ErrUnknownBuffer", c.ringResult("gather", res, err))
	}
	// The ring still works after refusing them.
	if _, err := p.Checksum(ctx, b.ID, 0, 4096); err != nil {
		t.Fatal(err)
	}
	if err := p.Gather(ctx, []memory.Copy{{Src: b.ID, Dst: b.ID, DstOff: 4000, Len: 100}}); !errors.Is(err, memory.ErrOutOfBounds) {
		t.Errorf("gather past the end: %v, want ErrOutOfBounds (host check)", err)
	}
}

// holdPlugin loads the test plugin with its Gather blocking forever, and
// returns it with a buffer and a func that starts a held gather and returns
// once the plugin is inside it.
func holdPlugin(t *testing.T) (*Plugin, memory.Buffer, func(ctx context.Context) chan error) {
	t.Helper()
	fifo := filepath.Join(t.TempDir(), "gather-started")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	p := load(t, testPath, &LoadOptions{Env: []string{"TESTPLUGIN_HOLD_GATHER=" + fifo}})
	if p.client.ring == nil {
		t.Fatal("no ring")
	}
	b, err := p.Alloc(context.Background(), 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	hold := func(ctx context.Context) chan error {
		errc := make(chan error, 1)
		go func() { errc <- p.Gather(ctx, []memory.Copy{{Src: b.ID, Dst: b.ID, DstOff: 4096, Len: 4096}}) }()
		f, err := os.Open(fifo) // blocks until the plugin opens it inside Gather
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		f.Close()
		return errc
	}
	return p, b, hold
}

// TestRingCrashFailsInFlight kills the plugin while one operation is
// blocked in it and others wait in the ring: every one fails with
// ErrPluginExited, and the ring's and staging's fds and mappings go.
func TestRingCrashFailsInFlight(t *testing.T) {
	ctx := context.Background()
	before := fdcount.Open(t)
	p, b, hold := holdPlugin(t)
	if err := p.CopyIn(ctx, b.ID, 0, pattern(4096, 1)); err != nil {
		t.Fatal(err)
	}
	held := hold(ctx)
	// The worker leading the ring is stuck in the gather: queue more
	// behind it (copy-ins through staging, checksums), then kill.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 8 {
		wg.Go(func() {
			if i%2 == 0 {
				errs <- p.CopyIn(ctx, b.ID, int64(i)*4096, pattern(1<<19, byte(i)))
			} else {
				_, err := p.Checksum(ctx, b.ID, 0, 4096)
				errs <- err
			}
		})
	}
	// Wait until the descriptors are in the ring (published, not taken).
	for deadline := time.Now().Add(10 * time.Second); ; {
		if n := p.client.ring.w.sqTail.Load() - p.client.ring.w.sqHead.Load(); n >= 8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("descriptors never queued behind the held gather")
		}
		time.Sleep(time.Millisecond)
	}
	if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	errs2 := append([]error{<-held}, collect(errs)...)
	for _, err := range errs2 {
		if !errors.Is(err, ErrPluginExited) || !strings.Contains(err.Error(), "signal: killed") {
			t.Errorf("in-flight call after kill -9: %v, want ErrPluginExited", err)
		}
	}
	if _, err := p.Checksum(ctx, b.ID, 0, 1); !errors.Is(err, ErrPluginExited) {
		t.Errorf("Checksum after the crash: %v, want ErrPluginExited", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close after crash: %v", err)
	}
	if n := fdcount.Open(t); n != before {
		t.Errorf("%d fds open after the crash and Close, want %d", n, before)
	}
}

func collect(c chan error) []error {
	var out []error
	for err := range c {
		out = append(out, err)
	}
	return out
}

// TestRingCancel checks that a call whose ctx ends returns at once, while
// the plugin still holds its descriptor, and that the plugin's staging
// slot is not handed to another caller until the plugin is done with it.
func TestRingCancel(t *testing.T) {
	ctx := context.Background()
	p, b, hold := holdPlugin(t)
	tctx, cancel := context.WithCancel(ctx)
	held := hold(tctx)
	cancel()
	if err := <-held; !errors.Is(err, context.Canceled) {
		t.Fatalf("held gather after cancel: %v, want context.Canceled", err)
	}
	// The leader is stuck, so this copy-in stays queued until its ctx
	// ends; its staging slot must stay out of the pool.
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	if err := p.CopyIn(short, b.ID, 0, pattern(1<<20, 3)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("queued copy-in: %v, want DeadlineExceeded", err)
	}
	if n := len(p.client.stage.free); n != 0 {
		t.Errorf("%d staging slots back in the pool while the plugin may still read them", n)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRingBroken has the host publish a tail more than a ring ahead of the
// head: the plugin stops serving the ring and says so, the host fails the
// ring's calls with ErrProtocol, and the control RPCs keep working.
func TestRingBroken(t *testing.T) {
	ctx := context.Background()
	p := load(t, testPath, nil)
	r := p.client.ring
	b, err := p.Alloc(ctx, 4096, false)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.tail += 2 * (r.w.sqMask + 1)
	r.publish(0)
	select {
	case <-r.reaped:
	case <-time.After(20 * time.Second):
		t.Fatal("host still serving the ring 20s after breaking it")
	}
	if _, err := p.Checksum(ctx, b.ID, 0, 1); !errors.Is(err, ErrProtocol) {
		t.Errorf("Checksum on a broken ring: %v, want ErrProtocol", err)
	}
	if err := p.Free(ctx, b.ID); err != nil {
		t.Errorf("Free (an RPC) after the ring broke: %v", err)
	}
}

// TestCopyInChecksum checks the copy-in whose completion carries the CRC
// of the destination: chunk checksums chain into the whole range's, the
// bytes land, and where it cannot be done (a provider without
// memory.CopyInChecksummer, no ring, a source outside staging) it fails
// with memory.ErrNoCopyInChecksum having copied nothing.
func TestCopyInChecksum(t *testing.T) {
	ctx := context.Background()
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	const half = 256 << 10
	data := pattern(2*half, 7)
	copyIn := func(t *testing.T, p *Plugin, dst memory.BufferID, src []byte) (uint32, error) {
		t.Helper()
		st, err := p.AcquireStaging(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Release()
		copy(st.Bytes, src)
		sum, err := p.CopyInChecksum(ctx, dst, 0, st.Bytes[:half], 0)
		if err != nil {
			return 0, err
		}
		return p.CopyInChecksum(ctx, dst, half, st.Bytes[half:2*half], sum)
	}
	untouched := func(t *testing.T, p *Plugin, id memory.BufferID) {
		t.Helper()
		got := make([]byte, 2*half)
		if err := p.ReadBack(ctx, id, 0, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, make([]byte, 2*half)) {
			t.Error("a refused copy-in with checksum changed the buffer")
		}
	}

	t.Run("example", func(t *testing.T) {
		p := load(t, examplePath, &LoadOptions{StagingSlotSize: 2 * half})
		b, err := p.Alloc(ctx, 2*half, false)
		if err != nil {
			t.Fatal(err)
		}
		// From memory that is not staging: refused, nothing copied.
		if _, err := p.CopyInChecksum(ctx, b.ID, 0, data[:half], 0); !errors.Is(err, memory.ErrNoCopyInChecksum) {
			t.Fatalf("from a plain slice: %v, want ErrNoCopyInChecksum", err)
		}
		untouched(t, p, b.ID)
		sum, err := copyIn(t, p, b.ID, data)
		if err != nil {
			t.Fatal(err)
		}
		if want := crc32.Checksum(data, castagnoli); sum != want {
			t.Errorf("chained CopyInChecksum = %#x, want %#x", sum, want)
		}
		got := make([]byte, 2*half)
		if err := p.ReadBack(ctx, b.ID, 0, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Error("the bytes read back differ from those copied in")
		}
		// Out of bounds is checked before anything moves.
		st, err := p.AcquireStaging(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Release()
		if _, err := p.CopyInChecksum(ctx, b.ID, half+1, st.Bytes[:half], 0); !errors.Is(err, memory.ErrOutOfBounds) {
			t.Errorf("past the end: %v, want ErrOutOfBounds", err)
		}
	})
	t.Run("provider without it", func(t *testing.T) {
		p := load(t, testPath, nil)
		b, err := p.Alloc(ctx, 2*half, false)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // the second is refused on the host side
			if _, err := copyIn(t, p, b.ID, data); !errors.Is(err, memory.ErrNoCopyInChecksum) {
				t.Fatalf("%v, want ErrNoCopyInChecksum", err)
			}
			untouched(t, p, b.ID)
		}
		if !p.client.ring.noCopySum.Load() {
			t.Error("the refusal was not remembered")
		}
	})
	t.Run("no ring", func(t *testing.T) {
		p := load(t, examplePath, &LoadOptions{NoRing: true})
		b, err := p.Alloc(ctx, 2*half, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := copyIn(t, p, b.ID, data); !errors.Is(err, memory.ErrNoCopyInChecksum) {
			t.Fatalf("%v, want ErrNoCopyInChecksum", err)
		}
		untouched(t, p, b.ID)
	})
}
