package catalog

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"

	bolt "go.etcd.io/bbolt"
)

// MaxBlockSize is the largest block a volume's block CRCs cover.
const MaxBlockSize = 64 << 10

// MinBlockSize is the smallest block size WithBlockSize accepts.
const MinBlockSize = 4 << 10

// maxDefaultBlocks is the most blocks BlockSizeFor gives a volume of up to
// maxDefaultBlocks × MaxBlockSize bytes (16 GiB): 1 MiB of block CRCs, as
// many as such a volume has in blocks of MaxBlockSize, so no volume holds
// more of them in memory than it would with MaxBlockSize blocks throughout.
const maxDefaultBlocks = 1 << 18

// BlockSizeFor returns the default block size of a volume of size bytes
// with extents of extentSize: the smallest power of two from MinBlockSize
// that keeps the volume within maxDefaultBlocks blocks, up to MaxBlockSize,
// and lowered until it divides extentSize, so blocks never straddle
// extents. So a volume of up to 1 GiB has 4 KiB blocks (a 4 KiB read of it
// reads and checksums 4 KiB to be checked), one of 16 GiB or more 64 KiB
// blocks, and none up to 16 GiB more than 1 MiB of block CRCs. A volume may
// have other blocks (see WithBlockSize); its Blocks record the size.
func BlockSizeFor(size, extentSize int64) int64 {
	bs := int64(MinBlockSize)
	for bs < MaxBlockSize && (size+bs-1)/bs > maxDefaultBlocks {
		bs <<= 1
	}
	for bs > 1 && extentSize%bs != 0 {
		bs >>= 1
	}
	return bs
}

// Blocks holds the CRC-32C of every block of a volume's bytes as they were
// written: the volume split into blocks of Size bytes (the last may be
// shorter). They let a server announce the CRC of any part of an extent
// from stored values, reading and checking only the blocks at its edges.
// A Blocks is shared, never modified, once stored.
type Blocks struct {
	Size int64
	CRCs []uint32
}

// bucketBlocks holds each volume's Blocks, keyed by name, tagged with the
// generation they belong to. Catalogs written before it existed have none,
// and an entry whose generation is not the volume's is ignored, so builds
// that do not know the bucket can still read and write the catalog.
var bucketBlocks = []byte("blocks")

// Blocks record layout, big-endian:
//
//	0   8   generation of the volume the CRCs belong to
//	8   4   block size
//	12  4   block count b
//	16  4b  CRC-32C of each block
//	    4   CRC-32C of all the bytes before it
const blocksFixed = 16

// encodeBlocks returns the record of b for generation gen.
func encodeBlocks(gen uint64, b *Blocks) []byte {
	rec := make([]byte, 0, blocksFixed+4*len(b.CRCs)+4)
	rec = binary.BigEndian.AppendUint64(rec, gen)
	rec = binary.BigEndian.AppendUint32(rec, uint32(b.Size))
	rec = binary.BigEndian.AppendUint32(rec, uint32(len(b.CRCs)))
	for _, c := range b.CRCs {
		rec = binary.BigEndian.AppendUint32(rec, c)
	}
	return binary.BigEndian.AppendUint32(rec, crc32.Checksum(rec, castagnoli))
}

// decodeBlocks parses a Blocks record; the error wraps ErrCorrupt.
func decodeBlocks(rec []byte) (gen uint64, b *Blocks, err error) {
	if len(rec) < blocksFixed+4 {
		return 0, nil, fmt.Errorf("block record of %d bytes: %w", len(rec), ErrCorrupt)
	}
	body, sum := rec[:len(rec)-4], binary.BigEndian.Uint32(rec[len(rec)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return 0, nil, fmt.Errorf("block record checksum: %w", ErrCorrupt)
	}
	gen = binary.BigEndian.Uint64(body)
	size := int64(binary.BigEndian.Uint32(body[8:]))
	n := int(binary.BigEndian.Uint32(body[12:]))
	if size <= 0 || size > MaxBlockSize || size&(size-1) != 0 || len(body) != blocksFixed+4*n {
		return 0, nil, fmt.Errorf("block record: size %d, %d CRCs in %d bytes: %w", size, n, len(body), ErrCorrupt)
	}
	b = &Blocks{Size: size, CRCs: make([]uint32, n)}
	for i := range b.CRCs {
		b.CRCs[i] = binary.BigEndian.Uint32(body[blocksFixed+4*i:])
	}
	return gen, b, nil
}

// putBlocks stores v.Blocks under v's generation in the transaction of the
// volume record, or drops a stale entry when v has none.
func putBlocks(tx *bolt.Tx, v *Volume) error {
	if v.Blocks == nil {
		if b := tx.Bucket(bucketBlocks); b != nil {
			return b.Delete([]byte(v.Name))
		}
		return nil
	}
	if p := v.blocksProblem(); p != "" {
		return fmt.Errorf("%s: %w", p, ErrInvalid)
	}
	b, err := tx.CreateBucketIfNotExists(bucketBlocks)
	if err != nil {
		return err
	}
	return b.Put([]byte(v.Name), encodeBlocks(v.Generation, v.Blocks))
}

// deleteBlocks drops name's Blocks.
func deleteBlocks(tx *bolt.Tx, name string) error {
	if b := tx.Bucket(bucketBlocks); b != nil {
		return b.Delete([]byte(name))
	}
	return nil
}

// validBlockSize reports whether bs can be the block size of a volume with
// extents of extentSize: a power of two from MinBlockSize to MaxBlockSize
// that divides it.
func validBlockSize(bs, extentSize int64) bool {
	return bs >= MinBlockSize && bs <= MaxBlockSize && bs&(bs-1) == 0 && extentSize%bs == 0
}

// blocksProblem returns why v.Blocks cannot describe v, or "".
func (v *Volume) blocksProblem() string { return v.blocksFit(v.Blocks) }

// blocksFit returns why b cannot be v's block CRCs, or "".
func (v *Volume) blocksFit(b *Blocks) string {
	switch {
	case !validBlockSize(b.Size, v.ExtentSize):
		return fmt.Sprintf("block size %d: not a power of two from %d to %d that divides the extent size %d",
			b.Size, MinBlockSize, MaxBlockSize, v.ExtentSize)
	case int64(len(b.CRCs)) != (v.Size+b.Size-1)/b.Size:
		return fmt.Sprintf("%d block CRCs for %d bytes in blocks of %d", len(b.CRCs), v.Size, b.Size)
	}
	return ""
}

// Blocks returns the block CRCs stored for the named volume at generation
// gen, or nil (and no error) when there are none: the volume was written by
// a build that did not store them, or it has been replaced since.
func (c *Catalog) Blocks(name string, gen uint64) (*Blocks, error) {
	var b *Blocks
	err := c.view(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketBlocks)
		if bk == nil {
			return nil
		}
		rec := bk.Get([]byte(name))
		if rec == nil {
			return nil
		}
		g, got, err := decodeBlocks(rec)
		if err != nil {
			return err
		}
		if g == gen {
			b = got
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: blocks %q: %w", name, err)
	}
	return b, nil
}

// Blocks returns the block CRCs of the named volume at generation gen (see
// [Catalog.Blocks]).
func (s *Store) Blocks(name string, gen uint64) (*Blocks, error) { return s.cat.Blocks(name, gen) }

// Changes counts the changes made to the store's catalog (see
// [Catalog.Changes]): a cache of what Open, Get and Blocks returned stays
// current while it returns the same value.
func (s *Store) Changes() uint64 { return s.cat.Changes() }

// blockSummer computes block CRCs as a volume's bytes pass.
type blockSummer struct {
	b      *Blocks
	cur    uint32
	filled int64
}

func newBlockSummer(size, bs int64) *blockSummer {
	return &blockSummer{b: &Blocks{Size: bs, CRCs: make([]uint32, 0, (size+bs-1)/bs)}}
}

// write adds p, closing blocks as they fill.
func (s *blockSummer) write(p []byte) {
	for len(p) > 0 {
		k := min(int64(len(p)), s.b.Size-s.filled)
		s.cur = crc32.Update(s.cur, castagnoli, p[:k])
		s.filled += k
		p = p[k:]
		if s.filled == s.b.Size {
			s.flush()
		}
	}
}

// flush closes a partial last block.
func (s *blockSummer) flush() {
	if s.filled > 0 {
		s.b.CRCs = append(s.b.CRCs, s.cur)
		s.cur, s.filled = 0, 0
	}
}

// rangeCRCBlocks is RangeCRC from block CRCs: the blocks wholly inside the
// range contribute their stored CRCs, combined; the blocks at its edges are
// read, checked against theirs, and contribute the CRC of their part.
func (v *Volume) rangeCRCBlocks(r io.ReaderAt, off, n int64, b *Blocks) (uint32, error) {
	bs := b.Size
	first, last := off/bs, (off+n-1)/bs
	var (
		crc  uint32
		edge []byte
		tab  = blockTable(bs) // appends a whole block (the size is valid: RangeCRC checked)
	)
	for k := first; k <= last; k++ {
		bOff := k * bs
		bLen := min(bs, v.Size-bOff)
		lo, hi := max(off, bOff), min(off+n, bOff+bLen)
		var part uint32
		if lo == bOff && hi == bOff+bLen {
			part = b.CRCs[k]
		} else {
			if edge == nil {
				bp := rangeBufs.Get().(*[]byte)
				defer rangeBufs.Put(bp)
				edge = (*bp)[:bs]
			}
			blk := edge[:bLen]
			if _, err := r.ReadAt(blk, bOff); err != nil {
				return 0, fmt.Errorf("catalog: volume %q: read block %d: %w", v.Name, k, err)
			}
			if got := crc32.Checksum(blk, castagnoli); got != b.CRCs[k] {
				return 0, fmt.Errorf("catalog: volume %q: block [%d,+%d): crc32c on disk %08x, stored %08x: %w",
					v.Name, bOff, bLen, got, b.CRCs[k], ErrDataCorrupt)
			}
			part = crc32.Checksum(blk[lo-bOff:hi-bOff], castagnoli)
		}
		switch {
		case k == first:
			crc = part
		case hi-lo == bs:
			crc = tab.times(crc) ^ part
		default:
			crc = crcCombine(crc, part, hi-lo)
		}
	}
	return crc, nil
}

// WithoutBlocks returns, in name order, the volumes that have no block
// CRCs for their current generation: volumes written by a build that did
// not store them. Partial reads of such a volume check whole extents; run
// [Store.AddBlocks] on them (`blockd catalog migrate`).
func (c *Catalog) WithoutBlocks() ([]string, error) {
	var names []string
	err := c.view(func(tx *bolt.Tx) error {
		vb := tx.Bucket(bucketVolumes)
		if vb == nil {
			return fmt.Errorf("no volumes bucket: %w", ErrCorrupt)
		}
		bb := tx.Bucket(bucketBlocks)
		return vb.ForEach(func(k, raw []byte) error {
			v, err := decodeKeyed(k, raw)
			if err != nil {
				return err
			}
			if bb != nil {
				if rec := bb.Get(k); len(rec) >= 8 && binary.BigEndian.Uint64(rec) == v.Generation {
					return nil
				}
			}
			names = append(names, v.Name)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: volumes without block CRCs: %w", err)
	}
	return names, nil
}

// AddBlocks computes and stores the block CRCs of the named volume, which a
// build that did not store them wrote. It reads the whole volume once and
// checks every extent against its stored CRC first: if any differs, it
// stores nothing and the error wraps [ErrDataCorrupt] and names the extents,
// since block CRCs computed from those bytes would bless the damage. A
// volume replaced while it ran is left alone (the error wraps [ErrExists]).
// A volume that has block CRCs already is not read again.
func (s *Store) AddBlocks(ctx context.Context, name string, opts ...OpOption) (*Blocks, error) {
	const op = "add blocks"
	if s.cat.readOnly {
		return nil, fmt.Errorf("catalog: %s %q: %w", op, name, ErrReadOnly)
	}
	cur, err := s.cat.get(op, name)
	if err != nil {
		return nil, err
	}
	if b, err := s.cat.Blocks(name, cur.Generation); err != nil || b != nil {
		return b, err
	}
	v, sum, bad, err := s.reread(ctx, op, name, opts)
	if err != nil {
		return nil, err
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("catalog: %s %q: extents %v no longer match their stored crc32c, so no block CRCs were stored: %w",
			op, name, bad, ErrDataCorrupt)
	}
	v.Blocks = sum.blocks
	err = s.cat.update(op, name, func(b *bolt.Bucket) error {
		cur, err := getVolume(b, name)
		if err != nil {
			return err
		}
		if cur.Generation != v.Generation {
			return fmt.Errorf("replaced while its block CRCs were computed: %w", ErrExists)
		}
		return putBlocks(b.Tx(), v)
	})
	if err != nil {
		return nil, err
	}
	return v.Blocks, nil
}
