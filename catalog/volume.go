package catalog

import (
	"errors"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"strings"
	"time"
)

// Bounds on a volume. The record decoder and every method that takes a
// volume or its geometry enforce them.
const (
	// DefaultExtentSize is the extent size used when a caller passes 0.
	DefaultExtentSize = 4 << 20
	// MinExtentSize is the smallest extent size. Extent sizes are
	// multiples of it.
	MinExtentSize = 4096
	// MaxExtentSize is the largest extent size (64 MiB).
	MaxExtentSize = 64 << 20
	// MaxExtents is the most extents one volume may have. With the default
	// extent size that is a 16 TiB volume; larger volumes need larger
	// extents.
	MaxExtents = 1 << 22
	// MaxNameLen is the longest volume name in bytes.
	MaxNameLen = 128
	// MaxBackingLen is the longest backing path in bytes (PATH_MAX).
	MaxBackingLen = 4096
)

// castagnoli is the CRC-32C table used for every extent and record checksum.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Created times are bounded to years 1 through 9999 so that they survive the
// record's seconds+nanoseconds encoding unchanged.
const (
	minCreatedUnix = -62135596800 // 0001-01-01T00:00:00Z
	maxCreatedUnix = 253402300799 // 9999-12-31T23:59:59Z
)

// Volume is one catalog entry: a named range of bytes served as fixed-size
// extents from a backing file or block device.
//
// A Volume returned by this package is a copy; changing it changes nothing
// until it is passed to [Catalog.Replace].
type Volume struct {
	// Name identifies the volume; see [ValidName].
	Name string
	// Size is the volume's length in bytes; > 0.
	Size int64
	// ExtentSize is the length of every extent but possibly the last, in
	// bytes: a multiple of MinExtentSize up to MaxExtentSize.
	ExtentSize int64
	// Backing is the absolute, clean path of the backing file or block
	// device.
	Backing string
	// Owned is true when the backing file lives in the data directory and
	// is removed with the volume; false for an external file or block
	// device, which removing the volume leaves alone.
	Owned bool
	// CRCs holds the CRC-32C (Castagnoli) of each extent, in order; the
	// last extent may be shorter than ExtentSize.
	CRCs []uint32
	// Generation is assigned by the catalog on every Put and Replace from a
	// counter that only grows, so a rewritten (or deleted and recreated)
	// volume never shows an earlier generation again.
	Generation uint64
	// Created is when the volume was first stored. The catalog keeps it in
	// UTC with nanosecond precision.
	Created time.Time
	// Blocks are the CRC-32Cs of the volume's blocks (see [Blocks]). Put
	// and Replace store them, under the generation they assign, when set;
	// Get and List leave them nil, since they can be large: load them with
	// [Catalog.Blocks].
	Blocks *Blocks
}

// Extents returns the number of extents in v: Size divided by ExtentSize,
// rounded up. It is 0 for a volume with no valid geometry.
func (v *Volume) Extents() int {
	n, ok := extentCount(v.Size, v.ExtentSize)
	if !ok {
		return 0
	}
	return n
}

// ExtentRange returns the byte offset and length of extent i. Every extent
// is ExtentSize bytes except possibly the last. It panics if i is not in
// [0, v.Extents()), like an out-of-range slice index.
func (v *Volume) ExtentRange(i int) (off, n int64) {
	if i < 0 || i >= v.Extents() {
		panic(fmt.Sprintf("catalog: extent %d out of range [0, %d) of volume %q", i, v.Extents(), v.Name))
	}
	off = int64(i) * v.ExtentSize
	return off, min(v.ExtentSize, v.Size-off)
}

// ExtentCRC returns the CRC-32C of extent i. It panics if i is out of the
// range of v.CRCs.
func (v *Volume) ExtentCRC(i int) uint32 {
	return v.CRCs[i]
}

// clone returns a deep copy of v.
func (v *Volume) clone() *Volume {
	c := *v
	c.CRCs = append([]uint32(nil), v.CRCs...)
	return &c
}

// extentCount returns ceil(size/extentSize) without overflow, and false if
// either is <= 0.
func extentCount(size, extentSize int64) (int, bool) {
	if size <= 0 || extentSize <= 0 {
		return 0, false
	}
	n := size / extentSize
	if size%extentSize != 0 {
		n++
	}
	if n > MaxExtents {
		return 0, false
	}
	return int(n), true
}

// ValidName reports whether name can name a volume. A name is 1 to
// MaxNameLen bytes of ASCII letters, digits, '.', '_' and '-', and does not
// start with '.'. Such a name is always a single path element that is
// neither "." nor "..", so it can never escape a directory. The error wraps
// [ErrBadName].
func ValidName(name string) error {
	if p := nameProblem(name); p != "" {
		return fmt.Errorf("catalog: volume name %q: %s: %w", name, p, ErrBadName)
	}
	return nil
}

// checkName is ValidName with the operation in the message.
func checkName(op, name string) error {
	if p := nameProblem(name); p != "" {
		return fmt.Errorf("catalog: %s %q: %s: %w", op, name, p, ErrBadName)
	}
	return nil
}

// nameProblem returns why name is not a valid volume name, or "".
func nameProblem(name string) string {
	switch {
	case name == "":
		return "empty"
	case len(name) > MaxNameLen:
		return fmt.Sprintf("%d bytes, longer than %d", len(name), MaxNameLen)
	case name[0] == '.':
		return "starts with '.'"
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == '-':
		default:
			return fmt.Sprintf("byte %#02x at offset %d is not one of [A-Za-z0-9._-]", c, i)
		}
	}
	return ""
}

// checkGeometry returns why size and extentSize cannot describe a volume, or
// "".
func checkGeometry(size, extentSize int64) string {
	switch {
	case size <= 0:
		return fmt.Sprintf("size %d is not positive", size)
	case extentSize < MinExtentSize || extentSize > MaxExtentSize:
		return fmt.Sprintf("extent size %d is not between %d and %d", extentSize, MinExtentSize, MaxExtentSize)
	case extentSize%MinExtentSize != 0:
		return fmt.Sprintf("extent size %d is not a multiple of %d", extentSize, MinExtentSize)
	}
	if _, ok := extentCount(size, extentSize); !ok {
		return fmt.Sprintf("size %d in extents of %d is more than %d extents; use a larger extent size",
			size, extentSize, MaxExtents)
	}
	return ""
}

// CheckGeometry returns an error saying why size and extentSize cannot
// describe a volume, or nil if they can.
func CheckGeometry(size, extentSize int64) error {
	if p := checkGeometry(size, extentSize); p != "" {
		return errors.New(p)
	}
	return nil
}

// problem returns why v cannot be stored, or "". It does not check the name;
// callers do, to report ErrBadName.
func (v *Volume) problem() string {
	if p := checkGeometry(v.Size, v.ExtentSize); p != "" {
		return p
	}
	if n := v.Extents(); len(v.CRCs) != n {
		return fmt.Sprintf("%d CRCs for %d extents", len(v.CRCs), n)
	}
	if p := backingProblem(v.Backing); p != "" {
		return p
	}
	if s := v.Created.Unix(); s < minCreatedUnix || s > maxCreatedUnix {
		return fmt.Sprintf("created time %s is outside years 1 to 9999", v.Created)
	}
	return ""
}

// backingProblem returns why p cannot be a backing path, or "".
func backingProblem(p string) string {
	switch {
	case p == "":
		return "empty backing path"
	case len(p) > MaxBackingLen:
		return fmt.Sprintf("backing path of %d bytes, longer than %d", len(p), MaxBackingLen)
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Sprintf("backing path %q contains NUL", p)
	case !filepath.IsAbs(p):
		return fmt.Sprintf("backing path %q is not absolute", p)
	case filepath.Clean(p) != p:
		return fmt.Sprintf("backing path %q is not clean", p)
	}
	return ""
}
