//go:build !linux

package memfd

import "github.com/blockxfer/blockxfer/internal/syserr"

// errNotSupported is returned on systems without memfd (everything but
// Linux); it wraps syserr.ErrNotSupported.
var errNotSupported = syserr.NotOnThisOS("memfd")

// Create returns errNotSupported: memfd is Linux-only.
func Create(name string, size int64, seals int) (int, error) { return -1, errNotSupported }

// Map returns errNotSupported: memfd is Linux-only.
func Map(fd int, size int64) ([]byte, error) { return nil, errNotSupported }

// Unmap returns errNotSupported for a non-nil mapping: memfd is Linux-only.
func Unmap(mem []byte) error {
	if mem == nil {
		return nil
	}
	return errNotSupported
}

// Close returns errNotSupported: memfd is Linux-only.
func Close(fd int) error { return errNotSupported }

// CheckSealed returns errNotSupported: memfd is Linux-only.
func CheckSealed(fd int, size int64) error { return errNotSupported }
