package catalog

import (
	"fmt"
	"hash/crc32"
	"io"
	"sync"
)

// rangeBufs lends the buffers RangeCRC reads extents through.
var rangeBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// RangeCRC returns the CRC-32C of the n bytes at off, a range inside one
// extent, as they were written, never merely as they are on disk now.
//
// For a whole extent it is the stored extent CRC and r is not read. For part
// of an extent, with the volume's block CRCs b (from [Catalog.Blocks]), it
// combines the stored CRCs of the blocks inside the range and reads from r
// (the backing file) only the one or two blocks at its edges, checked
// against their stored CRCs; without b it reads the whole extent, checked
// against the extent CRC. Either way bytes that no longer match what was
// written give an error wrapping [ErrDataCorrupt], so corruption on disk
// fails the read instead of being announced with a CRC that matches it. A
// range that is not inside one extent wraps [ErrInvalid].
func (v *Volume) RangeCRC(r io.ReaderAt, off, n int64, b *Blocks) (uint32, error) {
	if off < 0 || n <= 0 || off >= v.Size || n > v.Size-off {
		return 0, fmt.Errorf("catalog: volume %q: range [%d,+%d) outside the volume: %w", v.Name, off, n, ErrInvalid)
	}
	i := int(off / v.ExtentSize)
	extOff, extLen := v.ExtentRange(i)
	if off+n > extOff+extLen {
		return 0, fmt.Errorf("catalog: volume %q: range [%d,+%d) crosses extent %d: %w", v.Name, off, n, i, ErrInvalid)
	}
	if off == extOff && n == extLen {
		return v.CRCs[i], nil
	}
	if b != nil && v.blocksFit(b) == "" {
		return v.rangeCRCBlocks(r, off, n, b)
	}
	bp := rangeBufs.Get().(*[]byte)
	defer rangeBufs.Put(bp)
	buf := *bp
	var whole, part uint32
	for pos := extOff; pos < extOff+extLen; {
		k := min(int64(len(buf)), extOff+extLen-pos)
		if _, err := r.ReadAt(buf[:k], pos); err != nil {
			return 0, fmt.Errorf("catalog: volume %q: read extent %d at byte %d: %w", v.Name, i, pos, err)
		}
		whole = crc32.Update(whole, castagnoli, buf[:k])
		// The part of this chunk that lies inside [off, off+n).
		lo, hi := max(pos, off), min(pos+k, off+n)
		if lo < hi {
			part = crc32.Update(part, castagnoli, buf[lo-pos:hi-pos])
		}
		pos += k
	}
	if whole != v.CRCs[i] {
		return 0, fmt.Errorf("catalog: volume %q: extent %d [%d,+%d): crc32c on disk %08x, stored %08x: %w",
			v.Name, i, extOff, extLen, whole, v.CRCs[i], ErrDataCorrupt)
	}
	return part, nil
}
