package devmem

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

// hostDmabufSync issues DMA_BUF_IOCTL_SYNC, retrying on EINTR and EAGAIN
// (dma_buf_ioctl returns them while waiting for fences).
func hostDmabufSync(fd int, flags uint64) error {
	arg := uapi.DmaBufSync{Flags: flags}
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uapi.DmaBufIoctlSync, uintptr(unsafe.Pointer(&arg)))
		switch errno {
		case 0:
			return nil
		case unix.EINTR, unix.EAGAIN:
			continue
		}
		return errno
	}
}
