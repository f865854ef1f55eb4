package nic

import (
	"errors"
	"fmt"

	"github.com/blockxfer/blockxfer/internal/syserr"
)

// ErrNotSupported reports that the device, its driver, the kernel or the
// operating system cannot do what was asked: the kernel answered EOPNOTSUPP,
// a feature such as rx-ntuple-filter is fixed off, or the program does not
// run on Linux. It means "this NIC cannot carry devmem TCP as configured",
// never "retry".
var ErrNotSupported = syserr.ErrNotSupported

// ErrRestored is returned by Setup methods that change the device after
// Restore was called: a restored Setup adds no flow rules.
var ErrRestored = errors.New("nic: setup already restored")

// An OpError is a failed ethtool operation on one interface: an ethtool
// generic netlink request or a SIOCETHTOOL ioctl (see syserr.OpError for its
// fields and the sentinels it matches).
type OpError = syserr.OpError

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
