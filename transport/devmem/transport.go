package devmem

import (
	"errors"
	"fmt"
	"net"

	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport"
)

// RecvTransport is the devmem transport.RecvTransport: every data connection
// it prepares receives into one RX binding, whose dmabuf is the provider
// buffer Arena.
//
// The engine sets it up once per (device, provider): it allocates the arena
// with Provider.Alloc(ctx, size, true), binds Buffer.DmabufFD with
// Kernel.BindRX on the queues its flow-steering rules send the data
// connections to, and then creates receivers per connection. Config's
// FragBudget must be partitioned: the budgets of all live receivers
// together must stay below the arena's 4 KiB chunks.
type RecvTransport struct {
	Kernel  Kernel
	Binding *Binding
	Arena   memory.BufferID
	// Config is the template of every receiver's RXConfig; Kernel,
	// Binding, Arena, Gather and CopyIn are filled in.
	Config RXConfig
	// Steer, if set, steers a data connection's flow to the bound queue
	// before its receiver is made: an ntuple rule on hardware,
	// SoftNIC.Steer under emulation.
	Steer func(conn net.Conn) error
}

// Name returns transport.Devmem or transport.DevmemEmulated.
func (t *RecvTransport) Name() string { return t.Kernel.Name() }

// NewReceiver returns a *Receiver gathering through p.
func (t *RecvTransport) NewReceiver(conn net.Conn, p memory.Provider) (transport.Receiver, error) {
	if p == nil {
		return nil, errors.New("devmem: nil provider")
	}
	if t.Steer != nil {
		if err := t.Steer(conn); err != nil {
			return nil, fmt.Errorf("devmem: steer %s: %w", conn.LocalAddr(), err)
		}
	}
	cfg := t.Config
	cfg.Kernel, cfg.Binding, cfg.Arena = t.Kernel, t.Binding, t.Arena
	cfg.Gather, cfg.CopyIn = p.Gather, p.CopyIn
	return NewReceiver(conn, cfg)
}

// SendTransport is the devmem transport.SendTransport: every data connection
// sends from buffers of Pool, inside the TX binding's dmabuf, mapped at Mem.
type SendTransport struct {
	Kernel  Kernel
	Binding *Binding
	Pool    *BufferPool
	Mem     []byte
	// Config is the template of every sender's TXConfig; Kernel, Binding,
	// Pool and Mem are filled in.
	Config TXConfig
}

// Name returns transport.Devmem or transport.DevmemEmulated.
func (t *SendTransport) Name() string { return t.Kernel.Name() }

// NewSender returns a *Sender for conn.
func (t *SendTransport) NewSender(conn net.Conn) (transport.Sender, error) {
	cfg := t.Config
	cfg.Kernel, cfg.Binding, cfg.Pool, cfg.Mem = t.Kernel, t.Binding, t.Pool, t.Mem
	return NewSender(conn, cfg)
}

var (
	_ transport.RecvTransport = (*RecvTransport)(nil)
	_ transport.SendTransport = (*SendTransport)(nil)
)
