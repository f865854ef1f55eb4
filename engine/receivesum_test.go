package engine_test

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"sync/atomic"
	"testing"

	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// lending is host memory standing in for a plugin: not mapped here, it
// lends staging and checksums copy-ins (memory.CopyInChecksummer), so the
// TCP receiver is an engine.ChecksumReceiver. With refuse it answers
// memory.ErrNoCopyInChecksum; with flip it lands a wrong byte (a device
// that corrupted the copy) and checksums what landed.
type lending struct {
	*hostmem.Provider
	refuse, flip    bool
	sums, checksums atomic.Int64
	flipped         atomic.Bool
}

func (p *lending) Capabilities() memory.Capabilities {
	c := p.Provider.Capabilities()
	c.CPUMappable = false
	return c
}

func (p *lending) Stage(context.Context) ([]byte, func(), error) {
	return make([]byte, 256<<10), func() {}, nil
}

func (p *lending) Checksum(ctx context.Context, buf memory.BufferID, off, n int64) (uint32, error) {
	p.checksums.Add(1)
	return p.Provider.Checksum(ctx, buf, off, n)
}

func (p *lending) CopyInChecksum(ctx context.Context, dst memory.BufferID, off int64, src []byte, crc uint32) (uint32, error) {
	if p.refuse {
		return 0, memory.ErrNoCopyInChecksum
	}
	p.sums.Add(1)
	if err := p.CopyIn(ctx, dst, off, src); err != nil {
		return 0, err
	}
	mem, _ := p.Bytes(dst)
	landed := mem[off : off+int64(len(src))]
	if p.flip && p.flipped.CompareAndSwap(false, true) {
		landed[0] ^= 1
	}
	return crc32.Update(crc, crc32.MakeTable(crc32.Castagnoli), landed), nil
}

// TestChecksumReceiverVerifies checks that extents received through a
// ChecksumReceiver are verified by the checksum the provider computed as
// they landed, without a Checksum call, that a byte that landed wrong is
// caught by it, and that a provider that cannot checksum copy-ins gets the
// Checksum after the extent landed.
func TestChecksumReceiverVerifies(t *testing.T) {
	e := newEnv(t, envOpts{})
	want := e.volume("vol", 1<<20, 64<<10)
	for _, tc := range []struct {
		name         string
		refuse, flip bool
	}{{"summed", false, false}, {"refused", true, false}, {"landed wrong", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			var p *lending
			c := e.client(func(cfg *engine.Config) {
				p = &lending{Provider: cfg.Provider.(*hostmem.Provider), refuse: tc.refuse, flip: tc.flip}
				cfg.Provider = p
			})
			buf, mem := c.alloc(t, int64(len(want)))
			res, err := c.Read(context.Background(), "vol", []engine.Range{{0, int64(len(want))}}, buf)
			if tc.flip {
				if !errors.Is(err, engine.ErrChecksum) {
					t.Fatalf("a byte landed wrong: %v, want ErrChecksum", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(mem, want) {
				t.Fatal("bytes differ")
			}
			if r := res[0]; r.VerifiedExtents != 16 || r.UnverifiedExtents != 0 {
				t.Errorf("%d extents verified, %d not, want 16 and 0", r.VerifiedExtents, r.UnverifiedExtents)
			}
			if tc.refuse {
				if p.checksums.Load() != 16 {
					t.Errorf("%d Checksum calls, want one per extent (16)", p.checksums.Load())
				}
			} else if p.checksums.Load() != 0 || p.sums.Load() < 16 {
				t.Errorf("%d Checksum calls and %d checksummed copy-ins, want 0 and at least 16", p.checksums.Load(), p.sums.Load())
			}
		})
	}
}
