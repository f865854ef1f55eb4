//go:build linux

package hostmem

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"math"
	"reflect"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/internal/fdcount"
	"github.com/blockxfer/blockxfer/providers/memory"
)

func alloc(t *testing.T, p *Provider, size int64) memory.Buffer {
	t.Helper()
	b, err := p.Alloc(context.Background(), size, false)
	if err != nil {
		t.Fatalf("Alloc(%d): %v", size, err)
	}
	return b
}

func fill(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i*7) + byte(i>>9)
	}
	return p
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	p := New()
	defer p.Close()
	if p.Name() != "host" {
		t.Errorf("Name() = %q, want host", p.Name())
	}
	b := alloc(t, p, 3*4096+5)
	if b.ID == 0 || b.Size != 3*4096+5 || b.DmabufFD != -1 {
		t.Fatalf("Alloc returned %+v", b)
	}
	data := fill(5000, 3)
	if err := p.CopyIn(ctx, b.ID, 100, data); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := p.ReadBack(ctx, b.ID, 100, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("ReadBack returned different bytes than CopyIn wrote")
	}
	mem, err := p.Bytes(b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(mem)) != b.Size || !bytes.Equal(mem[100:100+len(data)], data) {
		t.Fatal("Bytes does not show the copied-in data")
	}
	if !bytes.Equal(mem[:100], make([]byte, 100)) {
		t.Fatal("fresh buffer is not zeroed")
	}
	// The mapping is the memfd's shared mapping: a pread of the fd sees it.
	fd, err := p.FD(b.ID)
	if err != nil {
		t.Fatal(err)
	}
	viaFD := make([]byte, len(data))
	if _, err := unix.Pread(fd, viaFD, 100); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(viaFD, data) {
		t.Fatal("memfd contents differ from the mapping: not MAP_SHARED")
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if seals&unix.F_SEAL_SHRINK == 0 || seals&unix.F_SEAL_GROW == 0 {
		t.Errorf("seals = %#x, want F_SEAL_SHRINK|F_SEAL_GROW", seals)
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.FD_CLOEXEC == 0 {
		t.Error("memfd is not close-on-exec")
	}
}

func TestCapabilities(t *testing.T) {
	c := New().Capabilities()
	want := memory.Capabilities{Kind: memory.Host, CPUMappable: true, Gather: true, DeviceChecksum: true,
		ImportKinds: []memory.ImportKind{memory.ImportFD, memory.ImportShm}}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Capabilities() = %+v, want %+v", c, want)
	}
}

func TestAllocErrors(t *testing.T) {
	ctx := context.Background()
	p := New()
	defer p.Close()
	if _, err := p.Alloc(ctx, 4096, true); !errors.Is(err, memory.ErrNoDmabuf) {
		t.Errorf("Alloc(dmabuf) error = %v, want ErrNoDmabuf", err)
	}
	for _, size := range []int64{0, -1} {
		if b, err := p.Alloc(ctx, size, false); err == nil {
			t.Errorf("Alloc(%d) = %+v, want error", size, b)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := p.Alloc(cctx, 4096, false); !errors.Is(err, context.Canceled) {
		t.Errorf("Alloc with cancelled ctx: %v, want context.Canceled", err)
	}
	if n := p.bufs.Len(); n != 0 {
		t.Errorf("%d buffers allocated by failed Allocs", n)
	}
}

func TestUnknownBuffer(t *testing.T) {
	ctx := context.Background()
	p := New()
	defer p.Close()
	b := alloc(t, p, 4096)
	other := alloc(t, p, 4096)
	if err := p.Free(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	_, bytesErr := p.Bytes(b.ID)
	_, fdErr := p.FD(b.ID)
	_, sumErr := p.Checksum(ctx, b.ID, 0, 8)
	for name, err := range map[string]error{
		"Free again":  p.Free(ctx, b.ID),
		"CopyIn":      p.CopyIn(ctx, b.ID, 0, buf),
		"ReadBack":    p.ReadBack(ctx, b.ID, 0, buf),
		"Gather src":  p.Gather(ctx, []memory.Copy{{Src: b.ID, Dst: other.ID, Len: 8}}),
		"Gather dst":  p.Gather(ctx, []memory.Copy{{Src: other.ID, Dst: b.ID, Len: 8}}),
		"Bytes":       bytesErr,
		"FD":          fdErr,
		"Checksum":    sumErr,
		"never alloc": p.CopyIn(ctx, 999, 0, buf),
	} {
		if !errors.Is(err, memory.ErrUnknownBuffer) {
			t.Errorf("%s: error = %v, want ErrUnknownBuffer", name, err)
		}
	}
}

func TestOutOfBounds(t *testing.T) {
	ctx := context.Background()
	p := New()
	defer p.Close()
	const size = 4096
	b := alloc(t, p, size)
	for _, tc := range []struct {
		off, n int64
		ok     bool
	}{
		{0, size, true},
		{size, 0, true},
		{size - 1, 1, true},
		{0, size + 1, false},
		{1, size, false},
		{size + 1, 0, false},
		{-1, 1, false},
		{math.MaxInt64, 1, false},
		{1, math.MaxInt64, false},
	} {
		var errs []error
		if tc.n >= 0 && tc.n <= 2*size {
			buf := make([]byte, tc.n)
			errs = append(errs, p.CopyIn(ctx, b.ID, tc.off, buf), p.ReadBack(ctx, b.ID, tc.off, buf))
		}
		_, err := p.Checksum(ctx, b.ID, tc.off, tc.n)
		errs = append(errs, err,
			p.Gather(ctx, []memory.Copy{{Src: b.ID, SrcOff: tc.off, Dst: b.ID, DstOff: 0, Len: tc.n}}),
			p.Gather(ctx, []memory.Copy{{Src: b.ID, SrcOff: 0, Dst: b.ID, DstOff: tc.off, Len: tc.n}}))
		for i, err := range errs {
			if tc.ok && err != nil {
				t.Errorf("off=%d n=%d op %d: unexpected error %v", tc.off, tc.n, i, err)
			}
			if !tc.ok && !errors.Is(err, memory.ErrOutOfBounds) {
				t.Errorf("off=%d n=%d op %d: error = %v, want ErrOutOfBounds", tc.off, tc.n, i, err)
			}
		}
	}
	if err := p.Gather(ctx, []memory.Copy{{Src: b.ID, Dst: b.ID, Len: -1}}); !errors.Is(err, memory.ErrOutOfBounds) {
		t.Errorf("negative gather length: %v, want ErrOutOfBounds", err)
	}
}

func TestGather(t *testing.T) {
	ctx := context.Background()
	p := New()
	defer p.Close()
	s1, s2 := alloc(t, p, 8192), alloc(t, p, 8192)
	dst := alloc(t, p, 3*4096)
	d1, d2 := fill(8192, 1), fill(8192, 2)
	if err := p.CopyIn(ctx, s1.ID, 0, d1); err != nil {
		t.Fatal(err)
	}
	if err := p.CopyIn(ctx, s2.ID, 0, d2); err != nil {
		t.Fatal(err)
	}
	copies := []memory.Copy{
		{Src: s2.ID, SrcOff: 4096, Dst: dst.ID, DstOff: 0, Len: 4096},
		{Src: s1.ID, SrcOff: 10, Dst: dst.ID, DstOff: 4096, Len: 4096},
		{Src: s2.ID, SrcOff: 0, Dst: dst.ID, DstOff: 8192, Len: 100},
		{Src: s1.ID, SrcOff: 0, Dst: dst.ID, DstOff: 8292, Len: 0},
	}
	if err := p.Gather(ctx, copies); err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte{}, d2[4096:]...), d1[10:4106]...), d2[:100]...)
	got := make([]byte, len(want))
	if err := p.ReadBack(ctx, dst.ID, 0, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("gathered bytes differ")
	}

	// A bad copy anywhere in the batch leaves every buffer unchanged.
	before, _ := p.Checksum(ctx, dst.ID, 0, dst.Size)
	err := p.Gather(ctx, []memory.Copy{
		{Src: s1.ID, Dst: dst.ID, Len: 4096},
		{Src: s1.ID, SrcOff: 8000, Dst: dst.ID, Len: 4096},
	})
	if !errors.Is(err, memory.ErrOutOfBounds) {
		t.Fatalf("error = %v, want ErrOutOfBounds", err)
	}
	if after, _ := p.Checksum(ctx, dst.ID, 0, dst.Size); after != before {
		t.Fatal("failed gather modified the destination")
	}

	// Overlapping copy within one buffer has memmove semantics.
	if err := p.Gather(ctx, []memory.Copy{{Src: s1.ID, SrcOff: 0, Dst: s1.ID, DstOff: 1, Len: 100}}); err != nil {
		t.Fatal(err)
	}
	mem, _ := p.Bytes(s1.ID)
	if !bytes.Equal(mem[1:101], d1[:100]) {
		t.Fatal("overlapping gather copy is not a memmove")
	}
}

func TestChecksum(t *testing.T) {
	ctx := context.Background()
	p := New()
	defer p.Close()
	b := alloc(t, p, 4096)
	if err := p.CopyIn(ctx, b.ID, 7, []byte("123456789")); err != nil {
		t.Fatal(err)
	}
	sum, err := p.Checksum(ctx, b.ID, 7, 9)
	if err != nil {
		t.Fatal(err)
	}
	if sum != 0xE3069283 { // CRC-32C check value
		t.Errorf("Checksum(\"123456789\") = %#x, want 0xe3069283", sum)
	}
	data := fill(4096, 9)
	if err := p.CopyIn(ctx, b.ID, 0, data); err != nil {
		t.Fatal(err)
	}
	sum, err = p.Checksum(ctx, b.ID, 0, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if want := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)); sum != want {
		t.Errorf("Checksum = %#x, want %#x", sum, want)
	}
	if sum, err := p.Checksum(ctx, b.ID, 10, 0); err != nil || sum != 0 {
		t.Errorf("empty checksum = %#x, %v; want 0, nil", sum, err)
	}
}

func TestCancelledContext(t *testing.T) {
	p := New()
	defer p.Close()
	b := alloc(t, p, 4096)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	buf := make([]byte, 4)
	_, sumErr := p.Checksum(ctx, b.ID, 0, 4)
	for name, err := range map[string]error{
		"CopyIn":   p.CopyIn(ctx, b.ID, 0, buf),
		"ReadBack": p.ReadBack(ctx, b.ID, 0, buf),
		"Gather":   p.Gather(ctx, []memory.Copy{{Src: b.ID, Dst: b.ID, Len: 4}}),
		"Checksum": sumErr,
	} {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v, want context.Canceled", name, err)
		}
	}
}

func TestCloseReleasesEverything(t *testing.T) {
	ctx := context.Background()
	before := fdcount.Open(t)
	p := New()
	for range 10 {
		alloc(t, p, 1<<16)
	}
	if got := fdcount.Open(t); got != before+10 {
		t.Errorf("open fds = %d after 10 Allocs, want %d", got, before+10)
	}
	b := alloc(t, p, 4096)
	if err := p.Free(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if got := fdcount.Open(t); got != before {
		t.Errorf("open fds = %d after Close, want %d", got, before)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := p.Alloc(ctx, 4096, false); !errors.Is(err, ErrClosed) {
		t.Errorf("Alloc after Close: %v, want ErrClosed", err)
	}
	if err := p.CopyIn(ctx, b.ID, 0, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("CopyIn after Close: %v, want ErrClosed", err)
	}
}

func TestIDsAreNotReused(t *testing.T) {
	ctx := context.Background()
	p := New()
	defer p.Close()
	a := alloc(t, p, 4096)
	if err := p.Free(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	b := alloc(t, p, 4096)
	if b.ID == a.ID {
		t.Fatalf("buffer id %d reused after Free", a.ID)
	}
}

func TestConcurrentUse(t *testing.T) {
	ctx := context.Background()
	p := New()
	defer p.Close()
	shared := alloc(t, p, 1<<20)
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			data := fill(4096, byte(g))
			got := make([]byte, 4096)
			for range 50 {
				b, err := p.Alloc(ctx, 8192, false)
				if err != nil {
					errc <- err
					return
				}
				if err := p.CopyIn(ctx, b.ID, 4096, data); err != nil {
					errc <- err
					return
				}
				off := int64(g) * 4096
				if err := p.Gather(ctx, []memory.Copy{{Src: b.ID, SrcOff: 4096, Dst: shared.ID, DstOff: off, Len: 4096}}); err != nil {
					errc <- err
					return
				}
				if err := p.ReadBack(ctx, shared.ID, off, got); err != nil {
					errc <- err
					return
				}
				if !bytes.Equal(got, data) {
					errc <- errors.New("concurrent gather corrupted a region")
					return
				}
				if err := p.Free(ctx, b.ID); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

func TestNoAllocations(t *testing.T) {
	ctx := context.Background()
	p := New()
	defer p.Close()
	a, b := alloc(t, p, 1<<16), alloc(t, p, 1<<16)
	src := fill(1<<15, 1)
	dst := make([]byte, 1<<15)
	copies := []memory.Copy{
		{Src: a.ID, SrcOff: 0, Dst: b.ID, DstOff: 4096, Len: 4096},
		{Src: a.ID, SrcOff: 8192, Dst: b.ID, DstOff: 0, Len: 4096},
	}
	for name, f := range map[string]func(){
		"CopyIn":   func() { _ = p.CopyIn(ctx, a.ID, 0, src) },
		"Gather":   func() { _ = p.Gather(ctx, copies) },
		"ReadBack": func() { _ = p.ReadBack(ctx, a.ID, 0, dst) },
		"Checksum": func() { _, _ = p.Checksum(ctx, a.ID, 0, 1<<15) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s allocates %.1f times per call, want 0", name, n)
		}
	}
}

var benchSizes = []struct {
	name string
	size int
}{
	{"64KiB", 64 << 10},
	{"1MiB", 1 << 20},
	{"4MiB", 4 << 20},
	{"64MiB", 64 << 20},
}

// BenchmarkCopyBaseline is the plain copy() the provider's copies are
// measured against.
func BenchmarkCopyBaseline(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			src, dst := fill(s.size, 1), make([]byte, s.size)
			copy(dst, src)
			b.SetBytes(int64(s.size))
			b.ReportAllocs()
			for b.Loop() {
				copy(dst, src)
			}
		})
	}
}

func BenchmarkCopyIn(b *testing.B) {
	ctx := context.Background()
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			p := New()
			defer p.Close()
			buf, err := p.Alloc(ctx, int64(s.size), false)
			if err != nil {
				b.Fatal(err)
			}
			src := fill(s.size, 1)
			if err := p.CopyIn(ctx, buf.ID, 0, src); err != nil { // fault the pages in
				b.Fatal(err)
			}
			b.SetBytes(int64(s.size))
			b.ReportAllocs()
			for b.Loop() {
				if err := p.CopyIn(ctx, buf.ID, 0, src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGather gathers 4 KiB fragments (the devmem RX frag size) from a
// source buffer into a destination in reverse order, and one large copy.
func BenchmarkGather(b *testing.B) {
	ctx := context.Background()
	for _, s := range benchSizes {
		for _, frag := range []int{4096, s.size} {
			name := s.name + "/frag4KiB"
			if frag == s.size {
				name = s.name + "/whole"
			}
			b.Run(name, func(b *testing.B) {
				p := New()
				defer p.Close()
				src, err := p.Alloc(ctx, int64(s.size), false)
				if err != nil {
					b.Fatal(err)
				}
				dst, err := p.Alloc(ctx, int64(s.size), false)
				if err != nil {
					b.Fatal(err)
				}
				n := s.size / frag
				copies := make([]memory.Copy, n)
				for i := range copies {
					copies[i] = memory.Copy{Src: src.ID, SrcOff: int64((n - 1 - i) * frag), Dst: dst.ID, DstOff: int64(i * frag), Len: int64(frag)}
				}
				if err := p.Gather(ctx, copies); err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(s.size))
				b.ReportAllocs()
				for b.Loop() {
					if err := p.Gather(ctx, copies); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func TestPrefault(t *testing.T) {
	ctx := context.Background()
	p := New()
	defer p.Close()
	b := alloc(t, p, 16*4096)
	data := fill(5000, 9)
	if err := p.CopyIn(ctx, b.ID, 4096, data); err != nil {
		t.Fatal(err)
	}
	if err := p.Prefault(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	mem, _ := p.Bytes(b.ID)
	if !bytes.Equal(mem[4096:4096+len(data)], data) {
		t.Error("Prefault changed the buffer's bytes")
	}
	var st unix.Stat_t
	fd, _ := p.FD(b.ID)
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 < b.Size {
		t.Errorf("after Prefault the memfd holds %d bytes, want all %d", st.Blocks*512, b.Size)
	}
	if err := p.Prefault(ctx, 9999); !errors.Is(err, memory.ErrUnknownBuffer) {
		t.Errorf("Prefault of an unknown buffer: %v, want ErrUnknownBuffer", err)
	}
}

func TestAllocPrivate(t *testing.T) {
	ctx := context.Background()
	p := New()
	defer p.Close()
	fds := fdcount.Open(t)
	b, err := p.AllocPrivate(ctx, 3<<20)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size != 3<<20 || b.DmabufFD != -1 {
		t.Fatalf("AllocPrivate returned %+v", b)
	}
	if got := fdcount.Open(t); got != fds {
		t.Errorf("%d fds open after AllocPrivate, want %d: private memory has no memfd", got, fds)
	}
	if _, err := p.FD(b.ID); err == nil {
		t.Error("FD of a private buffer succeeded")
	}
	data := fill(5000, 4)
	if err := p.CopyIn(ctx, b.ID, 1<<20, data); err != nil {
		t.Fatal(err)
	}
	mem, _ := p.Bytes(b.ID)
	if !bytes.Equal(mem[1<<20:1<<20+len(data)], data) || mem[0] != 0 {
		t.Error("a private buffer does not hold what was copied in, or was not zeroed")
	}
	if err := p.Free(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := p.AllocPrivate(ctx, 0); err == nil {
		t.Error("AllocPrivate(0) succeeded")
	}
}
