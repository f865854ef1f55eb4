package devmem

import (
	"errors"

	"github.com/blockxfer/blockxfer/internal/syserr"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
)

// ErrNotSupported reports that devmem TCP cannot be used: the system is not
// Linux, the kernel lacks the feature, or the device or driver cannot do it
// (the kernel's EOPNOTSUPP). Errors satisfying errors.Is(err, ErrNotSupported)
// mean "fall back to plain TCP", never "retry".
var ErrNotSupported = syserr.ErrNotSupported

// Errors of the devmem data path.
var (
	// ErrMalformed: bytes from the kernel (control messages, error-queue
	// messages, netlink attributes) do not have the kernel's encoding. It is
	// netdev.ErrMalformed, which the netdev client's decoders return.
	ErrMalformed = netdev.ErrMalformed

	// ErrNotDevmem: recvmsg(MSG_SOCK_DEVMEM) returned payload without
	// devmem control messages, so the bytes landed in host memory: a
	// packet the NIC did not header-split, a flow not steered to a queue
	// bound to a dmabuf, or a binding that was closed (the queue is then
	// restarted without a memory provider). A Receiver copies such bytes
	// in and counts them as linear; it returns ErrNotDevmem only with
	// RXConfig.RejectPlain, or wrapped with ErrBindingClosed once its
	// binding is closed.
	ErrNotDevmem = errors.New("devmem: payload arrived without devmem cmsgs (a packet the NIC did not header-split, a flow not steered to a bound RX queue, or the binding is gone)")

	// ErrFlowSteering: a frag belongs to a different binding than the one
	// the receiver was set up for (ncdevmem calls this "flow steering
	// error").
	ErrFlowSteering = errors.New("devmem: flow steering error: frag from another dmabuf binding")

	// ErrBindingClosed: the binding was closed (unbound) while in use.
	ErrBindingClosed = errors.New("devmem: binding closed")

	// ErrTokenLeak: tokens (RX) or buffers (TX) were still held when they
	// should all have been returned, or the kernel freed fewer frags than
	// were returned to it.
	ErrTokenLeak = errors.New("devmem: token leak")

	// ErrClosed: the receiver or sender was used after Close.
	ErrClosed = errors.New("devmem: use of closed receiver or sender")
)

// An OpError is a failed kernel operation: a netlink request of the netdev
// family (Subsystem "netdev") or a devmem socket call (Subsystem "devmem") (see syserr.OpError for its fields and
// the sentinels it matches).
type OpError = syserr.OpError
