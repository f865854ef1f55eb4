package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback starts writing the n bytes at off of f to its device,
// without waiting: the final sync then has little left to do, so the disk
// works while the rest of the get arrives instead of after it.
func startWriteback(f *os.File, off, n int64) {
	unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE) // advisory; the sync at the end checks
}

// settle waits until the n bytes at off of f are on its device, then drops
// them from the page cache. A write error is returned here, not by the
// final sync: waiting consumes it.
func settle(f *os.File, off, n int64) error {
	fd := int(f.Fd())
	err := unix.SyncFileRange(fd, off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
	if err != nil {
		return os.NewSyscallError("sync_file_range", err)
	}
	unix.Fadvise(fd, off, n, unix.FADV_DONTNEED) // advisory: pages still in use stay
	return nil
}
