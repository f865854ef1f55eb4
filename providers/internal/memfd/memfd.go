// Package memfd creates and maps sealed memfd regions: the shared memory that
// backs host buffers and the staging buffers that carry bulk bytes between the
// engine and a provider plugin.
package memfd

import (
	"errors"
)

// Seals to apply to a new memfd.
const (
	// SealShrink forbids shrinking the file (F_SEAL_SHRINK). udmabuf requires it.
	SealShrink = 1 << iota
	// SealGrow forbids growing the file (F_SEAL_GROW).
	SealGrow
)

// errSize is returned for a size that is not positive.
var errSize = errors.New("memfd: size must be positive")
