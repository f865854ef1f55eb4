package catalog

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"
)

// recordVersion is the first byte of every volume record this build writes.
// The decoder rejects any other value.
const recordVersion = 1

// Record layout, version 1. All integers are big-endian.
//
//	off      size  field
//	0        1     record version (1)
//	1        1     flags: bit 0 = Owned; other bits zero
//	2        8     Size (int64, > 0)
//	10       8     ExtentSize (int64)
//	18       8     Generation (uint64)
//	26       8     Created, seconds since the Unix epoch (int64)
//	34       4     Created, nanoseconds (uint32, < 1e9)
//	38       2     name length n (1..MaxNameLen)
//	40       n     name
//	40+n     2     backing length m (1..MaxBackingLen)
//	42+n     m     backing path
//	42+n+m   4     extent count k (= ceil(Size/ExtentSize), <= MaxExtents)
//	46+n+m   4k    CRC-32C of each extent
//	46+n+m+4k 4    CRC-32C of all the bytes before it
const (
	recordFixed   = 38 // bytes before the name length
	recordMin     = recordFixed + 2 + 1 + 2 + 1 + 4 + 4 + 4
	flagOwned     = 1 << 0
	flagsKnown    = flagOwned
	recordTrailer = 4
)

// encodeVolume returns the record for v. The error wraps ErrBadName or
// ErrInvalid and has no "catalog:" prefix; callers add the operation.
func encodeVolume(v *Volume) ([]byte, error) {
	if p := nameProblem(v.Name); p != "" {
		return nil, fmt.Errorf("%s: %w", p, ErrBadName)
	}
	if p := v.problem(); p != "" {
		return nil, fmt.Errorf("%s: %w", p, ErrInvalid)
	}
	n := recordFixed + 2 + len(v.Name) + 2 + len(v.Backing) + 4 + 4*len(v.CRCs) + recordTrailer
	b := make([]byte, 0, n)
	var flags byte
	if v.Owned {
		flags |= flagOwned
	}
	b = append(b, recordVersion, flags)
	b = binary.BigEndian.AppendUint64(b, uint64(v.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(v.ExtentSize))
	b = binary.BigEndian.AppendUint64(b, v.Generation)
	b = binary.BigEndian.AppendUint64(b, uint64(v.Created.Unix()))
	b = binary.BigEndian.AppendUint32(b, uint32(v.Created.Nanosecond()))
	b = binary.BigEndian.AppendUint16(b, uint16(len(v.Name)))
	b = append(b, v.Name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(v.Backing)))
	b = append(b, v.Backing...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(v.CRCs)))
	for _, c := range v.CRCs {
		b = binary.BigEndian.AppendUint32(b, c)
	}
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	return b, nil
}

// decodeVolume parses a record. It returns a non-nil volume exactly when the
// error is nil; the error wraps ErrCorrupt and has no "catalog:" prefix. A
// volume it returns encodes back to exactly b.
func decodeVolume(b []byte) (*Volume, error) {
	fail := func(format string, args ...any) (*Volume, error) {
		return nil, fmt.Errorf("volume record: %s: %w", fmt.Sprintf(format, args...), ErrCorrupt)
	}
	if len(b) < 1 {
		return fail("empty")
	}
	if b[0] != recordVersion {
		return fail("record version %d, want %d", b[0], recordVersion)
	}
	if len(b) < recordMin {
		return fail("%d bytes, shorter than the %d-byte minimum", len(b), recordMin)
	}
	body, sum := b[:len(b)-recordTrailer], binary.BigEndian.Uint32(b[len(b)-recordTrailer:])
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return fail("record checksum %#08x, computed %#08x", sum, got)
	}
	flags := body[1]
	if flags&^flagsKnown != 0 {
		return fail("unknown flags %#02x", flags)
	}
	v := &Volume{
		Owned:      flags&flagOwned != 0,
		Size:       int64(binary.BigEndian.Uint64(body[2:])),
		ExtentSize: int64(binary.BigEndian.Uint64(body[10:])),
		Generation: binary.BigEndian.Uint64(body[18:]),
	}
	sec := int64(binary.BigEndian.Uint64(body[26:]))
	nsec := binary.BigEndian.Uint32(body[34:])
	if sec < minCreatedUnix || sec > maxCreatedUnix || nsec >= 1e9 {
		return fail("created time %d.%09d out of range", sec, nsec)
	}
	v.Created = time.Unix(sec, int64(nsec)).UTC()
	r := body[recordFixed:]

	// next consumes a length-prefixed string of 1..limit bytes from r.
	next := func(limit int) (string, bool) {
		if len(r) < 2 {
			return "", false
		}
		n := int(binary.BigEndian.Uint16(r))
		if n < 1 || n > limit || len(r)-2 < n {
			return "", false
		}
		s := string(r[2 : 2+n])
		r = r[2+n:]
		return s, true
	}
	var ok bool
	if v.Name, ok = next(MaxNameLen); !ok {
		return fail("bad name length")
	}
	if p := nameProblem(v.Name); p != "" {
		return fail("name %q: %s", v.Name, p)
	}
	if v.Backing, ok = next(MaxBackingLen); !ok {
		return fail("bad backing length")
	}
	if p := checkGeometry(v.Size, v.ExtentSize); p != "" {
		return fail("%s", p)
	}
	if len(r) < 4 {
		return fail("truncated extent count")
	}
	k := binary.BigEndian.Uint32(r)
	r = r[4:]
	if want := v.Extents(); int64(k) != int64(want) {
		return fail("%d CRCs for %d extents", k, want)
	}
	if len(r) != 4*int(k) {
		return fail("%d bytes for %d CRCs", len(r), k)
	}
	v.CRCs = make([]uint32, k)
	for i := range v.CRCs {
		v.CRCs[i] = binary.BigEndian.Uint32(r[4*i:])
	}
	if p := v.problem(); p != "" {
		return fail("%s", p)
	}
	return v, nil
}
