// Package ec stores volumes erasure-coded across blockd servers and reads
// them back straight into provider (accelerator) memory.
//
// A striped volume is cut into stripes of K data shards and M parity shards
// (systematic Reed-Solomon, github.com/klauspost/reedsolomon), each shard
// Unit bytes. Stripe i covers volume bytes [i*K*Unit, (i+1)*K*Unit); the last
// stripe is zero-padded for encoding. Shard j of stripe i lives on server
// (i+j) mod N of the manifest's N servers (N >= K+M), so no two shards of a
// stripe share a server and every server holds the same number of data and
// parity shards over any N consecutive stripes. Each server keeps its shards
// of a volume, in stripe order, as one ordinary blockd volume named
// ShardVolume(name) with extents of Unit bytes: the catalog's per-extent
// CRC-32C is the shard checksum and the existing read path serves shards.
//
// [Import] encodes a file or block device and uploads every server's shard
// volume in parallel. [Reader] reads ranges of a striped volume: on the
// healthy path it fetches the K data shards of each stripe straight into the
// destination buffer; when a server is down, slow or returns a bad checksum
// it fetches parity into host memory, reconstructs and copies the missing
// bytes in, and reports the degraded stripes. [Scrub] verifies every shard
// against the manifest and rebuilds lost or corrupt ones. [Manifest] is what
// a client needs to find the shards; [Cluster] keeps manifests and the
// server registry in etcd. docs/erasure-coding.md describes the design.
package ec

import (
	"errors"
	"fmt"
)

// Bounds of a layout.
const (
	// MaxShards bounds K+M (the Reed-Solomon field has 256 elements).
	MaxShards = 256
	// MaxServers bounds the servers of one striped volume.
	MaxServers = 256
	// MinUnit and MaxUnit bound the shard unit; it is a multiple of MinUnit
	// (it is the extent size of every shard volume).
	MinUnit = 4096
	// MaxUnit is the largest shard unit (the catalog's largest extent).
	MaxUnit = 64 << 20
	// DefaultUnit is the shard unit used when none is given.
	DefaultUnit = 1 << 20
	// MaxSize bounds a striped volume's size.
	MaxSize = 1 << 52
)

// ErrLayout is wrapped by every error about a layout's parameters.
var ErrLayout = errors.New("invalid erasure-coding layout")

// Layout is the geometry of a striped volume: how its bytes map to shards
// and shards to servers.
type Layout struct {
	Size    int64 // volume bytes
	K, M    int   // data and parity shards per stripe
	Unit    int64 // bytes per shard
	Servers int   // N: servers in placement order
}

// Validate checks the layout's bounds; errors wrap ErrLayout.
func (l Layout) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("ec: layout: %s: %w", fmt.Sprintf(format, args...), ErrLayout)
	}
	switch {
	case l.K < 1 || l.M < 1 || l.K+l.M > MaxShards:
		return bad("%d+%d shards: want k >= 1, m >= 1, k+m <= %d", l.K, l.M, MaxShards)
	case l.Servers < l.K+l.M:
		return bad("%d servers for %d+%d shards: every shard of a stripe needs a server of its own", l.Servers, l.K, l.M)
	case l.Servers > MaxServers:
		return bad("%d servers, more than %d", l.Servers, MaxServers)
	case l.Unit < MinUnit || l.Unit > MaxUnit || l.Unit%MinUnit != 0:
		return bad("unit %d: want a multiple of %d from %d to %d", l.Unit, MinUnit, MinUnit, MaxUnit)
	case l.Size < 1 || l.Size > MaxSize:
		return bad("size %d: want 1..%d", l.Size, int64(MaxSize))
	}
	return nil
}

// Shards is K+M.
func (l Layout) Shards() int { return l.K + l.M }

// StripeBytes is the volume bytes one stripe covers: K*Unit.
func (l Layout) StripeBytes() int64 { return int64(l.K) * l.Unit }

// Stripes is the number of stripes: Size / StripeBytes rounded up.
func (l Layout) Stripes() int64 { return (l.Size + l.StripeBytes() - 1) / l.StripeBytes() }

// Server returns the index (into the manifest's servers) of the server that
// holds shard j of stripe i: (i+j) mod N.
func (l Layout) Server(stripe int64, shard int) int {
	return int((stripe + int64(shard)) % int64(l.Servers))
}

// ShardOf returns which shard of stripe i server s holds, or -1.
func (l Layout) ShardOf(stripe int64, server int) int {
	j := int(((int64(server)-stripe)%int64(l.Servers) + int64(l.Servers)) % int64(l.Servers))
	if j >= l.Shards() {
		return -1
	}
	return j
}

// heldBefore returns how many of stripes [0, stripe) server s holds a shard
// of.
func (l Layout) heldBefore(server int, stripe int64) int64 {
	n := int64(l.Servers)
	w := int64(l.Shards())
	count := stripe / n * w
	for i := stripe / n * n; i < stripe; i++ {
		if l.ShardOf(i, server) >= 0 {
			count++
		}
	}
	return count
}

// Held returns how many shards server s holds: the extents of its shard
// volume.
func (l Layout) Held(server int) int64 { return l.heldBefore(server, l.Stripes()) }

// LocalIndex returns the extent index of shard j of stripe i in the shard
// volume of the server that holds it: shards are kept in stripe order.
func (l Layout) LocalIndex(stripe int64, shard int) int64 {
	return l.heldBefore(l.Server(stripe, shard), stripe)
}

// DataRange returns the volume bytes data shard j (< K) of stripe i holds:
// [off, off+n). n is Unit except in the last stripe, where it may be shorter
// or 0 (a shard of padding only).
func (l Layout) DataRange(stripe int64, shard int) (off, n int64) {
	off = stripe*l.StripeBytes() + int64(shard)*l.Unit
	if off >= l.Size {
		return l.Size, 0
	}
	return off, min(l.Unit, l.Size-off)
}
