package engine_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/engine"
)

// loneReads are lone reads of at most 64 KiB of a volume of 64 KiB extents
// and 4 KiB block CRCs, none of which blockd stages whole: a whole extent,
// 40 KiB of whole blocks (over the 32 KiB a lone read is read and checked
// whole), and 60 KiB with edges in blocks (read and checked) and whole
// blocks between them; then a read of two extents, too long to go inline.
var loneReads = []struct {
	r      engine.Range
	inline bool // with CapInlineLarge
}{
	{engine.Range{Offset: 192 << 10, Length: 64 << 10}, true},
	{engine.Range{Offset: 128<<10 + 4<<10, Length: 40 << 10}, true},
	{engine.Range{Offset: 320<<10 + 1000, Length: 60 << 10}, true},
	{engine.Range{Offset: 512 << 10, Length: 128 << 10}, false},
}

// TestLoneReadInlineFromFile: a session's only read of at most
// MaxInlineData bytes comes whole in its Extent, sent from the volume file
// on the control connection, to a client that offered CapInlineLarge;
// without it, or over that size, on data connections. The bytes are right
// and checked either way.
func TestLoneReadInlineFromFile(t *testing.T) {
	for _, large := range []bool{true, false} {
		t.Run(map[bool]string{true: "large", false: "old"}[large], func(t *testing.T) { testLoneReads(t, large) })
	}
}

func testLoneReads(t *testing.T, large bool) {
	{
		ct := &countingTransport{}
		e := newEnv(t, envOpts{transport: ct})
		v, err := e.store.Create(context.Background(), "v", 1<<20, 64<<10, catalog.FillRandom, catalog.WithBlockSize(4<<10))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(v.Backing)
		if err != nil {
			t.Fatal(err)
		}
		c := e.client(func(c *engine.Config) {
			if !large {
				engine.WithoutInlineLarge(c)
			}
		})
		var files, inlined int64
		for _, lr := range loneReads {
			r := lr.r
			buf, mem := c.alloc(t, r.Length)
			res, err := c.Read(context.Background(), "v", []engine.Range{r}, buf)
			if err != nil {
				t.Fatalf("large %v: %+v: %v", large, r, err)
			}
			if !bytes.Equal(mem, want[r.Offset:r.Offset+r.Length]) {
				t.Fatalf("large %v: %+v: bytes differ", large, r)
			}
			inline := large && lr.inline
			for _, x := range res[0].Extents {
				if (x.DataConn == -1) != inline || !x.Verified {
					t.Fatalf("large %v: %+v: extent %+v, want inline %v and verified", large, r, x, inline)
				}
				if inline {
					inlined++
				} else {
					files++
				}
			}
		}
		// None is staged: the inline ones came from the file too.
		if ct.files.Load() != files || ct.bytes.Load() != 0 || ct.inline.Load() != inlined {
			t.Errorf("large %v: %d extents sent from files, %d from memory, %d from files inline; want %d, 0, %d",
				large, ct.files.Load(), ct.bytes.Load(), ct.inline.Load(), files, inlined)
		}
	}
}

// TestLoneInlineReadOfCorruptBlock: blockd sends a lone read's whole
// blocks from the file unread, under the CRC combined from the stored
// block CRCs, so a corrupt byte among them is caught by the client's
// check, as on a data connection; the session carries on.
func TestLoneInlineReadOfCorruptBlock(t *testing.T) {
	e := newEnv(t, envOpts{})
	want := e.corruptVolume("v", 4<<10, 300<<10+5) // extent [256K, 320K)
	c := e.client(nil)
	r := engine.Range{Offset: 256 << 10, Length: 64 << 10}
	buf, mem := c.alloc(t, r.Length)
	if _, err := c.Read(context.Background(), "v", []engine.Range{r}, buf); !errors.Is(err, engine.ErrChecksum) {
		t.Fatalf("lone read of a corrupt extent: %v, want ErrChecksum", err)
	}
	r.Offset = 320 << 10
	res, err := c.Read(context.Background(), "v", []engine.Range{r}, buf)
	if err != nil || !bytes.Equal(mem, want[r.Offset:r.Offset+r.Length]) || res[0].Extents[0].DataConn != -1 {
		t.Fatalf("the next extent: %v (bytes equal %v), extents %+v; want it inline and right", err, bytes.Equal(mem, want[r.Offset:r.Offset+r.Length]), res)
	}
}

// TestLoneInlineReadOfShortFile: when the volume file ends inside a lone
// read sent inline from it, blockd pads the frame with zeros, so the
// control stream stays whole, and ends the read with an I/O error, which
// fails it even for a client that does not verify (the zeros would pass
// there; a client that does may refuse them first); the session carries
// on.
func TestLoneInlineReadOfShortFile(t *testing.T) {
	e := newEnv(t, envOpts{})
	want := e.volume("v", 1<<20, 64<<10)
	v, _ := e.store.Catalog().Get("v")
	// A first read opens the volume; blockd keeps the file open.
	c := e.client(nil)
	buf, _ := c.alloc(t, 64<<10)
	if _, err := c.Read(context.Background(), "v", []engine.Range{{Offset: 0, Length: 64 << 10}}, buf); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(v.Backing, 1<<20-32<<10); err != nil {
		t.Fatal(err)
	}
	for _, verify := range []engine.VerifyMode{engine.VerifyRequire, engine.VerifyOff} {
		c := e.client(func(c *engine.Config) { c.Verify = verify })
		r := engine.Range{Offset: 1<<20 - 64<<10, Length: 64 << 10}
		buf, mem := c.alloc(t, r.Length)
		_, err := c.Read(context.Background(), "v", []engine.Range{r}, buf)
		// A verifying client may see the zeros fail its check first.
		var pe *blockproto.Error
		ioErr := errors.As(err, &pe) && pe.Code == blockproto.CodeIO
		if !ioErr && (verify == engine.VerifyOff || !errors.Is(err, engine.ErrChecksum)) {
			t.Fatalf("verify %v: read past the end of the file: %v, want an I/O error", verify, err)
		}
		r.Offset = 0
		if _, err := c.Read(context.Background(), "v", []engine.Range{r}, buf); err != nil || !bytes.Equal(mem, want[:r.Length]) {
			t.Fatalf("verify %v: then extent 0: %v (bytes equal %v)", verify, err, bytes.Equal(mem, want[:r.Length]))
		}
	}
}
