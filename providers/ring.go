package providers

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/blockxfer/blockxfer/providers/memory"
)

// The data-plane ring: one memfd per plugin, mapped MAP_SHARED by the host
// and the plugin, holding a submission queue (SQ, host to plugin) and a
// completion queue (CQ, plugin to host). docs/providers.md ("The ring")
// describes it for plugins not written with this package.
//
// Layout (every integer little-endian; the shared words are 32-bit,
// naturally aligned, and each sits on its own 128-byte line so producer and
// consumer do not share a cache line):
//
//	0       header: magic "BXRING01", u32 version, u32 sq_entries,
//	        u32 cq_entries, u32 sqe_size (64), u32 cqe_size (256)
//	128     sq_tail   written by the host (next SQE index to fill)
//	256     sq_wait   set to 1 by the plugin before it sleeps; the host swaps
//	        it to 0 and wakes the futex on it
//	384     sq_head   written by the plugin (next SQE index to read)
//	512     cq_tail   written by the plugin
//	640     cq_wait   set to 1 by the host before it sleeps
//	768     cq_head   written by the host
//	896     state     0 while serving; ringBroken once the plugin found the
//	        host breaking the protocol
//	4096    sq_entries SQEs of 64 bytes
//	...     cq_entries CQEs of 256 bytes
//
// Indices run freely (uint32, wrapping); entry i lives at i & (entries-1).
const (
	ringVersion    = 1
	ringHeaderSize = 4096
	sqeSize        = 64
	cqeSize        = 256

	offSQTail = 128
	offSQWait = 256
	offSQHead = 384
	offCQTail = 512
	offCQWait = 640
	offCQHead = 768
	offState  = 896

	// ringBroken in the state word: the plugin stopped serving the ring.
	ringBroken = 1
	// maxRingEntries bounds either queue (a hostile size cannot make the
	// plugin map gigabytes).
	maxRingEntries = 1 << 16
)

// RingEnv names the environment variable that turns the ring off for a
// process ("off" or "0"): a host then keeps every call on gRPC, and a
// plugin does not offer the ring (as a plugin built before it). Other
// values are Go durations, how long each side spins for the next
// descriptor or completion before it sleeps on the futex (default
// DefaultRingSpin).
const RingEnv = "BLOCKXFER_PROVIDER_RING"

// DefaultRingSpin is how long a side spins before sleeping: not at all.
// On the shared 2-core machine it was measured on (docs/performance.md),
// spinning 20 µs cut an isolated call's round trip from about 20 µs to
// 4 µs but lowered gather throughput by a quarter, the spinning thread
// taking the core the other process needed; BLOCKXFER_PROVIDER_RING=20us
// turns it on where latency matters more and cores are spare.
const DefaultRingSpin = 0

// ringEnabled reports whether RingEnv leaves the ring on.
func ringEnabled() bool {
	v := os.Getenv(RingEnv)
	return v != "off" && v != "0"
}

// ringSpin returns the spin time RingEnv sets, else DefaultRingSpin.
func ringSpin() time.Duration {
	if d, err := time.ParseDuration(os.Getenv(RingEnv)); err == nil && d >= 0 {
		return d
	}
	return DefaultRingSpin
}

// ringMagic starts the ring header.
var ringMagic = [8]byte{'B', 'X', 'R', 'I', 'N', 'G', '0', '1'}

// ringTag is the side-socket tag bit of the record carrying the ring memfd:
// staging records use small ids, so the two never collide.
const ringTag = 1 << 63

// Ring defaults.
const (
	// DefaultRingEntries is the number of submission entries. A gather
	// batch takes one per copy; another operation takes one.
	DefaultRingEntries = 4096
	// ringOps is the most operations in flight (completion entries).
	ringOps = 256
)

// SQE layout (64 bytes). Operations other than gather use one entry:
//
//	0   u8  op
//	1   u8  flags (0)
//	2   u16 reserved (0)
//	4   u32 count: copies in the batch for opGather (the first entry), 0
//	        for opGatherMore, 1 for the others
//	8   u64 tag: the host's name for the operation, echoed in its CQE
//	16  u64 buffer: copy-in dst, read-back src, checksum buffer, gather src
//	24  i64 offset in that buffer
//	32  u64 staging id (copy-in, read-back) or gather dst buffer
//	40  i64 staging offset, or gather dst offset
//	48  i64 length
//	56  u64 reserved (0); for opCopyInChecksum the CRC-32C to continue
//	        from (below 2^32)
//
// A gather of n copies is n consecutive entries: opGather with count n,
// then n-1 opGatherMore entries with the same tag, each holding one copy.
// opCopyInChecksum is a copy-in whose completion carries the CRC-32C of
// the destination bytes after the copy, continued from the entry's seed
// (memory.CopyInChecksummer); a plugin whose provider cannot do it
// completes it with ringErrDescriptor before moving a byte, as a plugin
// that predates the op does.
const (
	opCopyIn         = 1
	opReadBack       = 2
	opChecksum       = 3
	opGather         = 4
	opGatherMore     = 5
	opCopyInChecksum = 6
)

// CQE layout (256 bytes):
//
//	0   u64 tag
//	8   u32 status (ringOK or an error status)
//	12  u32 crc32c (checksum result)
//	16  u32 message length (at most cqeMsgMax)
//	20  message bytes (UTF-8, the plugin's error text, truncated)
const cqeMsgMax = cqeSize - 20

// Completion statuses. They name the sentinel an error wraps, like the gRPC
// path's ErrorDetail kinds.
const (
	ringOK             = 0
	ringErr            = 1 // an error without a sentinel
	ringErrNoDmabuf    = 2
	ringErrUnknown     = 3 // memory.ErrUnknownBuffer
	ringErrBounds      = 4 // memory.ErrOutOfBounds
	ringErrUnusable    = 5
	ringErrCanceled    = 6
	ringErrDeadline    = 7
	ringErrDescriptor  = 8 // the descriptor broke the ring protocol
	ringStatusLastCode = ringErrDescriptor
)

// errBadDescriptor: an SQE the plugin cannot accept.
var errBadDescriptor = errors.New("bad ring descriptor")

// ringSize is the size of a ring memfd with the given queue sizes.
func ringSize(sqEntries, cqEntries uint32) int64 {
	n := int64(ringHeaderSize) + int64(sqEntries)*sqeSize + int64(cqEntries)*cqeSize
	return (n + 4095) &^ 4095
}

// ringWords are the shared indices of a mapped ring.
type ringWords struct {
	sqTail, sqWait, sqHead *atomic.Uint32
	cqTail, cqWait, cqHead *atomic.Uint32
	state                  *atomic.Uint32
	sq, cq                 []byte // the entry arrays
	sqMask, cqMask         uint32
}

// word returns the shared 32-bit word at off of mem (4-byte aligned: mem is
// a page-aligned mapping).
func word(mem []byte, off int) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Pointer(&mem[off]))
}

// writeRingHeader fills in a new ring's header.
func writeRingHeader(mem []byte, sqEntries, cqEntries uint32) {
	copy(mem[0:8], ringMagic[:])
	binary.LittleEndian.PutUint32(mem[8:], ringVersion)
	binary.LittleEndian.PutUint32(mem[12:], sqEntries)
	binary.LittleEndian.PutUint32(mem[16:], cqEntries)
	binary.LittleEndian.PutUint32(mem[20:], sqeSize)
	binary.LittleEndian.PutUint32(mem[24:], cqeSize)
}

// parseRing checks a mapped ring's header against what the host announced
// (AttachRing) and returns its words. mem comes from another process: every
// size is checked before it is used.
func parseRing(mem []byte, sqEntries, cqEntries uint32) (*ringWords, error) {
	pow2 := func(n uint32) bool { return n != 0 && n&(n-1) == 0 && n <= maxRingEntries }
	if !pow2(sqEntries) || !pow2(cqEntries) {
		return nil, fmt.Errorf("ring of %d submission and %d completion entries: want powers of two up to %d", sqEntries, cqEntries, maxRingEntries)
	}
	if int64(len(mem)) != ringSize(sqEntries, cqEntries) {
		return nil, fmt.Errorf("ring of %d bytes, want %d for %d+%d entries", len(mem), ringSize(sqEntries, cqEntries), sqEntries, cqEntries)
	}
	if [8]byte(mem[0:8]) != ringMagic {
		return nil, fmt.Errorf("ring magic %q, want %q", mem[0:8], ringMagic[:])
	}
	h := func(off int) uint32 { return binary.LittleEndian.Uint32(mem[off:]) }
	if v := h(8); v != ringVersion {
		return nil, fmt.Errorf("ring version %d, this side speaks %d", v, ringVersion)
	}
	if h(12) != sqEntries || h(16) != cqEntries || h(20) != sqeSize || h(24) != cqeSize {
		return nil, fmt.Errorf("ring header says %d/%d entries of %d/%d bytes, AttachRing said %d/%d of %d/%d",
			h(12), h(16), h(20), h(24), sqEntries, cqEntries, sqeSize, cqeSize)
	}
	return ringWordsOf(mem, sqEntries, cqEntries), nil
}

// ringWordsOf returns the words of a ring whose size has been checked.
func ringWordsOf(mem []byte, sqEntries, cqEntries uint32) *ringWords {
	sqEnd := ringHeaderSize + int(sqEntries)*sqeSize
	return &ringWords{
		sqTail: word(mem, offSQTail), sqWait: word(mem, offSQWait), sqHead: word(mem, offSQHead),
		cqTail: word(mem, offCQTail), cqWait: word(mem, offCQWait), cqHead: word(mem, offCQHead),
		state: word(mem, offState),
		sq:    mem[ringHeaderSize:sqEnd:sqEnd], cq: mem[sqEnd : sqEnd+int(cqEntries)*cqeSize],
		sqMask: sqEntries - 1, cqMask: cqEntries - 1,
	}
}

// sqe is one decoded submission entry.
type sqe struct {
	op     uint8
	count  uint32
	tag    uint64
	buf    uint64
	off    int64
	stg    uint64
	stgOff int64
	n      int64
	seed   uint32 // opCopyInChecksum: the CRC-32C to continue from
}

// encode writes e into b (sqeSize bytes).
func (e *sqe) encode(b []byte) {
	_ = b[sqeSize-1]
	binary.LittleEndian.PutUint32(b[0:], uint32(e.op)) // op, flags and reserved zero
	binary.LittleEndian.PutUint32(b[4:], e.count)
	binary.LittleEndian.PutUint64(b[8:], e.tag)
	binary.LittleEndian.PutUint64(b[16:], e.buf)
	binary.LittleEndian.PutUint64(b[24:], uint64(e.off))
	binary.LittleEndian.PutUint64(b[32:], e.stg)
	binary.LittleEndian.PutUint64(b[40:], uint64(e.stgOff))
	binary.LittleEndian.PutUint64(b[48:], uint64(e.n))
	binary.LittleEndian.PutUint64(b[56:], uint64(e.seed))
}

// decodeSQE decodes one entry (sqeSize bytes of the ring) and checks what
// can be checked without the plugin's state: known op, zero flags and
// reserved fields, count consistent with the op, no negative offset or
// length. It reads every byte of b once, into the returned value, which
// alone is then looked at: the host may be writing b meanwhile.
func decodeSQE(b []byte) (sqe, error) {
	_ = b[sqeSize-1]
	head := binary.LittleEndian.Uint32(b[0:])
	e := sqe{
		op:     uint8(head),
		count:  binary.LittleEndian.Uint32(b[4:]),
		tag:    binary.LittleEndian.Uint64(b[8:]),
		buf:    binary.LittleEndian.Uint64(b[16:]),
		off:    int64(binary.LittleEndian.Uint64(b[24:])),
		stg:    binary.LittleEndian.Uint64(b[32:]),
		stgOff: int64(binary.LittleEndian.Uint64(b[40:])),
		n:      int64(binary.LittleEndian.Uint64(b[48:])),
	}
	reserved := binary.LittleEndian.Uint64(b[56:])
	if e.op == opCopyInChecksum && reserved>>32 == 0 {
		e.seed, reserved = uint32(reserved), 0
	}
	switch {
	case head>>8 != 0 || reserved != 0:
		return e, fmt.Errorf("%w: flags or reserved bytes set", errBadDescriptor)
	case e.op < opCopyIn || e.op > opCopyInChecksum:
		return e, fmt.Errorf("%w: op %d", errBadDescriptor, e.op)
	case e.op == opGather && e.count == 0,
		e.op == opGatherMore && e.count != 0,
		e.op != opGather && e.op != opGatherMore && e.count != 1:
		return e, fmt.Errorf("%w: op %d with count %d", errBadDescriptor, e.op, e.count)
	case e.off < 0 || e.stgOff < 0 || e.n < 0:
		return e, fmt.Errorf("%w: negative offset or length (%d, %d, %d)", errBadDescriptor, e.off, e.stgOff, e.n)
	}
	return e, nil
}

// ringReq is one operation the plugin took off the ring.
type ringReq struct {
	sqe
	copies []memory.Copy // opGather
	stage  []byte        // the staging bytes of a copy-in or read-back, once checked
	err    error         // the descriptor was refused: complete with it
	skip   bool          // an orphaned gather continuation: no completion
}

// ringOpName names an op in errors, as the gRPC path does.
func ringOpName(op uint8) string {
	switch op {
	case opCopyIn, opCopyInChecksum:
		return "copy-in"
	case opReadBack:
		return "read-back"
	case opChecksum:
		return "checksum"
	case opGather, opGatherMore:
		return "gather"
	}
	return fmt.Sprintf("op %d", op)
}

// bytes is how many bytes the operation moves or reads.
func (r *ringReq) bytes() int64 {
	if r.op != opGather {
		return r.n
	}
	var n int64
	for _, c := range r.copies {
		n += c.Len
	}
	return n
}

// takeSQEs decodes the operation at head of sq (entries of sqeSize bytes,
// mask+1 of them), of which avail are published, appending a gather's
// copies to copies[:0]. It returns the request and how many entries it
// used (at least 1). A descriptor it refuses comes back with req.err set,
// to be completed with that error; a gather continuation with no gather
// before it comes back with req.skip set, to be dropped; fatal is set when the host broke the
// ring itself (a batch longer than what it published, or than maxBatch):
// the ring cannot be read further. Each entry is copied out of the shared
// memory once, before it is looked at, so the host cannot change it
// between check and use.
func takeSQEs(sq []byte, mask, head, avail, maxBatch uint32, copies []memory.Copy) (req ringReq, used uint32, fatal error) {
	at := func(i uint32) []byte {
		j := int((head+i)&mask) * sqeSize
		return sq[j : j+sqeSize : j+sqeSize]
	}
	e, err := decodeSQE(at(0))
	req.sqe = e
	req.copies = copies[:0]
	if e.op == opGatherMore {
		// The rest of a batch whose first entry was refused (and
		// completed): skipped without a completion of its own.
		req.skip = true
		return req, 1, nil
	}
	if err != nil {
		req.err = err
		return req, 1, nil
	}
	if e.op != opGather {
		return req, 1, nil
	}
	if e.count > avail || e.count > maxBatch {
		return req, 1, fmt.Errorf("%w: gather of %d copies with %d entries published (at most %d per batch)", errBadDescriptor, e.count, avail, maxBatch)
	}
	req.copies = slices.Grow(req.copies, int(e.count))
	req.copies = append(req.copies, memory.Copy{Src: memory.BufferID(e.buf), SrcOff: e.off, Dst: memory.BufferID(e.stg), DstOff: e.stgOff, Len: e.n})
	for i := uint32(1); i < e.count; i++ {
		c, err := decodeSQE(at(i))
		if err == nil && (c.op != opGatherMore || c.tag != e.tag) {
			err = fmt.Errorf("%w: entry %d of gather %d is op %d tag %d", errBadDescriptor, i, e.tag, c.op, c.tag)
		}
		if err != nil && req.err == nil {
			req.err = err
		}
		req.copies = append(req.copies, memory.Copy{Src: memory.BufferID(c.buf), SrcOff: c.off, Dst: memory.BufferID(c.stg), DstOff: c.stgOff, Len: c.n})
	}
	return req, e.count, nil
}

// ringStatus converts a provider error into a completion status.
func ringStatus(err error) uint32 {
	switch {
	case err == nil:
		return ringOK
	case errors.Is(err, errBadDescriptor):
		return ringErrDescriptor
	case errors.Is(err, memory.ErrUnknownBuffer):
		return ringErrUnknown
	case errors.Is(err, memory.ErrOutOfBounds):
		return ringErrBounds
	case errors.Is(err, memory.ErrNoDmabuf):
		return ringErrNoDmabuf
	case errors.Is(err, ErrUnusable):
		return ringErrUnusable
	case errors.Is(err, context.Canceled):
		return ringErrCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return ringErrDeadline
	}
	return ringErr
}

// encodeCQE writes a completion into b (cqeSize bytes).
func encodeCQE(b []byte, tag uint64, status, crc uint32, msg string) {
	_ = b[cqeSize-1]
	binary.LittleEndian.PutUint64(b[0:], tag)
	binary.LittleEndian.PutUint32(b[8:], status)
	binary.LittleEndian.PutUint32(b[12:], crc)
	n := copy(b[20:], msg)
	binary.LittleEndian.PutUint32(b[16:], uint32(n))
}

// cqe is one decoded completion.
type cqe struct {
	tag    uint64
	status uint32
	crc    uint32
	msg    string
}

// decodeCQE decodes a completion copied out of the ring. The host checks
// its tag against the operations in flight.
func decodeCQE(b *[cqeSize]byte) (cqe, error) {
	c := cqe{
		tag:    binary.LittleEndian.Uint64(b[0:]),
		status: binary.LittleEndian.Uint32(b[8:]),
		crc:    binary.LittleEndian.Uint32(b[12:]),
	}
	n := binary.LittleEndian.Uint32(b[16:])
	if n > cqeMsgMax {
		return c, fmt.Errorf("completion message of %d bytes, at most %d", n, cqeMsgMax)
	}
	if c.status > ringStatusLastCode {
		return c, fmt.Errorf("completion status %d unknown", c.status)
	}
	if c.status != ringOK {
		c.msg = string(b[20 : 20+n])
	}
	return c, nil
}
