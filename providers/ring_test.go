package providers

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/blockxfer/blockxfer/providers/memory"
)

// encodeSQEs lays out entries the way the host's submitters do.
func encodeSQEs(es ...sqe) []byte {
	b := make([]byte, len(es)*sqeSize)
	for i := range es {
		es[i].encode(b[i*sqeSize:])
	}
	return b
}

func TestTakeSQEs(t *testing.T) {
	gather := encodeSQEs(
		sqe{op: opGather, count: 3, tag: 7, buf: 1, off: 0, stg: 2, stgOff: 4096, n: 4096},
		sqe{op: opGatherMore, tag: 7, buf: 1, off: 4096, stg: 2, stgOff: 0, n: 4096},
		sqe{op: opGatherMore, tag: 7, buf: 1, off: 8192, stg: 2, stgOff: 8192, n: 100},
		sqe{op: opChecksum, count: 1, tag: 8, buf: 1, n: 10},
	)
	// A ring of 4 entries whose head is at 2: the batch wraps.
	ring := make([]byte, 4*sqeSize)
	for i := range 4 {
		j := (2 + i) % 4
		copy(ring[j*sqeSize:], gather[i*sqeSize:(i+1)*sqeSize])
	}
	req, used, fatal := takeSQEs(ring, 3, 2, 4, 4, nil)
	if fatal != nil || req.err != nil || used != 3 || req.op != opGather || len(req.copies) != 3 {
		t.Fatalf("gather: %+v, used %d, %v", req, used, fatal)
	}
	if c := req.copies[2]; c != (memory.Copy{Src: 1, SrcOff: 8192, Dst: 2, DstOff: 8192, Len: 100}) || req.bytes() != 8292 {
		t.Errorf("third copy %+v, bytes %d", c, req.bytes())
	}
	req, used, fatal = takeSQEs(ring, 3, 5, 1, 4, nil)
	if fatal != nil || req.err != nil || used != 1 || req.op != opChecksum || req.tag != 8 {
		t.Errorf("checksum after the batch: %+v, used %d, %v", req, used, fatal)
	}
	// A batch longer than what is published breaks the ring.
	if _, _, fatal := takeSQEs(ring, 3, 2, 2, 4, nil); !errors.Is(fatal, errBadDescriptor) {
		t.Errorf("short batch: %v, want fatal", fatal)
	}
	if _, _, fatal := takeSQEs(ring, 3, 2, 4, 2, nil); !errors.Is(fatal, errBadDescriptor) {
		t.Errorf("batch over maxBatch: %v, want fatal", fatal)
	}
	// A continuation with another tag fails the batch but uses it all.
	bad := encodeSQEs(sqe{op: opGather, count: 2, tag: 1, n: 1}, sqe{op: opGatherMore, tag: 2, n: 1})
	req, used, fatal = takeSQEs(bad, 1, 0, 2, 2, nil)
	if fatal != nil || !errors.Is(req.err, errBadDescriptor) || used != 2 {
		t.Errorf("mixed tags: err %v, used %d, fatal %v", req.err, used, fatal)
	}
	// An orphaned continuation is skipped without a completion.
	req, used, _ = takeSQEs(bad[sqeSize:], 0, 0, 1, 2, nil)
	if !req.skip || used != 1 {
		t.Errorf("orphan continuation: skip %v, used %d", req.skip, used)
	}
	// Reserved bytes must be zero.
	one := encodeSQEs(sqe{op: opCopyIn, count: 1, n: 1})
	one[60] = 1
	if req, _, _ := takeSQEs(one, 0, 0, 1, 1, nil); !errors.Is(req.err, errBadDescriptor) {
		t.Errorf("reserved bytes set: %v", req.err)
	}
	// A copy-in with checksum carries its seed there, below 2^32 only.
	sum := encodeSQEs(sqe{op: opCopyInChecksum, count: 1, tag: 3, buf: 1, off: 8, stg: 2, n: 5, seed: 0xdeadbeef})
	req, used, fatal = takeSQEs(sum, 0, 0, 1, 1, nil)
	if fatal != nil || req.err != nil || used != 1 || req.seed != 0xdeadbeef || req.n != 5 || ringOpName(req.op) != "copy-in" {
		t.Errorf("copy-in with checksum: %+v, used %d, %v", req, used, fatal)
	}
	sum[60] = 1
	if req, _, _ := takeSQEs(sum, 0, 0, 1, 1, nil); !errors.Is(req.err, errBadDescriptor) {
		t.Errorf("copy-in with checksum, seed over 32 bits: %v", req.err)
	}
}

func TestCQERoundTrip(t *testing.T) {
	var b [cqeSize]byte
	long := make([]byte, 1000)
	for i := range long {
		long[i] = 'x'
	}
	encodeCQE(b[:], 1<<40|3, ringErrBounds, 0xdeadbeef, string(long))
	c, err := decodeCQE(&b)
	if err != nil || c.tag != 1<<40|3 || c.status != ringErrBounds || c.crc != 0xdeadbeef || len(c.msg) != cqeMsgMax {
		t.Fatalf("decodeCQE = %+v, %v", c, err)
	}
	binary.LittleEndian.PutUint32(b[16:], cqeMsgMax+1)
	if _, err := decodeCQE(&b); err == nil {
		t.Error("message length past the entry accepted")
	}
	binary.LittleEndian.PutUint32(b[16:], 0)
	binary.LittleEndian.PutUint32(b[8:], ringStatusLastCode+1)
	if _, err := decodeCQE(&b); err == nil {
		t.Error("unknown status accepted")
	}
}

func TestParseRing(t *testing.T) {
	mem := make([]byte, ringSize(8, 4))
	writeRingHeader(mem, 8, 4)
	if _, err := parseRing(mem, 8, 4); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func() ([]byte, uint32, uint32){
		"not a power of two": func() ([]byte, uint32, uint32) { return mem, 6, 4 },
		"wrong size":         func() ([]byte, uint32, uint32) { return mem[:len(mem)-4096], 8, 4 },
		"header disagrees":   func() ([]byte, uint32, uint32) { m := append([]byte(nil), mem...); m[12] = 16; return m, 8, 4 },
		"bad magic":          func() ([]byte, uint32, uint32) { m := append([]byte(nil), mem...); m[0] = 'x'; return m, 8, 4 },
		"too many entries":   func() ([]byte, uint32, uint32) { return mem, 1 << 20, 4 },
	} {
		if _, err := parseRing(f()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzTakeSQEs feeds the plugin's descriptor decoder arbitrary ring
// contents (they come from another process): it must never panic, never
// use more entries than were published, and whatever it accepts must be
// well formed.
func FuzzTakeSQEs(f *testing.F) {
	f.Add(encodeSQEs(sqe{op: opCopyIn, count: 1, tag: 1, buf: 1, off: 4, stg: 1, n: 8}), uint32(0), uint32(1))
	f.Add(encodeSQEs(sqe{op: opGather, count: 2, tag: 2, n: 1}, sqe{op: opGatherMore, tag: 2, n: 1}), uint32(1), uint32(2))
	f.Add(encodeSQEs(sqe{op: opGather, count: 9, tag: 2, n: 1}, sqe{op: opGatherMore, tag: 2, n: 1}), uint32(0), uint32(2))
	f.Add(make([]byte, 3*sqeSize), uint32(2), uint32(3))
	f.Add(encodeSQEs(sqe{op: opCopyInChecksum, count: 1, tag: 3, buf: 1, stg: 1, n: 8, seed: 7}), uint32(0), uint32(1))
	f.Fuzz(func(t *testing.T, data []byte, head, avail uint32) {
		n := uint32(1)
		for n*sqeSize < uint32(min(len(data), 64*sqeSize)) {
			n <<= 1
		}
		ring := make([]byte, n*sqeSize)
		copy(ring, data)
		avail = avail%n + 1
		req, used, fatal := takeSQEs(ring, n-1, head, avail, n, nil)
		if used < 1 || used > avail {
			t.Fatalf("used %d entries of %d published", used, avail)
		}
		if fatal != nil || req.err != nil || req.skip {
			return
		}
		if req.op < opCopyIn || req.op > opCopyInChecksum || req.op == opGatherMore || req.off < 0 || req.stgOff < 0 || req.n < 0 {
			t.Fatalf("accepted %+v", req.sqe)
		}
		if req.seed != 0 && req.op != opCopyInChecksum {
			t.Fatalf("op %d with a seed", req.op)
		}
		if req.op == opGather {
			if uint32(len(req.copies)) != req.count || used != req.count {
				t.Fatalf("gather of %d copies used %d entries, count %d", len(req.copies), used, req.count)
			}
			for _, c := range req.copies {
				if c.SrcOff < 0 || c.DstOff < 0 || c.Len < 0 {
					t.Fatalf("accepted copy %+v", c)
				}
			}
		} else if used != 1 {
			t.Fatalf("op %d used %d entries", req.op, used)
		}
	})
}

// FuzzDecodeCQE feeds the host's completion decoder arbitrary entries.
func FuzzDecodeCQE(f *testing.F) {
	var b [cqeSize]byte
	encodeCQE(b[:], 5, ringErr, 0, "message")
	f.Add(b[:])
	f.Fuzz(func(t *testing.T, data []byte) {
		var e [cqeSize]byte
		copy(e[:], data)
		c, err := decodeCQE(&e)
		if err == nil && (len(c.msg) > cqeMsgMax || c.status > ringStatusLastCode) {
			t.Fatalf("accepted %+v", c)
		}
	})
}
