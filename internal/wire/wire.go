// Package wire decodes the bounded big-endian encodings used by blockproto
// frames and erasure-coding manifests: fixed-size integers, byte arrays and
// u16-length-prefixed strings, checking every length before it is used.
package wire

import (
	"encoding/binary"
	"fmt"
)

// Decoder reads fields from a byte slice. The first failure is kept and
// every later read returns a zero value, so a decode can run to its end and
// check Err once.
type Decoder struct {
	b    []byte
	err  error
	fail func(detail string) error
}

// NewDecoder returns a decoder over b. fail turns a problem ("truncated at
// Read.Offset") into the caller's error, typically wrapping its sentinel.
func NewDecoder(b []byte, fail func(detail string) error) *Decoder {
	return &Decoder{b: b, fail: fail}
}

// Err returns the first failure, or nil.
func (d *Decoder) Err() error { return d.err }

// Len returns the bytes not yet read.
func (d *Decoder) Len() int { return len(d.b) }

// Failf records a failure found by the caller, unless one is recorded.
func (d *Decoder) Failf(format string, args ...any) {
	if d.err == nil {
		d.err = d.fail(fmt.Sprintf(format, args...))
	}
}

// Need reports whether n more bytes are available, recording a truncation
// naming field if not.
func (d *Decoder) Need(n int, field string) bool {
	if d.err != nil {
		return false
	}
	if n < 0 || len(d.b) < n {
		d.err = d.fail("truncated at " + field)
		return false
	}
	return true
}

// U8 reads one byte.
func (d *Decoder) U8(field string) uint8 {
	if !d.Need(1, field) {
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// U16 reads a big-endian uint16.
func (d *Decoder) U16(field string) uint16 {
	if !d.Need(2, field) {
		return 0
	}
	v := binary.BigEndian.Uint16(d.b)
	d.b = d.b[2:]
	return v
}

// U32 reads a big-endian uint32.
func (d *Decoder) U32(field string) uint32 {
	if !d.Need(4, field) {
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

// U64 reads a big-endian uint64.
func (d *Decoder) U64(field string) uint64 {
	if !d.Need(8, field) {
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

// Bytes returns the next n bytes without copying them: the slice aliases
// the decoder's input.
func (d *Decoder) Bytes(n int, field string) []byte {
	if !d.Need(n, field) {
		return nil
	}
	b := d.b[:n:n]
	d.b = d.b[n:]
	return b
}

// Array fills dst from the next len(dst) bytes.
func (d *Decoder) Array(dst []byte, field string) {
	if d.Need(len(dst), field) {
		d.b = d.b[copy(dst, d.b):]
	}
}

// String reads a u16-length-prefixed string of at most max bytes, checking
// the length before copying.
func (d *Decoder) String(field string, max int) string {
	n := int(d.U16(field))
	if d.err != nil {
		return ""
	}
	if n > max {
		d.err = d.fail(fmt.Sprintf("%s is %d bytes, more than %d", field, n, max))
		return ""
	}
	if !d.Need(n, field) {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
