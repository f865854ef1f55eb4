//go:build !linux

package memfd

// Create returns ErrNotSupported: memfd is Linux-only.
func Create(name string, size int64, seals int) (int, error) { return -1, ErrNotSupported }

// Map returns ErrNotSupported: memfd is Linux-only.
func Map(fd int, size int64) ([]byte, error) { return nil, ErrNotSupported }

// Unmap returns ErrNotSupported for a non-nil mapping: memfd is Linux-only.
func Unmap(mem []byte) error {
	if mem == nil {
		return nil
	}
	return ErrNotSupported
}

// Close returns ErrNotSupported: memfd is Linux-only.
func Close(fd int) error { return ErrNotSupported }
