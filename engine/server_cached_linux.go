package engine

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// errNotCached: the bytes asked for are not all in the page cache.
var errNotCached = errors.New("not in the page cache")

// cachedOnly reads a volume's backing only as far as the page cache holds
// it (preadv2 with RWF_NOWAIT), and fails with errNotCached at once instead
// of waiting for the disk: the serve goroutine reads the edges of a partial
// extent itself when they are cached and leaves disk reads to an announcer.
type cachedOnly struct{ f *os.File }

func (c cachedOnly) ReadAt(p []byte, off int64) (int, error) {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	if err := rc.Control(func(fd uintptr) {
		n, rerr = unix.Preadv2(int(fd), [][]byte{p}, off, unix.RWF_NOWAIT)
	}); err != nil {
		return 0, err
	}
	if rerr != nil || n < len(p) {
		// Not cached (EAGAIN), not supported here, partly cached, or
		// failed: a plain read by an announcer decides.
		return 0, errNotCached
	}
	return n, nil
}
