package catalog

import "sync"

// CRC-32C combination: the CRC of a concatenation A||B from crc(A), crc(B)
// and len(B), without the bytes. Appending n zero bytes to a message is a
// linear map on its (reflected) CRC register over GF(2), a 32x32 bit matrix;
// crc(A||B) = zeros(len(B)) applied to crc(A), XOR crc(B). The pre- and
// post-inversion of the standard CRC cancel out in this identity.

// gf2 is a 32x32 matrix over GF(2): column n is the image of bit n.
type gf2 [32]uint32

// times applies m to v.
func (m *gf2) times(v uint32) uint32 {
	var sum uint32
	for i := 0; v != 0; i, v = i+1, v>>1 {
		if v&1 != 0 {
			sum ^= m[i]
		}
	}
	return sum
}

// then returns the map "m, then next".
func (m *gf2) then(next *gf2) gf2 {
	var r gf2
	for n := range r {
		r[n] = next.times(m[n])
	}
	return r
}

// oneZeroByte is the operator that appends one zero byte to a CRC-32C
// register (reflected Castagnoli polynomial 0x82F63B78).
var oneZeroByte = func() gf2 {
	var bit gf2 // appends one zero bit
	bit[0] = 0x82F63B78
	for n := 1; n < 32; n++ {
		bit[n] = 1 << (n - 1)
	}
	op := bit
	for range 3 { // 1 bit -> 2 -> 4 -> 8 bits
		op = op.then(&op)
	}
	return op
}()

// zeroPows returns the operators that append 2^k zero bytes, k = 0..62,
// built once, on first use (a process that never combines CRCs, such as
// blockcat, does not pay for them at start-up): zerosOp composes them
// instead of squaring its way up on every call (a partial read combines
// CRCs once or twice, which would otherwise cost more than checksumming a
// 4 KiB block).
var zeroPows = sync.OnceValue(func() *[63]gf2 {
	var p [63]gf2
	p[0] = oneZeroByte
	for k := 1; k < len(p); k++ {
		p[k] = p[k-1].then(&p[k-1])
	}
	return &p
})

// zerosOp returns the operator that appends n zero bytes.
func zerosOp(n int64) gf2 {
	var r gf2
	for i := range r {
		r[i] = 1 << i // identity
	}
	pows := zeroPows()
	for k := 0; n > 0; k, n = k+1, n>>1 {
		if n&1 != 0 {
			r = r.then(&pows[k])
		}
	}
	return r
}

// crcCombine returns the CRC-32C of A||B given crcA, crcB and len(B).
func crcCombine(crcA, crcB uint32, lenB int64) uint32 {
	if lenB == 0 {
		return crcA
	}
	op := zerosOp(lenB)
	return op.times(crcA) ^ crcB
}

// byteTable is a gf2 operator in the form that applies fastest: the image
// of every value of each byte of the register, XORed together (the map is
// linear, so the images of the four bytes add up to the image of the
// register).
type byteTable [4][256]uint32

// table returns m as a byteTable.
func (m *gf2) table() *byteTable {
	var t byteTable
	for j := range t {
		for b := range t[j] {
			t[j][b] = m.times(uint32(b) << (8 * j))
		}
	}
	return &t
}

// times applies the operator to v.
func (t *byteTable) times(v uint32) uint32 {
	return t[0][byte(v)] ^ t[1][byte(v>>8)] ^ t[2][byte(v>>16)] ^ t[3][byte(v>>24)]
}

// blockTables returns, at k, the table that appends MinBlockSize<<k zero
// bytes: one table per block size a volume's block CRCs may have, built
// once, on first use (together with zeroPows, 2.5% of a small
// `blockcat get` when they were built at start-up), so that combining the
// CRCs of the whole blocks inside a read costs four lookups a block.
var blockTables = sync.OnceValue(func() *[5]*byteTable {
	var ts [5]*byteTable
	for k := range ts {
		op := zerosOp(MinBlockSize << k)
		ts[k] = op.table()
	}
	return &ts
})

// blockTable returns the table that appends bs zero bytes, for a valid
// block size (validBlockSize), or nil for any other size.
func blockTable(bs int64) *byteTable {
	for k, t := range blockTables() {
		if MinBlockSize<<k == bs {
			return t
		}
	}
	return nil
}
