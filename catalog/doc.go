// Package catalog keeps the volumes a blockd serves: name, size, extent size,
// backing file or block device, and a CRC-32C per extent. It is a bbolt
// database with a schema version; a catalog written by a newer blockd is
// refused rather than misread.
package catalog
