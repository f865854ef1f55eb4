package rawsock

import (
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const supported = true

// Read reads into p with one read(2) on the non-blocking socket, waiting in
// Go's poller while there is nothing to read.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var (
		n     int
		errno unix.Errno
	)
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // wait for the poller, then call again
			}
			n, errno = int(r), e
			return true
		}
	})
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p with send(2) calls on the non-blocking socket,
// waiting in Go's poller while the socket's send buffer is full.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := Send(c.rc, p, 0)
	if err != nil {
		return n, c.opError("write", err)
	}
	return n, nil
}

// Send writes all of p with send(2) calls and flags (such as MSG_MORE) as
// raw system calls on the non-blocking socket rc controls, waiting in Go's
// poller while its send buffer is full. It returns how many bytes went and
// the poller's error (a deadline, a closed socket) or send's.
func Send(rc syscall.RawConn, p []byte, flags int) (int, error) {
	var (
		n     int
		errno unix.Errno
	)
	err := rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n), uintptr(flags), 0, 0)
			switch e {
			case 0:
				n += int(r)
			case unix.EINTR:
			case unix.EAGAIN:
				return false // wait for room, then call again
			default:
				errno = e
				return true
			}
		}
		return true
	})
	if err == nil && errno != 0 {
		err = os.NewSyscallError("sendto", errno)
	}
	return n, err
}
