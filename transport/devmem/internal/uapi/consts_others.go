//go:build !linux

package uapi

// Socket-level devmem and zerocopy constants with their asm-generic Linux
// values, so that the portable parsers of Linux kernel bytes build and can be
// fuzzed on every GOOS. Nothing on these systems talks to a Linux kernel.
const (
	SOL_SOCKET = 0x1
	SOL_IP     = 0x0
	SOL_IPV6   = 0x29

	SO_DEVMEM_LINEAR   = 0x4e
	SO_DEVMEM_DMABUF   = 0x4f
	SO_DEVMEM_DONTNEED = 0x50
	SCM_DEVMEM_LINEAR  = SO_DEVMEM_LINEAR
	SCM_DEVMEM_DMABUF  = SO_DEVMEM_DMABUF
	SO_ZEROCOPY        = 0x3c

	MSG_SOCK_DEVMEM = 0x2000000
	MSG_ZEROCOPY    = 0x4000000
	MSG_ERRQUEUE    = 0x2000
	MSG_TRUNC       = 0x20
	MSG_CTRUNC      = 0x8
	MSG_DONTWAIT    = 0x40

	IP_RECVERR   = 0xb
	IPV6_RECVERR = 0x19

	SO_EE_ORIGIN_ZEROCOPY      = 0x5
	SO_EE_CODE_ZEROCOPY_COPIED = 0x1
)
