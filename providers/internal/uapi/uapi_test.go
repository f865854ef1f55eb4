package uapi

import (
	"runtime"
	"testing"
	"unsafe"
)

func TestLayouts(t *testing.T) {
	var c UdmabufCreate
	if s := unsafe.Sizeof(c); s != 24 {
		t.Errorf("sizeof(struct udmabuf_create) = %d, want 24", s)
	}
	for name, got := range map[string]uintptr{
		"memfd":  unsafe.Offsetof(c.Memfd),
		"flags":  unsafe.Offsetof(c.Flags),
		"offset": unsafe.Offsetof(c.Offset),
		"size":   unsafe.Offsetof(c.Size),
	} {
		want := map[string]uintptr{"memfd": 0, "flags": 4, "offset": 8, "size": 16}[name]
		if got != want {
			t.Errorf("offsetof(udmabuf_create.%s) = %d, want %d", name, got, want)
		}
	}
	if s := unsafe.Sizeof(DmaBufSync{}); s != 8 {
		t.Errorf("sizeof(struct dma_buf_sync) = %d, want 8", s)
	}
}

func TestIoctlNumbers(t *testing.T) {
	// The encoded sizes must be the structs' sizes.
	if got := (UdmabufCreateIoctl >> iocSizeShift) & (1<<iocSizeBits - 1); got != unsafe.Sizeof(UdmabufCreate{}) {
		t.Errorf("UDMABUF_CREATE encodes size %d, struct is %d", got, unsafe.Sizeof(UdmabufCreate{}))
	}
	if got := (DmaBufIoctlSync >> iocSizeShift) & (1<<iocSizeBits - 1); got != unsafe.Sizeof(DmaBufSync{}) {
		t.Errorf("DMA_BUF_IOCTL_SYNC encodes size %d, struct is %d", got, unsafe.Sizeof(DmaBufSync{}))
	}
	// Type and nr (the low two bytes) are the same on every architecture.
	if got := UdmabufCreateIoctl & 0xffff; got != 'u'<<8|0x42 {
		t.Errorf("UDMABUF_CREATE type and nr = %#x, want 0x7542", got)
	}
	if got := DmaBufIoctlSync & 0xffff; got != 'b'<<8 {
		t.Errorf("DMA_BUF_IOCTL_SYNC type and nr = %#x, want 0x6200 (nr 0)", got)
	}
	switch runtime.GOARCH {
	case "amd64", "arm64", "386", "arm", "riscv64", "s390x", "loong64":
		if UdmabufCreateIoctl != 0x40187542 {
			t.Errorf("UDMABUF_CREATE = %#x, want 0x40187542", UdmabufCreateIoctl)
		}
		if DmaBufIoctlSync != 0x40086200 {
			t.Errorf("DMA_BUF_IOCTL_SYNC = %#x, want 0x40086200", DmaBufIoctlSync)
		}
	}
}
