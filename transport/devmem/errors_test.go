package devmem

import (
	"errors"
	"os"
	"syscall"
	"testing"
)

func TestOpError(t *testing.T) {
	e := &OpError{Subsystem: "devmem", Op: "bind-rx", Err: syscall.EOPNOTSUPP, Message: "tcp-data-split is disabled", Offset: 20}
	want := `devmem: bind-rx: operation not supported (errno 95): kernel says "tcp-data-split is disabled" (attribute at offset 20)`
	if e.Error() != want && syscall.EOPNOTSUPP == 95 {
		t.Errorf("Error() = %q", e.Error())
	}
	for _, tc := range []struct {
		errno  syscall.Errno
		target error
	}{
		{syscall.EPERM, os.ErrPermission},
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
}
