package hostmem

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mapPrivate maps size bytes of anonymous private memory, advised to use
// transparent huge pages. Where the kernel has them turned off (or
// refuses the advice) the memory works all the same in small pages.
func mapPrivate(size int64) ([]byte, error) {
	if int64(int(size)) != size {
		return nil, fmt.Errorf("%d bytes: too large for this platform", size)
	}
	mem, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	unix.Madvise(mem, unix.MADV_HUGEPAGE) // advice only: small pages otherwise
	return mem, nil
}
