package tcp

import (
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// lowat sets a socket's receive low-water mark (SO_RCVLOWAT): epoll, and
// so Go's poller, reports the socket readable only once that many bytes
// are queued (or the stream ended, or the kernel is short of memory), and
// TCP holds back its wake-ups until then. A nil *lowat sets nothing.
type lowat struct {
	rc  syscall.RawConn
	cur int // the mark last set; 1, the kernel's default, before any
}

// newLowat returns the low-water mark of conn, or nil where conn is not a
// socket of this process (a net.Pipe in tests).
func newLowat(conn net.Conn) *lowat {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return &lowat{rc: rc, cur: 1}
}

// set makes n bytes (at least 1) the mark, with one setsockopt when it
// changes. It fails only where the socket is gone; the mark is then
// unknown, and the caller must not wait on the socket.
func (l *lowat) set(n int) error {
	n = max(n, 1)
	if l == nil || n == l.cur {
		return nil
	}
	var err error
	if cerr := l.rc.Control(func(fd uintptr) {
		v := int32(n)
		_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, uintptr(unsafe.Pointer(&v)), 4, 0)
		if e != 0 {
			err = e
		}
	}); cerr != nil {
		err = cerr
	}
	if err != nil {
		l.cur = 0 // unknown: set again next time
		return &net.OpError{Op: "setsockopt SO_RCVLOWAT", Net: "tcp", Err: os.NewSyscallError("setsockopt", err)}
	}
	l.cur = n
	return nil
}
