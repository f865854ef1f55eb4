//go:build linux

package uapi

import "golang.org/x/sys/unix"

// Socket-level devmem and zerocopy constants, from x/sys for this
// architecture (include/uapi/asm-generic/socket.h, include/linux/socket.h,
// include/uapi/linux/errqueue.h).
const (
	SOL_SOCKET = unix.SOL_SOCKET
	SOL_IP     = unix.SOL_IP
	SOL_IPV6   = unix.SOL_IPV6

	SO_DEVMEM_LINEAR   = unix.SO_DEVMEM_LINEAR
	SO_DEVMEM_DMABUF   = unix.SO_DEVMEM_DMABUF
	SO_DEVMEM_DONTNEED = unix.SO_DEVMEM_DONTNEED
	SCM_DEVMEM_LINEAR  = unix.SCM_DEVMEM_LINEAR
	SCM_DEVMEM_DMABUF  = unix.SCM_DEVMEM_DMABUF
	SO_ZEROCOPY        = unix.SO_ZEROCOPY

	MSG_SOCK_DEVMEM = unix.MSG_SOCK_DEVMEM
	MSG_ZEROCOPY    = unix.MSG_ZEROCOPY
	MSG_ERRQUEUE    = unix.MSG_ERRQUEUE
	MSG_TRUNC       = unix.MSG_TRUNC
	MSG_CTRUNC      = unix.MSG_CTRUNC
	MSG_DONTWAIT    = unix.MSG_DONTWAIT

	IP_RECVERR   = unix.IP_RECVERR
	IPV6_RECVERR = unix.IPV6_RECVERR

	SO_EE_ORIGIN_ZEROCOPY      = unix.SO_EE_ORIGIN_ZEROCOPY
	SO_EE_CODE_ZEROCOPY_COPIED = unix.SO_EE_CODE_ZEROCOPY_COPIED
)
