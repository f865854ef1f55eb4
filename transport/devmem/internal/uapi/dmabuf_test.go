package uapi

import (
	"runtime"
	"testing"
	"unsafe"
)

func TestDmaBufSync(t *testing.T) {
	if s := unsafe.Sizeof(DmaBufSync{}); s != 8 {
		t.Errorf("sizeof(struct dma_buf_sync) = %d, want 8", s)
	}
	if got := (DmaBufIoctlSync >> iocSizeShift) & (1<<iocSizeBits - 1); got != unsafe.Sizeof(DmaBufSync{}) {
		t.Errorf("DMA_BUF_IOCTL_SYNC encodes size %d, struct is %d", got, unsafe.Sizeof(DmaBufSync{}))
	}
	if got := DmaBufIoctlSync & 0xffff; got != 'b'<<8 {
		t.Errorf("DMA_BUF_IOCTL_SYNC type and nr = %#x, want 0x6200 (nr 0)", got)
	}
	want := uintptr(0x40086200) // _IOC_WRITE 1, 14 size bits
	switch runtime.GOARCH {
	case "ppc64", "ppc64le", "mips", "mipsle", "mips64", "mips64le":
		want = 0x80086200 // _IOC_WRITE 4, 13 size bits
	}
	if DmaBufIoctlSync != want {
		t.Errorf("DMA_BUF_IOCTL_SYNC = %#x, want %#x", DmaBufIoctlSync, want)
	}
	// dma-buf.h: DMA_BUF_SYNC_READ (1 << 0), _WRITE (2 << 0), _RW, _START
	// (0 << 2), _END (1 << 2).
	if DmaBufSyncRead != 1 || DmaBufSyncWrite != 2 || DmaBufSyncRW != 3 || DmaBufSyncStart != 0 || DmaBufSyncEnd != 4 {
		t.Error("DMA_BUF_SYNC_* flags differ from dma-buf.h")
	}
}
