// Package uapi defines, once, the kernel ABI that golang.org/x/sys/unix
// lacks and the providers need: the udmabuf and dma-buf ioctls.
//
// Sources: include/uapi/linux/udmabuf.h and include/uapi/linux/dma-buf.h.
// Layouts are pinned by size and offset tests.
package uapi

// UdmabufCreate is struct udmabuf_create, the argument of UDMABUF_CREATE:
// wrap Size bytes at Offset of a memfd (sealed with F_SEAL_SHRINK, not
// F_SEAL_WRITE; Offset and Size page-aligned) in a new dmabuf.
type UdmabufCreate struct {
	Memfd  uint32
	Flags  uint32
	Offset uint64
	Size   uint64
}

// UdmabufFlagsCloexec makes the new dmabuf fd close-on-exec.
const UdmabufFlagsCloexec = 0x01

// DmaBufSync is struct dma_buf_sync, the argument of DMA_BUF_IOCTL_SYNC.
type DmaBufSync struct {
	Flags uint64
}

// DMA_BUF_IOCTL_SYNC flags: bracket CPU access to a dmabuf's mapping with
// Start|mode before and End|mode after.
const (
	DmaBufSyncRead  = 1 << 0
	DmaBufSyncWrite = 1 << 1
	DmaBufSyncRW    = DmaBufSyncRead | DmaBufSyncWrite
	DmaBufSyncStart = 0 << 2
	DmaBufSyncEnd   = 1 << 2
)

// ioctl request numbers, _IOW(type, nr, size).
const (
	// UdmabufCreateIoctl is UDMABUF_CREATE, _IOW('u', 0x42, struct
	// udmabuf_create) (0x40187542 on most architectures). It returns the
	// new dmabuf fd.
	UdmabufCreateIoctl uintptr = iocWrite<<iocDirShift | 24<<iocSizeShift | 'u'<<iocTypeShift | 0x42
	// DmaBufIoctlSync is DMA_BUF_IOCTL_SYNC, _IOW('b', 0, struct
	// dma_buf_sync) (0x40086200 on most architectures). Its nr is 0, so
	// the low byte (the nr field) has no bits set.
	DmaBufIoctlSync uintptr = iocWrite<<iocDirShift | 8<<iocSizeShift | 'b'<<iocTypeShift
)

// The _IOC encoding (include/uapi/asm-generic/ioctl.h); iocWrite and
// iocSizeBits differ on a few architectures.
const (
	iocTypeShift = 8
	iocSizeShift = 16
	iocDirShift  = iocSizeShift + iocSizeBits
)
