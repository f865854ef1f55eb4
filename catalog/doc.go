// Package catalog keeps the volumes a blockd serves: name, size, extent size,
// backing file or block device, and a CRC-32C per extent. It is a bbolt
// database with a schema version; a catalog written by a newer blockd is
// refused rather than misread.
//
// # Basics
//
// [Catalog] is the database alone: [Open], then Put, Replace, Get, List and
// Delete [Volume] records. [Store] is a blockd data directory, the catalog
// plus the backing files it owns, and is what `blockd volume
// create|import|list|inspect|rm` use: [OpenStore], then [Store.Create],
// [Store.Import], [Store.Remove], [Store.Verify] and [Store.Open].
//
// Every name that comes in is checked by [ValidName], so a volume name is
// always a single, harmless path element. Errors start with "catalog: ",
// name the operation and the volume, and wrap one of the sentinels in
// errors.go ([ErrNotFound], [ErrExists], [ErrBadName], [ErrInvalid],
// [ErrBacking], [ErrNewerSchema], [ErrCorrupt], [ErrLocked], [ErrReadOnly]).
//
// # Locking
//
// The database file is locked with flock while it is open: exclusively for
// a read-write open, shared for a read-only one. A second blockd on the same
// data directory fails after Options.LockTimeout with [ErrLocked] instead of
// hanging. The lock belongs to the open file, so a second Open in the same
// process is refused too.
//
// # Crash safety
//
// Create and Import write a new backing file under a temporary name in the
// volumes directory, fsync it, rename it into place, fsync the directory,
// and only then commit the catalog entry. The catalog therefore never names
// a partial file. A crash leaves at most a temporary file, which the next
// read-write OpenStore removes, or a complete but unlisted <name>.vol, which
// the next Create or Import of that name replaces.
//
// docs/catalog.md in the repository describes the schema, the record layout
// and the data directory byte by byte.
package catalog
