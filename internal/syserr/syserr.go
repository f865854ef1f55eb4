// Package syserr holds the errors blockxfer's kernel-facing packages share:
// the one ErrNotSupported sentinel and the one OpError shape for a failed
// kernel operation. It imports nothing else of blockxfer, so every layer can
// use it; the public packages re-export both (devmem.ErrNotSupported,
// devmem.OpError, nic.OpError, ...) so callers never import this one.
package syserr

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
)

// ErrNotSupported reports that the operating system, the kernel, the device
// or its driver cannot do what was asked: the kernel answered EOPNOTSUPP, a
// feature is fixed off, or the program does not run on Linux. It means
// "fall back" (to plain TCP, to host memory), never "retry".
var ErrNotSupported = errors.New("not supported")

// NotOnThisOS returns an error wrapping ErrNotSupported that names what was
// asked for and the operating system it was asked on, e.g.
// "devmem: not supported on darwin".
func NotOnThisOS(what string) error {
	return fmt.Errorf("%s: %w on %s", what, ErrNotSupported, runtime.GOOS)
}

// An OpError is a failed kernel operation: a generic netlink request (the
// netdev or ethtool family), an ioctl or a socket call. It keeps the
// operation, the errno and, for netlink, the kernel's extended
// acknowledgement.
//
// errors.Is(err, ErrNotSupported) holds for EOPNOTSUPP,
// errors.Is(err, os.ErrPermission) for EPERM and EACCES, and
// errors.Is(err, os.ErrNotExist) for ENODEV; the errno itself matches
// through Unwrap.
type OpError struct {
	// Subsystem names the package that ran the operation ("devmem",
	// "netdev", "nic"); it prefixes the message.
	Subsystem string

	// Op names the operation: a netlink command ("bind-rx", "rings-set"),
	// an ioctl ("ETHTOOL_SRXCLSRLINS") or a socket call ("recvmsg",
	// "setsockopt SO_DEVMEM_DONTNEED").
	Op string

	// Ifname is the interface the operation was for; empty when it was for
	// none.
	Ifname string

	// Err is the underlying error, a syscall.Errno when the kernel refused
	// the operation.
	Err error

	// Message and Offset are the kernel's extended acknowledgement
	// (NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS): a human-readable reason and
	// the byte offset of the offending attribute in the request. They are
	// empty when the kernel sent none; ioctls and socket calls never carry
	// one.
	Message string
	Offset  int
}

// Error formats the error as
// "<subsystem>: <op> [<ifname>]: <error> (errno N): kernel says "<message>"
// (attribute at offset N)", leaving out the parts that are empty.
func (e *OpError) Error() string {
	if e == nil {
		return "<nil>"
	}
	var sb strings.Builder
	if e.Subsystem != "" {
		sb.WriteString(e.Subsystem)
		sb.WriteString(": ")
	}
	sb.WriteString(e.Op)
	if e.Ifname != "" {
		sb.WriteString(" ")
		sb.WriteString(e.Ifname)
	}
	sb.WriteString(": ")
	if e.Err != nil {
		sb.WriteString(e.Err.Error())
	} else {
		sb.WriteString("unknown error")
	}
	var errno syscall.Errno
	if errors.As(e.Err, &errno) {
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

// Is maps the errno onto the portable sentinels: EOPNOTSUPP to
// ErrNotSupported, EPERM and EACCES to os.ErrPermission, ENODEV to
// os.ErrNotExist.
func (e *OpError) Is(target error) bool {
	if e == nil {
		return false
	}
	var errno syscall.Errno
	if !errors.As(e.Err, &errno) {
		return false
	}
	switch target {
	case ErrNotSupported:
		return errno == syscall.EOPNOTSUPP
	case os.ErrPermission:
		return errno == syscall.EPERM || errno == syscall.EACCES
	case os.ErrNotExist:
		return errno == syscall.ENODEV
	}
	return false
}
