package memfd

import (
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Populate makes every page of the mapping mem resident and writable, so
// that the first bytes written into it take no page fault: madvise
// MADV_POPULATE_WRITE (Linux 5.14). Where the kernel does not know that
// advice (EINVAL), it touches each page with an atomic add of zero, which
// faults the page in for writing and keeps its bytes. Other errors (ENOMEM:
// no memory for the pages) are returned.
func Populate(mem []byte) error {
	if len(mem) == 0 {
		return nil
	}
	err := unix.Madvise(mem, unix.MADV_POPULATE_WRITE)
	if err == nil {
		return nil
	}
	if err != unix.EINVAL {
		return fmt.Errorf("memfd: populate %d bytes: %w", len(mem), os.NewSyscallError("madvise(MADV_POPULATE_WRITE)", err))
	}
	touch(mem)
	return nil
}

// touch faults every page of mem in for writing without changing a byte.
func touch(mem []byte) {
	page := os.Getpagesize()
	base := uintptr(unsafe.Pointer(unsafe.SliceData(mem)))
	// The first whole 4-byte word of each page (mem is page-aligned when it
	// is a mapping; the rounding keeps the atomic aligned otherwise).
	for off := (4 - int(base%4)) % 4; off+4 <= len(mem); off += page {
		atomic.AddUint32((*uint32)(unsafe.Pointer(&mem[off])), 0)
	}
}
