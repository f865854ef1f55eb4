package syserr

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

func TestOpErrorFormat(t *testing.T) {
	for _, tt := range []struct {
		err  *OpError
		want string
	}{
		{
			&OpError{Subsystem: "netdev", Op: "bind-rx", Err: syscall.EOPNOTSUPP, Message: "tcp-data-split is disabled", Offset: 20},
			`netdev: bind-rx: operation not supported (errno 95): kernel says "tcp-data-split is disabled" (attribute at offset 20)`,
		},
		{&OpError{Op: "rings-get", Ifname: "eth0", Err: fmt.Errorf("wrapped: %w", syscall.ENODEV)}, "rings-get eth0: wrapped: no such device (errno 19)"},
		{&OpError{Subsystem: "nic", Op: "dial"}, "nic: dial: unknown error"},
		{nil, "<nil>"},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestOpErrorIs(t *testing.T) {
	for _, tc := range []struct {
		errno  syscall.Errno
		target error
	}{
		{syscall.EPERM, os.ErrPermission},
		{syscall.EACCES, os.ErrPermission},
		{syscall.ENODEV, os.ErrNotExist},
		{syscall.EOPNOTSUPP, ErrNotSupported},
		{syscall.ENOENT, os.ErrNotExist},
	} {
		err := error(&OpError{Op: "x", Err: tc.errno})
		if !errors.Is(err, tc.target) || !errors.Is(err, tc.errno) {
			t.Errorf("%v does not match %v and its errno", tc.errno, tc.target)
		}
	}
	if errors.Is(&OpError{Op: "x", Err: syscall.EINVAL}, ErrNotSupported) {
		t.Error("EINVAL matches ErrNotSupported")
	}
	if errors.Is(&OpError{Op: "x", Err: errors.New("no errno")}, os.ErrPermission) {
		t.Error("an error without an errno matches os.ErrPermission")
	}
	var nilErr *OpError
	if nilErr.Is(ErrNotSupported) {
		t.Error("nil *OpError matches")
	}
}

func TestNotOnThisOS(t *testing.T) {
	err := NotOnThisOS("memfd")
	if !errors.Is(err, ErrNotSupported) {
		t.Fatalf("%v does not wrap ErrNotSupported", err)
	}
	if want := "memfd: not supported on " + runtime.GOOS; err.Error() != want || !strings.HasPrefix(err.Error(), "memfd: ") {
		t.Fatalf("Error() = %q, want %q", err.Error(), want)
	}
}
