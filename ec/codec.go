package ec

import (
	"fmt"
	"hash/crc32"

	"github.com/klauspost/reedsolomon"
)

// Codec is the Reed-Solomon code of a layout: K data and M parity shards.
// It is safe for concurrent use.
type Codec struct {
	k, m int
	enc  reedsolomon.Encoder
}

// NewCodec returns the systematic Reed-Solomon code with k data and m parity
// shards.
func NewCodec(k, m int) (*Codec, error) {
	if k < 1 || m < 1 || k+m > MaxShards {
		return nil, fmt.Errorf("ec: codec %d+%d: %w", k, m, ErrLayout)
	}
	enc, err := reedsolomon.New(k, m)
	if err != nil {
		return nil, fmt.Errorf("ec: codec %d+%d: %w", k, m, err)
	}
	return &Codec{k: k, m: m, enc: enc}, nil
}

// Encode computes the M parity shards of shards (K data shards followed by
// M parity shards, all of one length) in place.
func (c *Codec) Encode(shards [][]byte) error {
	if err := c.enc.Encode(shards); err != nil {
		return fmt.Errorf("ec: encode %d+%d: %w", c.k, c.m, err)
	}
	return nil
}

// ReconstructData fills in the missing (nil or empty) data shards of
// shards from any K present shards. Parity shards stay missing.
func (c *Codec) ReconstructData(shards [][]byte) error {
	if err := c.enc.ReconstructData(shards); err != nil {
		return fmt.Errorf("ec: reconstruct %d+%d: %w", c.k, c.m, err)
	}
	return nil
}

// Reconstruct fills in every missing shard, data and parity.
func (c *Codec) Reconstruct(shards [][]byte) error {
	if err := c.enc.Reconstruct(shards); err != nil {
		return fmt.Errorf("ec: reconstruct %d+%d: %w", c.k, c.m, err)
	}
	return nil
}

// crcOf returns the CRC-32C of b.
func crcOf(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
