package nic

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// ErrNotSupported reports that the device, its driver, the kernel or the
// operating system cannot do what was asked: the kernel answered EOPNOTSUPP,
// a feature such as rx-ntuple-filter is fixed off, or the program does not
// run on Linux. It means "this NIC cannot carry devmem TCP as configured",
// never "retry".
var ErrNotSupported = errors.New("nic: not supported")

// ErrRestored is returned by Setup methods that change the device after
// Restore was called: a restored Setup adds no flow rules.
var ErrRestored = errors.New("nic: setup already restored")

// An OpError is a failed ethtool operation on one interface: an ethtool
// generic netlink request or a SIOCETHTOOL ioctl. It keeps the errno and, for
// netlink, the kernel's extended acknowledgement.
//
// errors.Is(err, ErrNotSupported) holds for EOPNOTSUPP,
// errors.Is(err, os.ErrPermission) for EPERM (and EACCES), and
// errors.Is(err, os.ErrNotExist) for ENODEV (no such interface).
type OpError struct {
	// Op names the operation: an ethtool netlink command ("rings-get",
	// "rings-set", "features-get", "features-set", "channels-get") or an
	// ioctl ("ETHTOOL_SRXCLSRLINS", "ETHTOOL_GRXFHINDIR", ...).
	Op string

	// Ifname is the interface the operation was for.
	Ifname string

	// Err is the underlying error, a syscall.Errno when the kernel refused
	// the operation. Use errors.Is to inspect it.
	Err error

	// Message is the kernel's extended acknowledgement text
	// (NLMSGERR_ATTR_MSG), empty when the kernel sent none. Ioctls never
	// carry one.
	Message string
}

// Error formats the error as "nic: <op> <ifname>: <errno text>", followed by
// the kernel's message when there is one.
func (e *OpError) Error() string {
	if e == nil {
		return "<nil>"
	}
	var sb strings.Builder
	sb.WriteString("nic: ")
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
	if e.Message != "" {
		sb.WriteString(" (kernel: ")
		sb.WriteString(e.Message)
		sb.WriteString(")")
	}
	return sb.String()
}

// Unwrap returns the underlying error (the errno).
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

// notSupportedError is a refusal decided by this package rather than by an
// errno: its text stands alone, and it satisfies
// errors.Is(err, ErrNotSupported).
type notSupportedError struct{ msg string }

func (e *notSupportedError) Error() string        { return e.msg + " (not supported)" }
func (e *notSupportedError) Is(target error) bool { return target == ErrNotSupported }

// notSupportedf formats a notSupportedError. format should start with
// "nic: ".
func notSupportedf(format string, args ...any) error {
	return &notSupportedError{msg: fmt.Sprintf(format, args...)}
}
