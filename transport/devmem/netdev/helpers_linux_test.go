//go:build linux

package netdev_test

import (
	"testing"

	"github.com/blockxfer/blockxfer/internal/fdcount"
	"golang.org/x/sys/unix"
)

// leakCheck fails the test if it leaves file descriptors open: every
// netlink socket a Client or a Binding opened must be closed.
func leakCheck(t testing.TB) {
	t.Helper()
	fds := fdcount.Open(t)
	t.Cleanup(func() {
		if n := fdcount.Open(t); n != fds {
			t.Errorf("fd leak: %d open before, %d after", fds, n)
		}
	})
}

// memfd returns a memfd of size bytes, standing for a dmabuf, closed at
// cleanup.
func memfd(t testing.TB, size int) (int, []byte) {
	t.Helper()
	fd, err := unix.MemfdCreate("netdev-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = unix.Munmap(mem)
		_ = unix.Close(fd)
	})
	return fd, mem
}
