// Package netdev is a client of the Linux kernel's netdev generic netlink
// family (include/uapi/linux/netdev.h): the device, queue, page-pool and
// queue-statistics dumps, the family's operation list, and bind-rx /
// bind-tx, which bind a dmabuf to a device for devmem TCP and return a
// Binding owning the netlink socket whose closing is the unbind.
//
// The attribute decoders are portable and fuzzed; the Client needs Linux. On
// other systems Dial and every Client method fail with an error wrapping
// ErrNotSupported.
//
// # Errors
//
// A request the kernel refuses fails with an *OpError (Subsystem "netdev")
// carrying the operation, the errno and the kernel's extended
// acknowledgement: Client sockets are opened in strict mode, so the kernel's
// explanation (OpError.Message) and the offset of the offending attribute
// (OpError.Offset) come back with the errno. errors.Is maps EOPNOTSUPP to
// ErrNotSupported, ENODEV to os.ErrNotExist and EPERM to os.ErrPermission.
// Replies that do not have the kernel's encoding fail with ErrMalformed.
//
// Package netdevtest serves a fake netdev family, so that the client and its
// callers can be tested without the kernel.
package netdev
