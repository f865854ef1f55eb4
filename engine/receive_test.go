package engine_test

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"

	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/choose"
)

// gatherCounter is a host provider that counts Gather calls.
type gatherCounter struct {
	*hostmem.Provider
	calls atomic.Int64
}

func (g *gatherCounter) Gather(ctx context.Context, copies []memory.Copy) error {
	g.calls.Add(1)
	return g.Provider.Gather(ctx, copies)
}

// Small extents queued on a devmem connection are received together: one
// gather serves many extents, and every extent is still placed byte-exact,
// checked and reported on its own.
func TestSmallExtentsBatched(t *testing.T) {
	e := newEnv(t, envOpts{})
	const extent = 4 << 10
	want := e.volume("vol", 1<<20, extent)
	p := &gatherCounter{Provider: hostmem.New()}
	t.Cleanup(func() { p.Close() }) // after the session's cleanup
	s := e.emulatedClient(t, p, 1, false, nil)
	buf, err := p.Alloc(context.Background(), int64(len(want))+100, false)
	if err != nil {
		t.Fatal(err)
	}
	mem, _ := p.Bytes(buf.ID)
	var seen atomic.Int64
	h := s.Submit(context.Background(), []engine.Request{{Volume: "vol", Length: int64(len(want)), Dst: buf, DstOff: 100,
		OnExtent: func(engine.ExtentTiming) error { seen.Add(1); return nil }}})
	res := h[0].Result()
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	const extents = (1 << 20) / extent
	if !bytes.Equal(mem[100:], want) {
		t.Fatal("bytes differ")
	}
	if res.VerifiedExtents != extents || len(res.Extents) != extents || seen.Load() != extents {
		t.Fatalf("%d extents verified, %d recorded, %d reported, want %d each", res.VerifiedExtents, len(res.Extents), seen.Load(), extents)
	}
	// One gather per extent without batching; the server announces
	// faster than 4 KiB extents are received, so most arrive queued.
	if n := p.calls.Load(); n >= extents/2 {
		t.Errorf("%d gathers for %d extents of 4 KiB: small extents were not batched", n, extents)
	}
}

// unmappedHost is host memory that claims neither a device checksum nor a
// CPU mapping, as a device provider without one would.
type unmappedHost struct{ *hostmem.Provider }

func (u unmappedHost) Capabilities() memory.Capabilities {
	c := u.Provider.Capabilities()
	c.CPUMappable, c.DeviceChecksum = false, false
	return c
}

// Under VerifyAuto, each data connection checks what its own transport
// lets it check cheaply: in a devmem session whose provider cannot
// checksum, a small read that went over a plain connection is verified
// (its bytes passed through host memory), a large one over devmem is
// counted unverified.
func TestVerifyPerConnection(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.volume("vol", 4<<20, 64<<10)
	p := unmappedHost{hostmem.New()}
	defer p.Close()
	path, err := choose.Client(context.Background(), choose.ClientOptions{Mode: choose.Emulate, Server: e.addr,
		Provider: p, DataConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer path.Close()
	s, err := engine.Dial(context.Background(), e.addr, engine.Config{Key: testKey, Provider: p, Transport: path.Transport,
		PlainTransport: path.Plain, DataConns: 1, Verify: engine.VerifyAuto, Name: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	buf, err := p.Alloc(context.Background(), 5<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Read(context.Background(), "vol", []engine.Range{{Offset: 0, Length: 4 << 10}, {Offset: 0, Length: 4 << 20}}, buf)
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.Transport != transport.TCP || r.VerifiedExtents != 1 || r.UnverifiedExtents != 0 {
		t.Errorf("small read: %s, %d verified, %d unverified; want tcp, 1 verified", r.Transport, r.VerifiedExtents, r.UnverifiedExtents)
	}
	if r := res[1]; r.Transport != transport.DevmemEmulated || r.VerifiedExtents != 0 || r.UnverifiedExtents != 64 {
		t.Errorf("large read: %s, %d verified, %d unverified; want devmem-emulated, 64 unverified", r.Transport, r.VerifiedExtents, r.UnverifiedExtents)
	}
}
