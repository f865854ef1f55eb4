package devmem

import "github.com/blockxfer/blockxfer/transport/devmem/netdev"

// A Binding is a dmabuf bound to a network device, for RX or TX, as
// Kernel.BindRX and Kernel.BindTX return it. It is the netdev package's
// Binding: closing it is the unbind (see netdev.Binding).
type Binding = netdev.Binding

// A BindingKind says whether a binding feeds RX queues or serves TX.
type BindingKind = netdev.BindingKind

// Binding kinds.
const (
	BindingRX = netdev.BindingRX
	BindingTX = netdev.BindingTX
)
