package uapi

// DmaBufSync is struct dma_buf_sync (include/uapi/linux/dma-buf.h), the
// argument of DMA_BUF_IOCTL_SYNC.
type DmaBufSync struct {
	Flags uint64
}

// DMA_BUF_IOCTL_SYNC flags: CPU access to a dmabuf's mapping is bracketed
// with DmaBufSyncStart|mode before and DmaBufSyncEnd|mode after, so that on
// a non-coherent system (arm64) the caches are invalidated and written back
// for the device.
const (
	DmaBufSyncRead  = 1 << 0
	DmaBufSyncWrite = 1 << 1
	DmaBufSyncRW    = DmaBufSyncRead | DmaBufSyncWrite
	DmaBufSyncStart = 0 << 2
	DmaBufSyncEnd   = 1 << 2
)

// SizeofDmaBufSync is sizeof(struct dma_buf_sync).
const SizeofDmaBufSync = 8

// DmaBufIoctlSync is DMA_BUF_IOCTL_SYNC, _IOW('b', 0, struct dma_buf_sync):
// 0x40086200 on the asm-generic architectures (x86, arm64, riscv, s390),
// 0x80086200 on powerpc and mips. Its nr is 0.
const DmaBufIoctlSync uintptr = iocWrite<<iocDirShift | SizeofDmaBufSync<<iocSizeShift | 'b'<<iocTypeShift

// The _IOC encoding (include/uapi/asm-generic/ioctl.h); iocWrite and
// iocSizeBits differ on powerpc and mips (ioc_*.go).
const (
	iocTypeShift = 8
	iocSizeShift = 16
	iocDirShift  = iocSizeShift + iocSizeBits
)
