package netdev

import (
	"errors"

	"github.com/blockxfer/blockxfer/internal/syserr"
)

// ErrNotSupported reports that the system, the kernel or the device cannot
// do what was asked: the kernel has no netdev family or answered EOPNOTSUPP,
// or the program does not run on Linux. It is devmem.ErrNotSupported.
var ErrNotSupported = syserr.ErrNotSupported

// ErrMalformed reports a netlink reply that does not have the kernel's
// encoding. It is devmem.ErrMalformed, so that callers of either package
// match one error.
var ErrMalformed = errors.New("devmem: malformed kernel message")

// An OpError is a netdev request the kernel refused (see syserr.OpError for
// its fields and the sentinels it matches); its Subsystem is "netdev".
type OpError = syserr.OpError
