package netdev

import (
	"fmt"
	"io"
	"sync"
)

// A BindingKind says whether a binding feeds RX queues or serves TX.
type BindingKind int

// Binding kinds.
const (
	BindingRX BindingKind = iota + 1
	BindingTX
)

// String returns "rx" or "tx".
func (k BindingKind) String() string {
	switch k {
	case BindingRX:
		return "rx"
	case BindingTX:
		return "tx"
	}
	return fmt.Sprintf("binding-kind(%d)", int(k))
}

// A Binding is a dmabuf bound to a network device, for RX (to some RX
// queues) or TX. The binding lives exactly as long as what created it: for
// the kernel, the netlink socket that sent bind-rx or bind-tx, which the
// Binding owns and closes in Close; the kernel also unbinds if the process
// dies. Keep the Binding reachable while it is in use: if it is garbage
// collected, the socket's finalizer closes it and the dmabuf is unbound.
//
// A Binding is safe for concurrent use.
type Binding struct {
	id      uint32
	ifindex int
	kind    BindingKind
	queues  []uint32

	mu     sync.Mutex
	closer io.Closer
	done   chan struct{}
	err    error
}

// NewBinding returns a Binding of the given id, device, kind and RX queues
// that closer unbinds: Close calls closer.Close once. It is for
// implementations of bind-rx and bind-tx other than the kernel's, such as
// devmem's software NIC; a Client's bindings come from Client.BindRX and
// Client.BindTX.
func NewBinding(id uint32, ifindex int, kind BindingKind, queues []uint32, closer io.Closer) *Binding {
	return &Binding{
		id:      id,
		ifindex: ifindex,
		kind:    kind,
		queues:  append([]uint32(nil), queues...),
		closer:  closer,
		done:    make(chan struct{}),
	}
}

// ID returns the binding id the kernel assigned (>= 1). Devmem RX frags
// carry it as their dmabuf id; devmem TX sends name it in their
// SCM_DEVMEM_DMABUF control message. RX and TX bindings share one id space.
func (b *Binding) ID() uint32 { return b.id }

// Ifindex returns the device the dmabuf is bound to.
func (b *Binding) Ifindex() int { return b.ifindex }

// Kind reports whether the binding is for RX or TX.
func (b *Binding) Kind() BindingKind { return b.kind }

// Queues returns the RX queue indexes of an RX binding (nil for TX).
func (b *Binding) Queues() []uint32 { return append([]uint32(nil), b.queues...) }

// Done returns a channel that is closed when the binding is closed.
func (b *Binding) Done() <-chan struct{} { return b.done }

// Close unbinds the dmabuf: the kernel restarts the bound RX queues without
// it and frees it once the frags still held by sockets are returned. Close
// is idempotent; later calls return the first call's result.
func (b *Binding) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closer != nil {
		b.err = b.closer.Close()
		b.closer = nil
		close(b.done)
	}
	return b.err
}

// String describes the binding for logs.
func (b *Binding) String() string {
	if b.kind == BindingRX {
		return fmt.Sprintf("devmem %s binding %d on ifindex %d queues %v", b.kind, b.id, b.ifindex, b.queues)
	}
	return fmt.Sprintf("devmem %s binding %d on ifindex %d", b.kind, b.id, b.ifindex)
}
