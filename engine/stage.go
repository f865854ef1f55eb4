package engine

import (
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/blockxfer/blockxfer/catalog"
)

// Staging: the bytes of a small partial read (at most stageMax bytes) are
// read once, checked, and sent from memory. RangeCRC reads the blocks at the
// edges of a partial extent to check them against their stored CRCs; the
// bytes of the range those reads return are kept in a staging buffer. When
// they do not cover the range (whole blocks inside it contribute their
// stored CRCs unread: a block-aligned read) and it is at most copyMax
// bytes (loneInlineMax for the only read of a session that takes inline
// data), the range is read into the buffer and checked against the CRC
// RangeCRC combined from the stored ones; a larger one is sent from the
// volume file (sendfile beats a read, a checksum and a copy there). A
// staged range of at most that many bytes goes in its Extent to a client that
// takes inline data (srvSession.sendInline); otherwise the buffer is sent
// in one write on a data connection (transport.BytesSender) instead of
// from the volume file. So the range is not read a second time, the bytes sent
// are exactly the bytes checked, and, since nothing can fail
// sending memory but the connection (which ends the session), the read's
// ReadDone goes out at once, in the same write as its Extent (a read's
// terminal message may precede its bytes: docs/protocol.md 7.2).
//
// The kernel copies the bytes before the write returns, so a buffer is
// reused as soon as its send ends. An extent that goes to a data connection
// whose sender cannot send from memory is sent from the volume file, and
// its read's ReadDone waits for the send, as any other read's.
const (
	stageMax = 64 << 10 // the largest range staged
	copyMax  = 16 << 10 // the largest range read whole to stage it, or sent inline
	// loneInlineMax is copyMax for the session's only read, when its
	// client takes inline data: the whole read then costs one control
	// write on the server and no data connection or goroutine hand-off
	// on the client (32 KiB reads at depth 1: 1.5x, docs/performance.md).
	// Not read whole up to 64 KiB: sending such a read from the file
	// (sendInlineFile, for a client that offered CapInlineLarge) costs
	// the server less than reading and checking it; and clients built
	// before blockproto kept a scratch buffer for 64 KiB frames took a
	// fresh one for each, and slowed down badly.
	loneInlineMax = 32 << 10
)

// stageBuf holds the checked bytes of one staged extent.
type stageBuf = [stageMax]byte

// stagePool recycles staging buffers.
var stagePool = sync.Pool{New: func() any { return new(stageBuf) }}

// capture passes reads through to r and copies what they return of
// [lo, hi) into buf, counting the bytes kept.
type capture struct {
	r      io.ReaderAt
	buf    *stageBuf
	lo, hi int64
	got    int64
}

// fill completes the buffer once RangeCRC returned crc for [lo, hi): if
// its reads did not return every byte of the range, the range is read from
// r and checked against crc. It reports whether the buffer holds the
// range: false, and no error, for a range over limit (copyMax, or
// loneInlineMax). The error wraps
// catalog.ErrDataCorrupt when the bytes on disk are not those the stored
// CRCs describe.
func (c *capture) fill(name string, crc uint32, limit int64) (bool, error) {
	n := c.hi - c.lo
	if c.got == n {
		return true, nil
	}
	if n > limit {
		return false, nil
	}
	p := c.buf[:n]
	if _, err := c.r.ReadAt(p, c.lo); err != nil {
		return false, fmt.Errorf("volume %q: read [%d,+%d): %w", name, c.lo, n, err)
	}
	if got := crc32.Checksum(p, castagnoli); got != crc {
		return false, fmt.Errorf("volume %q: [%d,+%d): crc32c on disk %08x, from the stored block CRCs %08x: %w",
			name, c.lo, n, got, crc, catalog.ErrDataCorrupt)
	}
	c.got = n
	return true, nil
}

func (c *capture) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	if err == nil {
		if a, b := max(off, c.lo), min(off+int64(n), c.hi); a < b {
			c.got += int64(copy(c.buf[a-c.lo:], p[a-off:b-off]))
		}
	}
	return n, err
}
