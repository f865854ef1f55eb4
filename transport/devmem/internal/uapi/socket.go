package uapi

import "unsafe"

// DmabufCmsg is struct dmabuf_cmsg (include/uapi/linux/uio.h), the payload of
// an SCM_DEVMEM_DMABUF or SCM_DEVMEM_LINEAR control message.
//
// For SCM_DEVMEM_DMABUF every field is set. For SCM_DEVMEM_LINEAR only
// FragSize is set (the bytes copied into the iovec); the others are zero
// (net/ipv4/tcp.c tcp_recvmsg_dmabuf, 6.18).
type DmabufCmsg struct {
	FragOffset uint64 // offset into the dmabuf where the frag starts
	FragSize   uint32 // size of the frag
	FragToken  uint32 // token to return with SO_DEVMEM_DONTNEED
	DmabufID   uint32 // id of the binding the frag belongs to
	Flags      uint32 // reserved, zero
}

// DmabufToken is struct dmabuf_token (include/uapi/linux/uio.h): a run of
// TokenCount tokens starting at TokenStart, the element of the
// SO_DEVMEM_DONTNEED option array.
type DmabufToken struct {
	TokenStart uint32
	TokenCount uint32
}

// Sizes and field offsets of the structures above.
const (
	SizeofDmabufCmsg  = 24
	SizeofDmabufToken = 8

	OffsetofFragOffset = 0
	OffsetofFragSize   = 8
	OffsetofFragToken  = 12
	OffsetofDmabufID   = 16
	OffsetofFlags      = 20
)

// Limits of SO_DEVMEM_DONTNEED (net/core/sock.c): optlen must be a multiple
// of SizeofDmabufToken and at most MAX_DONTNEED_TOKENS entries, else EINVAL; at
// most MAX_DONTNEED_FRAGS tokens (sum of TokenCount) are processed per call and
// the kernel silently stops after that.
const (
	MAX_DONTNEED_TOKENS = 128
	MAX_DONTNEED_FRAGS  = 1024
)

// ETOOSMALL is the kernel-internal errno 525 (include/linux/errno.h) that
// recvmsg(MSG_SOCK_DEVMEM) returns when the control buffer cannot hold even
// one devmem cmsg (put_cmsg_notrunc, since the Feb 2025 fix of 8f0b3cc9a4c1).
// libc has no name for it.
const ETOOSMALL = 525

// DevmemPageSize is the granule of a devmem net_iov in released kernels
// (PAGE_SIZE on x86-64): an RX frag never exceeds it and a TX frag never
// crosses it.
const DevmemPageSize = 4096

// SizeofSockExtendedErr is sizeof(struct sock_extended_err)
// (include/uapi/linux/errqueue.h). unix.SockExtendedErr has the layout.
const SizeofSockExtendedErr = 16

// Cmsghdr is struct cmsghdr as Linux lays it out for this architecture:
// cmsg_len is a size_t, so the header is 16 bytes and aligned to 8 on 64-bit
// systems, 12 bytes aligned to 4 on 32-bit ones. It is defined here rather
// than taken from x/sys so that the parsers of Linux control messages work the
// same on every GOOS (and can be fuzzed anywhere).
type Cmsghdr struct {
	Len   uintptr
	Level int32
	Type  int32
}

// SizeofCmsghdr is the size of Cmsghdr (CMSG_LEN(0)).
const SizeofCmsghdr = int(unsafe.Sizeof(Cmsghdr{}))

const cmsgAlign = int(unsafe.Sizeof(uintptr(0)))

// CmsgAlign rounds n up to the control-message alignment (CMSG_ALIGN).
func CmsgAlign(n int) int { return (n + cmsgAlign - 1) &^ (cmsgAlign - 1) }

// CmsgLen is CMSG_LEN(n): the cmsg_len of a message with n payload bytes.
func CmsgLen(n int) int { return SizeofCmsghdr + n }

// CmsgSpace is CMSG_SPACE(n): the bytes a message with n payload bytes takes
// in a control buffer.
func CmsgSpace(n int) int { return SizeofCmsghdr + CmsgAlign(n) }

// Iovec is struct iovec with an integer Base. For devmem TX (sendmsg with an
// SCM_DEVMEM_DMABUF cmsg) Base is a byte offset into the bound dmabuf, not a
// pointer, so it must never be stored in a Go pointer field (the garbage
// collector and stack copier inspect those). For ordinary I/O Base holds the
// address of memory the caller keeps alive and unmoved for the call.
type Iovec struct {
	Base uintptr
	Len  uintptr
}

// Msghdr is struct msghdr (include/linux/socket.h, user layout). Iov and
// Control point to Go memory and are real pointers, so the garbage collector
// keeps that memory alive; only Iovec.Base may hold a non-address. Go's
// alignment rules insert the same padding as the C layout on every Linux
// architecture.
type Msghdr struct {
	Name       *byte
	Namelen    uint32
	Iov        *Iovec
	Iovlen     uintptr
	Control    *byte
	Controllen uintptr
	Flags      int32
}
