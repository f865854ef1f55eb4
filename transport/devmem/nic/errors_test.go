package nic

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

func TestOpErrorIs(t *testing.T) {
	tests := []struct {
		errno                       syscall.Errno
		notSupported, perm, noExist bool
	}{
		{errno: syscall.EOPNOTSUPP, notSupported: true},
		{errno: syscall.EPERM, perm: true},
		{errno: syscall.EACCES, perm: true},
		{errno: syscall.ENODEV, noExist: true},
		{errno: syscall.ENOENT, noExist: true}, // via syscall.Errno.Is
		{errno: syscall.EINVAL},
	}
	for _, tt := range tests {
		// Also wrapped, as callers will see it.
		for _, err := range []error{
			&OpError{Op: "rings-set", Ifname: "eth0", Err: tt.errno},
			fmt.Errorf("context: %w", &OpError{Op: "rings-set", Ifname: "eth0", Err: tt.errno}),
		} {
			if got := errors.Is(err, ErrNotSupported); got != tt.notSupported {
				t.Errorf("%v: Is(ErrNotSupported) = %v", tt.errno, got)
			}
			if got := errors.Is(err, os.ErrPermission); got != tt.perm {
				t.Errorf("%v: Is(os.ErrPermission) = %v", tt.errno, got)
			}
			if got := errors.Is(err, os.ErrNotExist); got != tt.noExist {
				t.Errorf("%v: Is(os.ErrNotExist) = %v", tt.errno, got)
			}
			if !errors.Is(err, tt.errno) {
				t.Errorf("%v: errno not reachable", tt.errno)
			}
			var oe *OpError
			if !errors.As(err, &oe) || oe.Ifname != "eth0" {
				t.Errorf("%v: errors.As failed", tt.errno)
			}
		}
	}
	if errors.Is(&OpError{Op: "x", Err: errors.New("plain")}, ErrNotSupported) {
		t.Error("a non-errno error matched ErrNotSupported")
	}
	var nilErr *OpError
	if nilErr.Is(ErrNotSupported) || nilErr.Error() != "<nil>" {
		t.Error("nil *OpError")
	}
}

func TestOpErrorString(t *testing.T) {
	for _, tt := range []struct {
		err  *OpError
		want string
	}{
		{
			&OpError{Subsystem: "nic", Op: "rings-set", Ifname: "veth0", Err: syscall.EOPNOTSUPP, Message: "setting TCP data split is not supported"},
			`nic: rings-set veth0: operation not supported (errno 95): kernel says "setting TCP data split is not supported"`,
		},
		{&OpError{Subsystem: "nic", Op: "ETHTOOL_SRXCLSRLINS", Ifname: "eth0", Err: syscall.EINVAL}, "nic: ETHTOOL_SRXCLSRLINS eth0: invalid argument (errno 22)"},
		{&OpError{Subsystem: "nic", Op: "dial"}, "nic: dial: unknown error"},
		{&OpError{Op: "recvmsg", Err: syscall.EFAULT}, "recvmsg: bad address (errno 14)"},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestNotSupportedError(t *testing.T) {
	err := notSupportedf("nic: features-set %s: %s is fixed off on this device", "veth0", FeatureNtuple)
	if !errors.Is(err, ErrNotSupported) || errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Is mapping wrong for %v", err)
	}
	if got, want := err.Error(), "nic: features-set veth0: rx-ntuple-filter is fixed off on this device (not supported)"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}
