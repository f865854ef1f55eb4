package engine

import (
	"errors"
	"math/bits"
	"os"
	"unsafe"

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
		n, rerr = preadNoWait(fd, p, off)
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

// preadNoWait is preadv2(fd, p, off, RWF_NOWAIT) made with a raw system
// call: it never waits for the disk, so it needs none of the runtime's
// bookkeeping for a call that may block, which would wake the runtime's
// monitor thread on every small read of an idle server (see
// internal/rawsock).
func preadNoWait(fd uintptr, p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	iov := unix.Iovec{Base: &p[0]}
	iov.SetLen(len(p))
	// The offset's low and high halves, as the kernel takes them: all of
	// it in the low word where a word holds it.
	lo, hi := uintptr(off), uintptr(uint64(off)>>(bits.UintSize-1)>>1)
	r, _, e := unix.RawSyscall6(unix.SYS_PREADV2, fd, uintptr(unsafe.Pointer(&iov)), 1, lo, hi, unix.RWF_NOWAIT)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
