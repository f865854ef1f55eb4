// Package devmem is the kernel side of the devmem TCP transport: payload
// moves between the network and dmabufs (accelerator or udmabuf memory)
// without passing through host memory (Linux 6.12+ RX, 6.16+ TX).
//
// # Pieces
//
//   - Package netdev (transport/devmem/netdev) speaks the kernel's netdev
//     generic netlink family: device, queue, page-pool and queue-statistics
//     dumps, and bind-rx / bind-tx, which return a Binding owning the
//     netlink socket whose closing is the unbind. Binding and BindingKind
//     are aliases of netdev's, and netdev.ErrMalformed is ErrMalformed.
//   - ParseCmsgs and ParseErrqueue decode what recvmsg(MSG_SOCK_DEVMEM) and
//     recvmsg(MSG_ERRQUEUE) return; they are portable, allocation-free and
//     fuzzed.
//   - TokenBatcher returns RX tokens with SO_DEVMEM_DONTNEED, coalesced and
//     within the kernel's limits, and keeps the books.
//   - CompletionTracker maps MSG_ZEROCOPY completions to the buffers their
//     sends used; BufferPool recycles those buffers.
//   - Receiver (RX) and Sender (TX) are the per-connection data paths, and
//     RecvTransport / SendTransport plug them into the engine.
//   - Kernel is the seam between the data paths and the kernel: Host() makes
//     the real calls (binding through a netdev.Client), a *SoftNIC performs
//     them in user space with the kernel's encodings so the transport runs
//     where no NIC can do devmem.
//
// # Errors
//
// Kernel failures are *OpError values carrying the operation, the errno and
// the kernel's extended acknowledgement. errors.Is maps EOPNOTSUPP to
// ErrNotSupported, ENODEV to os.ErrNotExist and EPERM to os.ErrPermission.
// On systems other than Linux every kernel operation fails with an error
// wrapping ErrNotSupported.
//
// # Privileges
//
// bind-rx needs CAP_NET_ADMIN (in the initial user namespace on 6.12-6.18);
// bind-tx needs none. Socket calls need no privilege.
//
// See docs/devmem.md for the design, what the software NIC does and does not
// reproduce, and what was verified on the running kernel.
package devmem
