package catalog

import "errors"

// Errors about volumes and their names. Every error this package returns that
// is about one volume wraps one of these and names the operation and the
// volume, for example `catalog: get "vol1": no such volume`.
var (
	// ErrNotFound is returned when the named volume is not in the catalog.
	ErrNotFound = errors.New("no such volume")

	// ErrExists is returned when a volume of that name is already in the
	// catalog, or is being created by another call on the same Store.
	ErrExists = errors.New("volume already exists")

	// ErrBadName is returned for a volume name that [ValidName] rejects.
	ErrBadName = errors.New("invalid volume name")

	// ErrInvalid is returned for a volume whose fields are out of bounds:
	// a size <= 0, an extent size that is not a multiple of 4096 between
	// MinExtentSize and MaxExtentSize, too many extents, a CRC list of the
	// wrong length, a backing path that is not absolute and clean, an
	// unknown Fill, or an import source that is neither a regular file nor a
	// block device.
	ErrInvalid = errors.New("invalid volume parameters")

	// ErrBacking is returned by [Store.Open] and [Store.Verify] when a
	// volume's backing file or block device is missing, of the wrong kind,
	// or smaller than the volume.
	ErrBacking = errors.New("backing missing or smaller than the volume")

	// ErrDataCorrupt is returned by [Volume.RangeCRC] when the bytes on disk
	// no longer match the CRC-32C stored when they were written: the
	// backing file was changed behind the catalog's back or the disk
	// returned bad data. Such bytes are never served as good.
	ErrDataCorrupt = errors.New("volume data does not match its stored crc32c")
)

// Errors about the catalog database itself.
var (
	// ErrNewerSchema is returned by [Open] when the catalog was written by a
	// newer blockd whose schema version this build does not know. The
	// catalog is left untouched; upgrade blockd to read it.
	ErrNewerSchema = errors.New("catalog written by a newer blockd")

	// ErrCorrupt is returned when the catalog database or a record in it
	// cannot be decoded: a bad bbolt file, missing schema metadata, or a
	// volume record that fails its checks.
	ErrCorrupt = errors.New("catalog corrupt")

	// ErrLocked is returned by [Open] when another process (or another Open
	// in this process) holds the catalog's file lock for longer than
	// Options.LockTimeout.
	ErrLocked = errors.New("catalog locked by another process")

	// ErrReadOnly is returned by every method that would change a catalog
	// opened with Options.ReadOnly.
	ErrReadOnly = errors.New("catalog opened read-only")
)
