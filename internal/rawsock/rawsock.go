// Package rawsock reads and writes connected sockets with raw system calls,
// without the Go runtime's bookkeeping around a system call that may block.
//
// Every syscall.Syscall tells the scheduler that the goroutine may block
// (entersyscall), and when all of the process's Ps were idle just before,
// that wakes the runtime's monitor thread (sysmon), which then polls every
// 20 µs until the process is idle again. A request-response process, which
// is idle between requests, so pays a futex wake-up and two or three
// context switches of sysmon per request: a fifth of blockd's CPU samples
// at queue depth 1 (docs/performance.md).
//
// A socket of Go's net package is non-blocking: read(2) and send(2) on it
// return at once (EAGAIN when they would block), so they need none of that
// bookkeeping. [Wrap] returns a connection whose Read and Write make those
// calls with unix.RawSyscall inside [syscall.RawConn] callbacks, and wait
// for readiness in Go's poller as net.Conn does, deadlines included.
package rawsock

import (
	"net"
	"syscall"
)

// socket is a net.Conn that Wrap can wrap: one with a file descriptor that
// can be half-closed (*net.TCPConn, *net.UnixConn).
type socket interface {
	net.Conn
	syscall.Conn
	CloseRead() error
	CloseWrite() error
}

// Conn is a connection whose Read and Write are raw system calls on its
// socket. Its other methods are the wrapped connection's.
type Conn struct {
	socket
	rc syscall.RawConn
}

// Wrap returns c as a *Conn where c is a socket of this process on Linux
// (a *net.TCPConn or *net.UnixConn), and c itself otherwise (a net.Pipe, a
// TLS connection, another OS), so it can wrap any connection.
func Wrap(c net.Conn) net.Conn {
	s, ok := c.(socket)
	if !ok || !supported {
		return c
	}
	rc, err := s.SyscallConn()
	if err != nil {
		return c
	}
	return &Conn{socket: s, rc: rc}
}

// opError describes a failed read or write as net.Conn's do.
func (c *Conn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		// A poller error (a deadline, a closed connection) comes as
		// "raw-read" or "raw-write": name the operation the caller made.
		oe.Op = op
		return oe
	}
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
