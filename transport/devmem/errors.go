package devmem

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// ErrNotSupported reports that devmem TCP cannot be used: the system is not
// Linux, the kernel lacks the feature, or the device or driver cannot do it
// (the kernel's EOPNOTSUPP). Errors satisfying errors.Is(err, ErrNotSupported)
// mean "fall back to plain TCP", never "retry".
var ErrNotSupported = errors.New("devmem: not supported")

// Errors of the devmem data path.
var (
	// ErrMalformed: bytes from the kernel (control messages, error-queue
	// messages, netlink attributes) do not have the kernel's encoding.
	ErrMalformed = errors.New("devmem: malformed kernel message")

	// ErrNotDevmem: recvmsg(MSG_SOCK_DEVMEM) returned payload without
	// devmem control messages, so the bytes landed in host memory. The flow
	// is not steered to a queue bound to a dmabuf, or the binding was
	// closed (the queue is then restarted without a memory provider).
	ErrNotDevmem = errors.New("devmem: payload arrived without devmem cmsgs (flow not steered to a bound RX queue, or the binding is gone)")

	// ErrFlowSteering: a frag belongs to a different binding than the one
	// the receiver was set up for (ncdevmem calls this "flow steering
	// error").
	ErrFlowSteering = errors.New("devmem: flow steering error: frag from another dmabuf binding")

	// ErrBindingClosed: the binding was closed (unbound) while in use.
	ErrBindingClosed = errors.New("devmem: binding closed")

	// ErrTokenLeak: tokens (RX) or buffers (TX) were still held when they
	// should all have been returned, or the kernel freed fewer frags than
	// were returned to it.
	ErrTokenLeak = errors.New("devmem: token leak")

	// ErrClosed: the receiver or sender was used after Close.
	ErrClosed = errors.New("devmem: use of closed receiver or sender")
)

// An OpError is a failed kernel operation: a netlink request of the netdev
// family or a devmem socket call. It keeps the operation, the errno and,
// for netlink, the extended acknowledgement the kernel attached.
type OpError struct {
	// Op names the operation: a netdev command ("bind-rx", "queue-get",
	// ...) or a socket call ("recvmsg", "setsockopt SO_DEVMEM_DONTNEED",
	// "sendmsg", ...).
	Op string

	// Err is the underlying error, a syscall.Errno (unix.Errno) for errors
	// reported by the kernel. Use errors.Is to inspect it.
	Err error

	// Message and Offset are the kernel's extended acknowledgement
	// (NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS): a human-readable reason and
	// the byte offset of the offending attribute in the request. They are
	// empty when the kernel sent none.
	Message string
	Offset  int
}

// Error formats the operation, the errno and the kernel's message.
func (e *OpError) Error() string {
	if e == nil {
		return "<nil>"
	}
	var sb strings.Builder
	sb.WriteString("devmem: ")
	sb.WriteString(e.Op)
	sb.WriteString(": ")
	if e.Err != nil {
		sb.WriteString(e.Err.Error())
	} else {
		sb.WriteString("unknown error")
	}
	if errno, ok := e.Err.(syscall.Errno); ok {
		fmt.Fprintf(&sb, " (errno %d)", int(errno))
	}
	if e.Message != "" {
		fmt.Fprintf(&sb, ": kernel says %q", e.Message)
	}
	if e.Offset != 0 {
		fmt.Fprintf(&sb, " (attribute at offset %d)", e.Offset)
	}
	return sb.String()
}

// Unwrap returns e.Err.
func (e *OpError) Unwrap() error { return e.Err }

// Is maps errnos to portable sentinels: EPERM matches os.ErrPermission,
// ENODEV matches os.ErrNotExist and EOPNOTSUPP matches ErrNotSupported. The
// errno itself, and what syscall.Errno maps it to (ENOENT to
// os.ErrNotExist, EACCES to os.ErrPermission, ...), match through Unwrap.
func (e *OpError) Is(target error) bool {
	errno, ok := e.Err.(syscall.Errno)
	if !ok {
		return false
	}
	switch target {
	case os.ErrPermission:
		return errno == syscall.EPERM
	case os.ErrNotExist:
		return errno == syscall.ENODEV
	case ErrNotSupported:
		return errno == syscall.EOPNOTSUPP
	}
	return false
}
