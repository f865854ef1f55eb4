package tcp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/internal/rawsock"
	"github.com/blockxfer/blockxfer/transport"
)

// maxSendfile caps one sendfile(2) call, as the kernel does (0x7ffff000).
const maxSendfile = 1 << 30

func newSender(conn net.Conn) (transport.Sender, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return &copySender{byteWriter{conn}}, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tcp: sender: %w", err)
	}
	return &sendfileSender{byteWriter: byteWriter{conn}, rc: rc}, nil
}

// sendfileSender sends with sendfile(2) from an explicit file offset, so
// several connections share one *os.File without seeking it.
type sendfileSender struct {
	byteWriter
	rc syscall.RawConn
}

func (s *sendfileSender) SendExtent(f *os.File, off, n int64) error {
	src := int(f.Fd())
	defer runtime.KeepAlive(f)
	for n > 0 {
		var sent int
		var serr error
		raw := n <= rawSendMax && cached(src, off, n)
		err := s.rc.Write(func(fd uintptr) bool {
			sent, serr = sendfile(int(fd), src, off, min(n, maxSendfile), raw)
			return !errors.Is(serr, unix.EAGAIN)
		})
		if err == nil {
			err = serr
		}
		if sent > 0 {
			off += int64(sent)
			n -= int64(sent)
		}
		switch {
		case err == nil && sent == 0:
			// sendfile reads nothing at end of file: the backing shrank.
			return pad(s.conn, n, fmt.Errorf("volume file ends at %d", off))
		case err != nil:
			// sendfile reports one errno for both ends; ask the file.
			if _, perr := unix.Pread(src, make([]byte, 1), off); perr != nil {
				return pad(s.conn, n, os.NewSyscallError("pread", perr))
			}
			return fmt.Errorf("tcp: sendfile: %w", err)
		}
	}
	return nil
}

var (
	_ transport.TrySender    = (*sendfileSender)(nil)
	_ transport.HeaderSender = (*sendfileSender)(nil)
)

// SendExtentAfter implements transport.HeaderSender: hdr goes with
// MSG_MORE, so the kernel holds it for the bytes sendfile(2) adds, and
// the socket sends both in one segment where they fit.
func (s *sendfileSender) SendExtentAfter(hdr []byte, f *os.File, off, n int64) error {
	if _, err := rawsock.Send(s.rc, hdr, unix.MSG_MORE); err != nil {
		return fmt.Errorf("tcp: send header: %w", err)
	}
	return s.SendExtent(f, off, n)
}

// TrySendExtent implements transport.TrySender: sendfile(2) calls on the
// non-blocking socket until it would block, the file ends or one fails.
func (s *sendfileSender) TrySendExtent(f *os.File, off, n int64) int64 {
	src := int(f.Fd())
	defer runtime.KeepAlive(f)
	var done int64
	s.rc.Write(func(fd uintptr) bool {
		raw := n <= rawSendMax && cached(src, off, n)
		for done < n {
			k, err := sendfile(int(fd), src, off+done, min(n-done, maxSendfile), raw)
			if k > 0 {
				done += int64(k)
			}
			if err != nil || k <= 0 {
				break
			}
		}
		return true // never wait for the socket
	})
	return done
}

func (s *sendfileSender) Close() error { return nil }

// rawSendMax is the largest extent sent with raw sendfile(2) calls when
// the page cache holds all of it: small reads, which a process that is
// idle between them sends one at a time. A larger extent takes long
// enough that the runtime's bookkeeping around an ordinary call is
// nothing beside it.
const rawSendMax = 256 << 10

// sendfile sends up to n bytes of src from off to the socket fd. With raw
// it is a raw system call, without the runtime's bookkeeping for a call
// that may block, which wakes the runtime's monitor thread in a process
// that was idle (see internal/rawsock): only for bytes the page cache
// holds (cached), which sendfile copies without waiting for the disk.
func sendfile(fd, src int, off, n int64, raw bool) (int, error) {
	if !raw {
		return unix.Sendfile(fd, src, &off, int(n))
	}
	r, _, e := unix.RawSyscall6(unix.SYS_SENDFILE, uintptr(fd), uintptr(src), uintptr(unsafe.Pointer(&off)), uintptr(n), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// noCachestat is set once cachestat(2) (Linux 6.5) turned out missing.
var noCachestat atomic.Bool

// cached reports whether the page cache holds every page of src's bytes
// [off, off+n), asked with cachestat(2) as a raw call: it only looks the
// pages up. False where the kernel has no cachestat, or it fails.
func cached(src int, off, n int64) bool {
	if noCachestat.Load() || n <= 0 || off < 0 {
		return false
	}
	rng := unix.CachestatRange{Off: uint64(off), Len: uint64(n)}
	var st unix.Cachestat_t
	_, _, e := unix.RawSyscall6(unix.SYS_CACHESTAT, uintptr(src), uintptr(unsafe.Pointer(&rng)), uintptr(unsafe.Pointer(&st)), 0, 0, 0)
	if e != 0 {
		if e == unix.ENOSYS {
			noCachestat.Store(true)
		}
		return false
	}
	page := int64(os.Getpagesize())
	pages := (off+n+page-1)/page - off/page
	return st.Cache >= uint64(pages)
}
