package engine

import (
	"io"
	"os"
	"sync"
)

// Staging: the bytes of a small partial read are read once. RangeCRC reads
// the blocks at the edges of a partial extent to check them against their
// stored CRCs; when those reads cover the whole range (a read of at most
// stageMax bytes inside one or two blocks), the checked bytes are kept in
// the session's staging file, an anonymous memory file, and sent from there
// instead of from the volume file. So the range is not read a second time,
// the bytes sent are exactly the bytes checked, and, since nothing can fail
// reading memory once the extent is announced, the read's ReadDone goes out
// at once, in the same write as its Extent (a read's terminal message may
// precede its bytes: docs/protocol.md 7.2).
//
// A staging file is only ever appended to, never rewritten: sendfile(2)
// hands the kernel references to its pages, which a socket may hold (on
// loopback, until the receiver reads them) long after SendExtent returned,
// so bytes once sent must never change. A full file is closed once its last
// send returns, and the next read starts a new one.
const (
	stageMax  = 64 << 10 // the largest range staged
	stageSize = 1 << 20  // bytes appended to one staging file
)

// stageFile is one append-only staging file and the sends still using it.
type stageFile struct {
	f    *os.File
	refs int  // regions lent and not yet returned; guarded by stager.mu
	full bool // no more regions are lent from it; guarded by stager.mu
}

// stager lends regions of a session's staging files.
type stager struct {
	mu     sync.Mutex
	cur    *stageFile
	off    int64 // the next free byte of cur
	failed bool  // no staging file could be made: never stage
	closed bool
}

// get lends n bytes of a staging file, or returns nil.
func (st *stager) get(n int64) (sf *stageFile, off int64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.failed || st.closed {
		return nil, 0
	}
	if st.cur == nil || st.off+n > stageSize {
		st.retireLocked()
		f, err := newStageFile()
		if err != nil {
			st.failed = true
			return nil, 0
		}
		st.cur, st.off = &stageFile{f: f}, 0
	}
	st.cur.refs++
	off = st.off
	st.off += n
	return st.cur, off
}

// put returns a region lent by get (sent, or never used).
func (st *stager) put(sf *stageFile) {
	st.mu.Lock()
	defer st.mu.Unlock()
	sf.refs--
	if sf.refs == 0 && sf.full {
		sf.f.Close()
	}
}

// retireLocked lends no more of the current file, closing it if no send
// uses it.
func (st *stager) retireLocked() {
	if st.cur != nil {
		st.cur.full = true
		if st.cur.refs == 0 {
			st.cur.f.Close()
		}
		st.cur = nil
	}
}

// close stops staging; files still in use close after their last send.
func (st *stager) close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.closed = true
	st.retireLocked()
}

// capture passes reads through to r and copies what they return of
// [lo, hi) into staging file sf at base, counting the bytes kept.
type capture struct {
	r      io.ReaderAt
	sf     *stageFile
	base   int64
	lo, hi int64
	got    int64
}

func (c *capture) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	if err == nil {
		if a, b := max(off, c.lo), min(off+int64(n), c.hi); a < b {
			if _, werr := c.sf.f.WriteAt(p[a-off:b-off], c.base+a-c.lo); werr == nil {
				c.got += b - a
			}
		}
	}
	return n, err
}
