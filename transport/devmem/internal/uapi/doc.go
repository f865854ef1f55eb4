// Package uapi holds the Linux kernel ABI that devmem TCP needs and that
// golang.org/x/sys/unix does not define: the netdev generic netlink family
// (include/uapi/linux/netdev.h, generated from
// Documentation/netlink/specs/netdev.yaml), the devmem socket structures
// (include/uapi/linux/uio.h), the devmem limits of net/core/sock.c, the
// kernel-internal errno ETOOSMALL that devmem recvmsg leaks to user space,
// and DMA_BUF_IOCTL_SYNC (include/uapi/linux/dma-buf.h), which brackets the
// CPU's writes into a TX dmabuf. (providers/internal/uapi defines the same
// ioctl for the providers; internal packages cannot be shared.)
//
// Socket-level constants that x/sys does define (SO_DEVMEM_*, SCM_DEVMEM_*,
// MSG_SOCK_DEVMEM, SO_ZEROCOPY, MSG_ZEROCOPY, SO_EE_*) are re-exported here
// from x/sys on Linux, so that the architecture-specific values come from one
// place; on other systems they carry the asm-generic values so that the
// portable parsers of kernel bytes still build and can be fuzzed.
//
// The generic netlink controller's constants (GENL_ID_CTRL, CTRL_*, GENL_*)
// and the extended acknowledgement's (NLMSGERR_ATTR_*), which x/sys defines
// on Linux only, are spelled out for every GOOS so that the decoder of a
// family's operation list and the fake netdev family build everywhere; a
// Linux test pins them to x/sys.
//
// Values were checked against the headers named beside each block and, where
// a running kernel could disagree, on Linux 6.18 (see docs/devmem.md).
package uapi
