package devmem

import (
	"context"
	"net"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

// A Kernel carries out the kernel operations of devmem TCP (docs/devmem.md):
// binding dmabufs and the devmem socket calls. Host returns the running
// kernel; NewSoftNIC returns the software NIC, which performs the same
// operations in user space with the kernel's encodings. Receivers and
// senders only talk to the kernel through a Kernel, so the same code runs
// on a devmem-capable NIC and in tests.
//
// The socket-level operations are unexported: only this package implements
// Kernel.
type Kernel interface {
	// Name is the transport name to report on results: "devmem" for the
	// running kernel, "devmem-emulated" for the software NIC.
	Name() string
	// BindRX binds a dmabuf to RX queues of a device (see
	// netdev.Client.BindRX).
	BindRX(ifindex, dmabufFD int, queues []uint32) (*Binding, error)
	// BindTX binds a dmabuf to a device for TX (see
	// netdev.Client.BindTX).
	BindTX(ifindex, dmabufFD int) (*Binding, error)

	// open prepares an established TCP connection for devmem socket
	// calls. The socket does not own conn.
	open(conn net.Conn) (socket, error)
}

// socket is the per-connection half of the seam. A socket is used by one
// goroutine at a time, except watch's cancellation which may fire from
// another.
type socket interface {
	// watch makes blocking calls return early once ctx is done (with a
	// deadline error; callers report ctx.Err()), until stop is called.
	watch(ctx context.Context) (stop func())

	// recvmsg is recvmsg(2) with one iovec p and control buffer oob. It
	// blocks until data (or EOF) is available; with MSG_DONTWAIT in flags
	// it fails with EAGAIN instead. It returns the bytes the call
	// consumed from the stream, the control bytes written, and msg_flags.
	// Errors are *OpError with the errno.
	recvmsg(p, oob []byte, flags int) (n, oobn, rflags int, err error)

	// dontneed is setsockopt(SOL_SOCKET, SO_DEVMEM_DONTNEED) with the raw
	// option bytes (struct dmabuf_token array); it returns the number of
	// frags the kernel freed (the syscall's return value).
	dontneed(opt []byte) (int, error)

	// setZerocopy is setsockopt(SOL_SOCKET, SO_ZEROCOPY, 1).
	setZerocopy() error

	// sendmsg is sendmsg(2) with the given iovecs and raw control bytes.
	// It blocks while the socket buffer is full and returns the bytes
	// accepted (possibly fewer than asked).
	sendmsg(iov []uapi.Iovec, control []byte, flags int) (int, error)

	// recvErrqueue is recvmsg(MSG_ERRQUEUE): it reads one error-queue
	// message into oob and returns the control bytes written. With wait
	// it blocks until a message arrives; without, an empty queue yields
	// EAGAIN.
	recvErrqueue(oob []byte, wait bool) (oobn int, err error)

	// close releases what open set up. It does not close the connection.
	close() error
}
