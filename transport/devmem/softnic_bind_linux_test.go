//go:build linux

package devmem

import (
	"errors"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSoftNICBind(t *testing.T) {
	leakCheck(t)
	nic, _ := NewSoftNIC(SoftNICConfig{RXQueues: 2})
	fd, _ := memfd(t, 1<<20)
	tests := []struct {
		name    string
		bind    func() (*Binding, error)
		errno   syscall.Errno
		message string
	}{
		{"wrong device", func() (*Binding, error) { return nic.BindRX(7, fd, []uint32{0}) }, unix.ENODEV, ""},
		{"no queue", func() (*Binding, error) { return nic.BindRX(1, fd, nil) }, unix.EINVAL, ""},
		{"queue out of range", func() (*Binding, error) { return nic.BindRX(1, fd, []uint32{2}) }, unix.ERANGE, "rx queue index out of range"},
		{"bad fd", func() (*Binding, error) { return nic.BindRX(1, 9999, []uint32{0}) }, unix.EBADF, ""},
		{"tx wrong device", func() (*Binding, error) { return nic.BindTX(7, fd) }, unix.ENODEV, ""},
	}
	for _, tt := range tests {
		_, err := tt.bind()
		var oe *OpError
		if !errors.As(err, &oe) || !errors.Is(err, tt.errno) || oe.Message != tt.message {
			t.Errorf("%s: %v, want errno %v message %q", tt.name, err, tt.errno, tt.message)
		}
	}
	rx, err := nic.BindRX(1, fd, []uint32{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nic.BindRX(1, fd, []uint32{1}); !errors.Is(err, unix.EEXIST) {
		t.Errorf("second binding of queue 1 = %v, want EEXIST", err)
	}
	tx, err := nic.BindTX(1, fd)
	if err != nil {
		t.Fatal(err)
	}
	if rx.ID() != 1 || tx.ID() != 2 || rx.Kind() != BindingRX || tx.Kind() != BindingTX || rx.Ifindex() != 1 {
		t.Errorf("bindings %v, %v", rx, tx)
	}
	// Ids are cyclic: a closed id is not reused at once.
	if err := rx.Close(); err != nil {
		t.Fatal(err)
	}
	rx2, err := nic.BindRX(1, fd, []uint32{1})
	if err != nil {
		t.Fatal(err)
	}
	if rx2.ID() != 3 {
		t.Errorf("next id = %d, want 3", rx2.ID())
	}
	_ = rx2.Close()
	_ = tx.Close()
	if err := tx.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if err := nic.Check(); err != nil {
		t.Error(err)
	}
}
