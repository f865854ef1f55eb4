package engine_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// countingTransport is tcp.Transport counting how its senders send: from a
// file (SendExtent), from memory (SendBytes), or from a file inline on the
// control connection (SendExtentAfter). With fileOnly its senders cannot
// send from memory or inline.
type countingTransport struct {
	tcp.Transport
	fileOnly             bool
	files, bytes, inline atomic.Int64
}

func (t *countingTransport) NewSender(c net.Conn) (transport.Sender, error) {
	s, err := t.Transport.NewSender(c)
	if err != nil {
		return nil, err
	}
	cs := &countingSender{s, t}
	if t.fileOnly {
		return struct{ transport.Sender }{cs}, nil
	}
	return cs, nil
}

type countingSender struct {
	transport.Sender
	t *countingTransport
}

func (s *countingSender) SendExtent(f *os.File, off, n int64) error {
	s.t.files.Add(1)
	return s.Sender.SendExtent(f, off, n)
}

func (s *countingSender) SendExtentAfter(hdr []byte, f *os.File, off, n int64) error {
	s.t.inline.Add(1)
	return s.Sender.(transport.HeaderSender).SendExtentAfter(hdr, f, off, n)
}

func (s *countingSender) SendBytes(p []byte) error {
	s.t.bytes.Add(1)
	return s.Sender.(transport.BytesSender).SendBytes(p)
}

// smallReads are reads of at most 64 KiB inside one 64 KiB extent and one
// 64 KiB block: block aligned or not, for blocks of 4 KiB and of 64 KiB.
// All are staged with 64 KiB blocks; with 4 KiB blocks, the ones over
// 16 KiB (engine's copyMax) made of whole blocks are sent from the volume
// file instead.
var smallReads = []engine.Range{
	{Offset: 4 << 10, Length: 4 << 10},             // one 4 KiB block
	{Offset: 64<<10 + 100, Length: 4 << 10},        // across two 4 KiB blocks
	{Offset: 128<<10 + 4<<10, Length: 40 << 10},    // 4 KiB blocks, aligned
	{Offset: 192<<10 + 1000, Length: 60<<10 - 999}, // edges and whole 4 KiB blocks
	{Offset: 256<<10 + 8<<10, Length: 12 << 10},    // three whole 4 KiB blocks
	{Offset: 320 << 10, Length: 24 << 10},          // six whole 4 KiB blocks: over copyMax, a lone read
}

// TestSmallReadsSentFromMemory: small partial reads are read, checked and
// sent from memory, for blocks of 4 KiB (where a block-aligned read of at
// most 16 KiB is read and checked whole, 32 KiB for a session's only read
// when its client takes inline data) and 64 KiB: in their Extent to a
// client that takes inline data (every read here, each the session's only
// one; those not staged come from the volume file inline,
// TestLoneReadInlineFromFile), else on a data connection whose sender can
// (SendBytes), else from the volume file. The bytes are right and checked
// every way.
func TestSmallReadsSentFromMemory(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		inline, fileOnly         bool
		inlined, inMemory, files int64
	}{
		{"inline", true, false, 12, 0, 0},
		{"bytes", false, false, 0, 9, 3},
		{"file", false, true, 0, 0, 12},
	} {
		t.Run(tc.name, func(t *testing.T) { // each env ends, and is checked for leaks, before the next
			ct := &countingTransport{fileOnly: tc.fileOnly}
			e := newEnv(t, envOpts{transport: ct})
			vols := map[string][]byte{}
			for name, bs := range map[string]int64{"v64": 64 << 10, "v4": 4 << 10} {
				v, err := e.store.Create(context.Background(), name, 1<<20, 64<<10, catalog.FillRandom, catalog.WithBlockSize(bs))
				if err != nil {
					t.Fatal(err)
				}
				if vols[name], err = os.ReadFile(v.Backing); err != nil {
					t.Fatal(err)
				}
			}
			c := e.client(func(c *engine.Config) {
				if !tc.inline {
					engine.WithoutInline(c)
				}
			})
			var inlined int64
			for name, want := range vols {
				for _, r := range smallReads {
					buf, mem := c.alloc(t, r.Length)
					res, err := c.Read(context.Background(), name, []engine.Range{r}, buf)
					if err != nil {
						t.Fatalf("%s: %s %+v: %v", tc.name, name, r, err)
					}
					if !bytes.Equal(mem, want[r.Offset:r.Offset+r.Length]) {
						t.Fatalf("%s: %s %+v: bytes differ", tc.name, name, r)
					}
					inline := tc.inline // every read here is the session's only one, of at most 64 KiB
					if x := res[0].Extents; res[0].VerifiedExtents != 1 || len(x) != 1 || (x[0].DataConn == -1) != inline || x[0].Transport != "tcp" {
						t.Fatalf("%s: %s %+v: %d verified, extents %+v; want one verified, inline %v", tc.name, name, r, res[0].VerifiedExtents, x, inline)
					}
					if inline {
						inlined++
					}
				}
			}
			if inlined != tc.inlined || ct.bytes.Load() != tc.inMemory || ct.files.Load() != tc.files {
				t.Errorf("%s: %d extents inline, %d sent from memory, %d from files; want %d, %d, %d",
					tc.name, inlined, ct.bytes.Load(), ct.files.Load(), tc.inlined, tc.inMemory, tc.files)
			}
		})
	}
}

// TestSmallAlignedReadOfCorruptBlock: a read of whole 4 KiB blocks takes
// their CRCs from the catalog; the server still checks the bytes it sends
// from memory against them, so corrupt bytes are refused even for a client
// that does not verify.
func TestSmallAlignedReadOfCorruptBlock(t *testing.T) {
	e := newEnv(t, envOpts{})
	want := e.corruptVolume("v", 4<<10, 300<<10+5) // block [300K, 304K)
	c := e.client(func(c *engine.Config) { c.Verify = engine.VerifyOff })
	// The last is over copyMax, checked whole because it is the
	// session's only read.
	for _, r := range []engine.Range{{Offset: 300 << 10, Length: 4 << 10}, {Offset: 296 << 10, Length: 16 << 10}, {Offset: 296 << 10, Length: 24 << 10}} {
		buf, _ := c.alloc(t, r.Length)
		_, err := c.Read(context.Background(), "v", []engine.Range{r}, buf)
		var pe *blockproto.Error
		if !errors.As(err, &pe) || pe.Code != blockproto.CodeCorrupt || !strings.Contains(err.Error(), "from the stored block CRCs") {
			t.Fatalf("aligned read %+v over a corrupt block: %v, want a corrupt error", r, err)
		}
	}
	// The blocks beside it are intact.
	r := engine.Range{Offset: 304 << 10, Length: 8 << 10}
	buf, mem := c.alloc(t, r.Length)
	if _, err := c.Read(context.Background(), "v", []engine.Range{r}, buf); err != nil || !bytes.Equal(mem, want[r.Offset:r.Offset+r.Length]) {
		t.Fatalf("intact blocks: %v (bytes equal %v)", err, bytes.Equal(mem, want[r.Offset:r.Offset+r.Length]))
	}
}
