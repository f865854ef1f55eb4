//go:build linux

package devmem

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
)

// Host returns the Kernel that makes the real system calls and netlink
// requests of the running kernel.
func Host() Kernel { return host{} }

type host struct{}

func (host) Name() string { return transport.Devmem }

// BindRX dials the netdev family for the one request; the binding keeps a
// socket of its own.
func (host) BindRX(ifindex, dmabufFD int, queues []uint32) (*Binding, error) {
	c, err := netdev.Dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.BindRX(ifindex, dmabufFD, queues)
}

// BindTX dials the netdev family for the one request.
func (host) BindTX(ifindex, dmabufFD int) (*Binding, error) {
	c, err := netdev.Dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.BindTX(ifindex, dmabufFD)
}

func (host) open(conn net.Conn) (socket, error) {
	return openHostSocket(conn)
}

// aLongTimeAgo is a deadline in the past, used to interrupt blocked calls.
var aLongTimeAgo = time.Unix(1, 0)

// hostSocket makes the devmem socket calls on a connection's descriptor
// through syscall.RawConn, so that EAGAIN parks the goroutine in the Go
// netpoller instead of blocking a thread.
//
// The msghdr and iovec the kernel reads are fields of this heap object, and
// the syscall closures are bound once, so the calls do not allocate.
type hostSocket struct {
	conn net.Conn
	rc   syscall.RawConn

	msg   uapi.Msghdr
	iov   uapi.Iovec
	flags int
	opt   []byte
	r     uintptr
	errno unix.Errno

	recvFn     func(fd uintptr) bool
	sendFn     func(fd uintptr) bool
	errqFn     func(fd uintptr) bool
	errqCtlFn  func(fd uintptr)
	dontneedFn func(fd uintptr)
}

func openHostSocket(conn net.Conn) (*hostSocket, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("%w: %T has no file descriptor", ErrNotSupported, conn)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, &OpError{Subsystem: "devmem", Op: "open socket", Err: err}
	}
	s := &hostSocket{conn: conn, rc: rc}
	s.recvFn = s.doRecvmsg
	s.sendFn = s.doSendmsg
	s.errqFn = s.doErrqueue
	s.errqCtlFn = func(fd uintptr) { s.doErrqueue(fd) }
	s.dontneedFn = s.doDontneed
	return s, nil
}

func (s *hostSocket) watch(ctx context.Context) func() {
	return watchDeadline(ctx, s.conn, nil)
}

// watchDeadline makes blocked calls on conn return once ctx is done by
// moving conn's deadline into the past (and running also, if not nil);
// stop undoes that.
func watchDeadline(ctx context.Context, conn net.Conn, also func()) func() {
	if ctx.Done() == nil {
		return func() {}
	}
	fired := make(chan struct{})
	stopAfter := context.AfterFunc(ctx, func() {
		_ = conn.SetDeadline(aLongTimeAgo)
		if also != nil {
			also()
		}
		close(fired)
	})
	return func() {
		if !stopAfter() {
			<-fired
			_ = conn.SetDeadline(time.Time{})
		}
	}
}

func (s *hostSocket) setBuffers(p, oob []byte) {
	s.msg = uapi.Msghdr{}
	if len(p) > 0 {
		s.iov = uapi.Iovec{Base: uintptr(unsafe.Pointer(&p[0])), Len: uintptr(len(p))}
		s.msg.Iov = &s.iov
		s.msg.Iovlen = 1
	}
	if len(oob) > 0 {
		s.msg.Control = &oob[0]
		s.msg.Controllen = uintptr(len(oob))
	}
}

func (s *hostSocket) doRecvmsg(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&s.msg)), uintptr(s.flags))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if s.flags&unix.MSG_DONTWAIT == 0 {
				return false // wait in the netpoller
			}
		}
		s.r, s.errno = r, e
		return true
	}
}

func (s *hostSocket) recvmsg(p, oob []byte, flags int) (n, oobn, rflags int, err error) {
	s.setBuffers(p, oob)
	s.flags = flags
	err = s.rc.Read(s.recvFn)
	runtime.KeepAlive(p)
	if err != nil {
		return 0, 0, 0, &OpError{Subsystem: "devmem", Op: "recvmsg", Err: err}
	}
	if s.errno != 0 {
		return 0, 0, 0, &OpError{Subsystem: "devmem", Op: "recvmsg", Err: s.errno}
	}
	return int(s.r), int(s.msg.Controllen), int(s.msg.Flags), nil
}

func (s *hostSocket) doDontneed(fd uintptr) {
	var p unsafe.Pointer
	if len(s.opt) > 0 {
		p = unsafe.Pointer(&s.opt[0])
	}
	for {
		// x/sys's Setsockopt discards the return value, which is the
		// number of frags freed: call the system call directly.
		r, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_DEVMEM_DONTNEED, uintptr(p), uintptr(len(s.opt)), 0)
		if e == unix.EINTR {
			continue
		}
		s.r, s.errno = r, e
		return
	}
}

func (s *hostSocket) dontneed(opt []byte) (int, error) {
	s.opt = opt
	err := s.rc.Control(s.dontneedFn)
	s.opt = nil
	if err != nil {
		return 0, &OpError{Subsystem: "devmem", Op: "setsockopt SO_DEVMEM_DONTNEED", Err: err}
	}
	if s.errno != 0 {
		return 0, &OpError{Subsystem: "devmem", Op: "setsockopt SO_DEVMEM_DONTNEED", Err: s.errno}
	}
	return int(s.r), nil
}

func (s *hostSocket) setZerocopy() error {
	var serr error
	err := s.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ZEROCOPY, 1)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return &OpError{Subsystem: "devmem", Op: "setsockopt SO_ZEROCOPY", Err: err}
	}
	return nil
}

func (s *hostSocket) doSendmsg(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&s.msg)), uintptr(s.flags))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		s.r, s.errno = r, e
		return true
	}
}

func (s *hostSocket) sendmsg(iov []uapi.Iovec, control []byte, flags int) (int, error) {
	s.msg = uapi.Msghdr{}
	if len(iov) > 0 {
		s.msg.Iov = &iov[0]
		s.msg.Iovlen = uintptr(len(iov))
	}
	if len(control) > 0 {
		s.msg.Control = &control[0]
		s.msg.Controllen = uintptr(len(control))
	}
	s.flags = flags
	err := s.rc.Write(s.sendFn)
	runtime.KeepAlive(iov)
	runtime.KeepAlive(control)
	if err != nil {
		return 0, &OpError{Subsystem: "devmem", Op: "sendmsg", Err: err}
	}
	if s.errno != 0 {
		return 0, &OpError{Subsystem: "devmem", Op: "sendmsg", Err: s.errno}
	}
	return int(s.r), nil
}

func (s *hostSocket) doErrqueue(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&s.msg)), unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			s.r, s.errno = 0, e
			return false
		}
		s.r, s.errno = r, e
		return true
	}
}

// recvErrqueue waits through RawConn.Write, not Read: the error queue
// signals EPOLLERR, which the Go netpoller reports to writers as well as
// readers, but an event carrying EPOLLERR alone (a full send buffer and a
// pending completion) makes the next read wait fail with ErrNotPollable.
func (s *hostSocket) recvErrqueue(oob []byte, wait bool) (int, error) {
	s.setBuffers(nil, oob)
	var err error
	if wait {
		err = s.rc.Write(s.errqFn)
	} else {
		err = s.rc.Control(s.errqCtlFn)
	}
	runtime.KeepAlive(oob)
	if err != nil {
		return 0, &OpError{Subsystem: "devmem", Op: "recvmsg MSG_ERRQUEUE", Err: err}
	}
	if s.errno != 0 {
		return 0, &OpError{Subsystem: "devmem", Op: "recvmsg MSG_ERRQUEUE", Err: s.errno}
	}
	if s.msg.Flags&unix.MSG_CTRUNC != 0 {
		return 0, &OpError{Subsystem: "devmem", Op: "recvmsg MSG_ERRQUEUE", Err: unix.ENOBUFS, Message: "control message truncated"}
	}
	return int(s.msg.Controllen), nil
}

func (s *hostSocket) close() error { return nil }
