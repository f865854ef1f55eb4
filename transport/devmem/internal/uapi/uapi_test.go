package uapi

import (
	"testing"
	"unsafe"
)

func TestLayouts(t *testing.T) {
	var c DmabufCmsg
	var tok DmabufToken
	checks := []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(dmabuf_cmsg)", unsafe.Sizeof(c), SizeofDmabufCmsg},
		{"frag_offset", unsafe.Offsetof(c.FragOffset), OffsetofFragOffset},
		{"frag_size", unsafe.Offsetof(c.FragSize), OffsetofFragSize},
		{"frag_token", unsafe.Offsetof(c.FragToken), OffsetofFragToken},
		{"dmabuf_id", unsafe.Offsetof(c.DmabufID), OffsetofDmabufID},
		{"flags", unsafe.Offsetof(c.Flags), OffsetofFlags},
		{"sizeof(dmabuf_token)", unsafe.Sizeof(tok), SizeofDmabufToken},
		{"token_start", unsafe.Offsetof(tok.TokenStart), 0},
		{"token_count", unsafe.Offsetof(tok.TokenCount), 4},
	}
	// __u64 is 8-aligned on 64-bit ABIs (4 on i386, as in Go), so the
	// struct's alignment matches the C one in both cases.
	checks = append(checks, struct {
		name      string
		got, want uintptr
	}{"alignof(dmabuf_cmsg)", unsafe.Alignof(c), unsafe.Alignof(uint64(0))})
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestWordSizedLayouts(t *testing.T) {
	w := unsafe.Sizeof(uintptr(0))
	var m Msghdr
	var iov Iovec
	checks := []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(cmsghdr)", uintptr(SizeofCmsghdr), w + 8},
		{"sizeof(iovec)", unsafe.Sizeof(iov), 2 * w},
		{"msg_name", unsafe.Offsetof(m.Name), 0},
		{"msg_namelen", unsafe.Offsetof(m.Namelen), w},
		{"msg_iov", unsafe.Offsetof(m.Iov), 2 * w},
		{"msg_iovlen", unsafe.Offsetof(m.Iovlen), 3 * w},
		{"msg_control", unsafe.Offsetof(m.Control), 4 * w},
		{"msg_controllen", unsafe.Offsetof(m.Controllen), 5 * w},
		{"msg_flags", unsafe.Offsetof(m.Flags), 6 * w},
		{"sizeof(msghdr)", unsafe.Sizeof(m), 7 * w},
	}
	if w == 4 {
		checks[len(checks)-1].want = 28
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestCmsgSizes(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the devmem cmsg sizes of devmem-uapi.md are for 64-bit systems")
	}
	// devmem-uapi.md 2.2: 40 bytes per RX frag, CMSG_LEN(4) = 20 and
	// CMSG_SPACE(4) = 24 for the TX id.
	if got := CmsgLen(SizeofDmabufCmsg); got != 40 {
		t.Errorf("CMSG_LEN(24) = %d, want 40", got)
	}
	if got := CmsgSpace(SizeofDmabufCmsg); got != 40 {
		t.Errorf("CMSG_SPACE(24) = %d, want 40", got)
	}
	if got := CmsgLen(4); got != 20 {
		t.Errorf("CMSG_LEN(4) = %d, want 20", got)
	}
	if got := CmsgSpace(4); got != 24 {
		t.Errorf("CMSG_SPACE(4) = %d, want 24", got)
	}
}

func TestNetdevIDs(t *testing.T) {
	// Pinned against include/uapi/linux/netdev.h (libbpf mirror 4c853bf,
	// 6.16+). The running kernel's op table is checked in the devmem
	// package's real-kernel tests.
	pins := []struct {
		name      string
		got, want int
	}{
		{"NETDEV_CMD_DEV_GET", NETDEV_CMD_DEV_GET, 1},
		{"NETDEV_CMD_PAGE_POOL_GET", NETDEV_CMD_PAGE_POOL_GET, 5},
		{"NETDEV_CMD_QUEUE_GET", NETDEV_CMD_QUEUE_GET, 10},
		{"NETDEV_CMD_QSTATS_GET", NETDEV_CMD_QSTATS_GET, 12},
		{"NETDEV_CMD_BIND_RX", NETDEV_CMD_BIND_RX, 13},
		{"NETDEV_CMD_BIND_TX", NETDEV_CMD_BIND_TX, 15},
		{"NETDEV_A_QUEUE_DMABUF", NETDEV_A_QUEUE_DMABUF, 5},
		{"NETDEV_A_PAGE_POOL_DMABUF", NETDEV_A_PAGE_POOL_DMABUF, 7},
		{"NETDEV_A_QSTATS_RX_BYTES", NETDEV_A_QSTATS_RX_BYTES, 9},
		{"NETDEV_A_QSTATS_TX_WAKE", NETDEV_A_QSTATS_TX_WAKE, 34},
		{"NETDEV_A_DMABUF_FD", NETDEV_A_DMABUF_FD, 3},
		{"NETDEV_A_DMABUF_ID", NETDEV_A_DMABUF_ID, 4},
		{"ETOOSMALL", ETOOSMALL, 525},
		{"MAX_DONTNEED_TOKENS", MAX_DONTNEED_TOKENS, 128},
		{"MAX_DONTNEED_FRAGS", MAX_DONTNEED_FRAGS, 1024},
	}
	for _, p := range pins {
		if p.got != p.want {
			t.Errorf("%s = %d, want %d", p.name, p.got, p.want)
		}
	}
}

func TestSocketConstants(t *testing.T) {
	// asm-generic values (include/uapi/asm-generic/socket.h); x/sys on
	// Linux supplies them per architecture, the portable fallback must
	// agree with the asm-generic ones.
	pins := []struct {
		name      string
		got, want int
	}{
		{"SCM_DEVMEM_LINEAR", SCM_DEVMEM_LINEAR, 78},
		{"SCM_DEVMEM_DMABUF", SCM_DEVMEM_DMABUF, 79},
		{"SO_DEVMEM_DONTNEED", SO_DEVMEM_DONTNEED, 80},
		{"SO_ZEROCOPY", SO_ZEROCOPY, 60},
		{"MSG_SOCK_DEVMEM", MSG_SOCK_DEVMEM, 0x2000000},
		{"MSG_ZEROCOPY", MSG_ZEROCOPY, 0x4000000},
		{"SO_EE_ORIGIN_ZEROCOPY", SO_EE_ORIGIN_ZEROCOPY, 5},
		{"SO_EE_CODE_ZEROCOPY_COPIED", SO_EE_CODE_ZEROCOPY_COPIED, 1},
		{"IP_RECVERR", IP_RECVERR, 11},
		{"IPV6_RECVERR", IPV6_RECVERR, 25},
	}
	for _, p := range pins {
		if p.got != p.want {
			t.Errorf("%s = %#x, want %#x", p.name, p.got, p.want)
		}
	}
}
