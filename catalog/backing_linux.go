//go:build linux

package catalog

import (
	"errors"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// deviceSize returns the size in bytes of the block device f, from the
// BLKGETSIZE64 ioctl or, if that fails, by seeking to its end.
func deviceSize(f *os.File) (int64, error) {
	size, err := blkGetSize64(f)
	if err == nil {
		return size, nil
	}
	end, serr := f.Seek(0, io.SeekEnd)
	if serr != nil {
		return 0, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	return end, nil
}

// blkGetSize64 returns the size in bytes of the block device f from the
// BLKGETSIZE64 ioctl.
func blkGetSize64(f *os.File) (int64, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var size uint64
	var errno unix.Errno
	err = rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size)))
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, os.NewSyscallError("ioctl BLKGETSIZE64", errno)
	}
	return int64(size), nil
}

// preallocate reserves size bytes of disk for f, so that a volume that does
// not fit fails at once with ENOSPC instead of after writing most of it. A
// file system without fallocate support is not an error.
func preallocate(f *os.File, size int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	err = rc.Control(func(fd uintptr) {
		ferr = unix.Fallocate(int(fd), 0, 0, size)
	})
	if err != nil {
		return err
	}
	if errors.Is(ferr, unix.EOPNOTSUPP) || errors.Is(ferr, unix.ENOSYS) {
		return nil
	}
	if ferr != nil {
		return os.NewSyscallError("fallocate", ferr)
	}
	return nil
}

// freeBytes returns the bytes available to unprivileged writers on the file
// system holding dir.
func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
