//go:build !linux

package engine

import (
	"errors"
	"os"
)

// errNotCached: the bytes asked for are not all in the page cache.
var errNotCached = errors.New("not in the page cache")

// cachedOnly cannot tell what is cached on this system: every read of the
// edges of a partial extent is left to an announcer.
type cachedOnly struct{ f *os.File }

func (c cachedOnly) ReadAt(p []byte, off int64) (int, error) { return 0, errNotCached }
