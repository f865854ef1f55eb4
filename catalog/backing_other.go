//go:build !linux

package catalog

import (
	"io"
	"os"
)

// deviceSize returns the size in bytes of the block device f by seeking to
// its end.
func deviceSize(f *os.File) (int64, error) {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	return size, nil
}

// preallocate does nothing outside Linux; a full disk shows up as a write
// error instead.
func preallocate(*os.File, int64) error { return nil }

// freeBytes is not known outside Linux: -1, and uploads are not checked
// against free space beforehand (a full disk shows up as a write error).
func freeBytes(string) (int64, error) { return -1, nil }
