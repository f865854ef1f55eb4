//go:build !linux

package memfd

// Populate returns errNotSupported for a non-empty mapping: memfd is
// Linux-only.
func Populate(mem []byte) error {
	if len(mem) == 0 {
		return nil
	}
	return errNotSupported
}
