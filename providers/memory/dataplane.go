package memory

import (
	"context"
	"errors"
)

// Prefaulter is implemented by providers that can make a buffer's memory
// resident before it is used, so that the first bytes received into it do
// not each take a page fault on the data path. A pool of reused buffers
// (providers/bufpool) prefaults each buffer once, when it allocates it.
type Prefaulter interface {
	// Prefault makes every page of the buffer resident and writable. It
	// keeps the buffer's bytes.
	Prefault(ctx context.Context, id BufferID) error
}

// PrivateAllocator is implemented by providers that can allocate buffers
// used by this process alone more cheaply than shareable ones (hostmem:
// anonymous memory in transparent huge pages instead of a memfd of small
// pages). Such a buffer has no fd to map elsewhere; it is used and freed
// like any other. A pool of destination buffers (providers/bufpool)
// prefers it.
type PrivateAllocator interface {
	// AllocPrivate allocates size bytes of zeroed memory that only this
	// process maps.
	AllocPrivate(ctx context.Context, size int64) (Buffer, error)
}

// CopyInChecksummer is implemented by providers that can checksum what a
// CopyIn placed while its bytes are still in cache, so that checking an
// extent costs no second pass over cold destination memory. The checksum
// must be computed from the destination after the copy, never from src:
// it is the proof that the bytes landed, and the engine counts an extent so
// checked as verified.
type CopyInChecksummer interface {
	// CopyInChecksum is CopyIn followed by the CRC-32C (Castagnoli) of
	// the len(src) bytes of dst at off as they are after the copy,
	// continued from crc (crc32.Update(crc, castagnoliTable, dstBytes)):
	// the checksums of consecutive chunks chain into the checksum of
	// the whole range. On error the destination may hold part of src,
	// except for an error wrapping ErrNoCopyInChecksum: then nothing was
	// copied, and the caller uses CopyIn (and Checksum) instead.
	CopyInChecksum(ctx context.Context, dst BufferID, off int64, src []byte, crc uint32) (uint32, error)
}

// ErrNoCopyInChecksum: the provider cannot checksum this copy-in (a plugin
// whose provider does not, a source outside the staging it lends); nothing
// was copied.
var ErrNoCopyInChecksum = errors.New("provider cannot checksum this copy-in")
