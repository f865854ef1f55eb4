package selftest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// Pattern fills b with the bytes of the selftest pattern at volume offset
// off. The 8-byte word at offset 8k is splitmix64(k) in little-endian
// order, so no word repeats: a byte placed at the wrong offset (a frag
// mapped to the wrong place in the destination, a stream that slipped by a
// few bytes) differs from the byte expected there, which a short repeating
// pattern such as ncdevmem's would not show for shifts by its period.
func Pattern(b []byte, off int64) {
	var w [8]byte
	for i := 0; i < len(b); {
		pos := off + int64(i)
		k := uint64(pos) / 8
		binary.LittleEndian.PutUint64(w[:], splitmix64(k))
		i += copy(b[i:], w[pos%8:])
	}
}

// splitmix64 is the output function of the SplitMix64 generator for
// state x*golden: a fixed, well-mixed 64-bit value per x.
func splitmix64(x uint64) uint64 {
	z := (x + 1) * 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// patternReader reads the first size bytes of the pattern.
type patternReader struct{ off, size int64 }

func (r *patternReader) Read(b []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), r.size-r.off))
	Pattern(b[:n], r.off)
	r.off += int64(n)
	return n, nil
}

// comparePattern checks that got holds the pattern at volume offset off; the
// error names the first byte that differs.
func comparePattern(got []byte, off int64) error {
	const chunk = 64 << 10
	want := make([]byte, min(len(got), chunk))
	for i := 0; i < len(got); i += chunk {
		n := min(chunk, len(got)-i)
		Pattern(want[:n], off+int64(i))
		if bytes.Equal(got[i:i+n], want[:n]) {
			continue
		}
		for j := 0; j < n; j++ {
			if got[i+j] != want[j] {
				return fmt.Errorf("byte at volume offset %d is %#02x, the pattern has %#02x", off+int64(i+j), got[i+j], want[j])
			}
		}
	}
	return nil
}
