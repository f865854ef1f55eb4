package providers

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/blockxfer/blockxfer/providers/memory"
)

// copyRecordSize is the size of one copy in GatherRequest.copies: five
// little-endian 64-bit integers (src, src offset, dst, dst offset, length).
const copyRecordSize = 40

// appendCopies appends the records of copies to b.
func appendCopies(b []byte, copies []memory.Copy) []byte {
	for _, c := range copies {
		b = binary.LittleEndian.AppendUint64(b, uint64(c.Src))
		b = binary.LittleEndian.AppendUint64(b, uint64(c.SrcOff))
		b = binary.LittleEndian.AppendUint64(b, uint64(c.Dst))
		b = binary.LittleEndian.AppendUint64(b, uint64(c.DstOff))
		b = binary.LittleEndian.AppendUint64(b, uint64(c.Len))
	}
	return b
}

// decodeCopies decodes the records in b, appending them to dst.
func decodeCopies(dst []memory.Copy, b []byte) ([]memory.Copy, error) {
	if len(b)%copyRecordSize != 0 {
		return dst, fmt.Errorf("providers: gather: %d bytes of copies is not a multiple of %d", len(b), copyRecordSize)
	}
	for ; len(b) >= copyRecordSize; b = b[copyRecordSize:] {
		dst = append(dst, memory.Copy{
			Src:    memory.BufferID(binary.LittleEndian.Uint64(b[0:])),
			SrcOff: int64(binary.LittleEndian.Uint64(b[8:])),
			Dst:    memory.BufferID(binary.LittleEndian.Uint64(b[16:])),
			DstOff: int64(binary.LittleEndian.Uint64(b[24:])),
			Len:    int64(binary.LittleEndian.Uint64(b[32:])),
		})
	}
	return dst, nil
}

// Pools for gather batches, so a steady stream of gathers does not churn
// the heap on either side.
var (
	recordPool = sync.Pool{New: func() any { return new([]byte) }}
	copyPool   = sync.Pool{New: func() any { return new([]memory.Copy) }}
)
