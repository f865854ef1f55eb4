package choose

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/devmem"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
	"github.com/blockxfer/blockxfer/transport/devmem/nic"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// ClientOptions describe a blockcat session's receive side.
type ClientOptions struct {
	Mode     Mode
	Server   string // host:port of the blockd
	Provider memory.Provider
	// DataConns is how many data connections will share the RX binding
	// (the devmem ones; plain ones do not use it).
	DataConns int
	// ArenaSize is the RX arena (the bound dmabuf) in bytes (default 64 MiB).
	ArenaSize int64
	// Emulation configures the software NIC in Emulate mode.
	Emulation devmem.SoftNICConfig
	Logger    *slog.Logger
}

// ClientPath is the chosen receive transport and what it holds. Its Close
// unbinds, frees the arena and restores the NIC settings it changed; call it
// after the session is closed.
type ClientPath struct {
	// Transport receives the data connections' payload.
	Transport transport.RecvTransport
	// Plain receives the plain data connections a devmem session adds
	// for small reads (engine.Config.PlainTransport): plain TCP when
	// Transport is devmem, nil otherwise.
	Plain transport.RecvTransport
	// FallbackReason says why Transport is TCP in auto mode; empty
	// otherwise.
	FallbackReason string
	// FallbackErr is the error behind FallbackReason when a call failed
	// (a *devmem.OpError or nic error carries the kernel's errno and
	// extack); nil otherwise.
	FallbackErr error
	// Binding is the RX binding the devmem transport receives into; nil
	// on TCP. Closing it before the path is closed is what losing the
	// binding looks like (blockcat selftest does it).
	Binding *devmem.Binding
	// SoftNIC is the software NIC under Mode Emulate; nil otherwise.
	SoftNIC *devmem.SoftNIC
	undoStack
}

// Client chooses the receive transport for a session with o.Server.
func Client(ctx context.Context, o ClientOptions) (*ClientPath, error) {
	if o.ArenaSize == 0 {
		o.ArenaSize = 64 << 20
	}
	if o.DataConns < 1 {
		o.DataConns = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	path := &ClientPath{}
	switch o.Mode {
	case Off:
		path.Transport = &tcp.Transport{}
		return path, nil
	case Emulate:
		if err := path.emulate(ctx, o); err != nil {
			path.Close()
			return nil, fmt.Errorf("devmem emulation: %w", err)
		}
		path.Plain = &tcp.Transport{}
		return path, nil
	}
	fb, err := path.hardware(ctx, o)
	if err != nil {
		path.Close()
		return nil, err
	}
	reason, err := decide(o.Mode, fb)
	if err != nil || fb != nil {
		path.Close()
		if err != nil {
			return nil, err
		}
		o.Logger.Warn("devmem unavailable, using tcp", "reason", reason)
		return &ClientPath{Transport: &tcp.Transport{}, FallbackReason: reason, FallbackErr: fb.err}, nil
	}
	path.Plain = &tcp.Transport{}
	return path, nil
}

// budget is each receiver's frag budget: the arena's 4 KiB chunks shared by
// the data connections, with a quarter kept free for the page pool's
// refill so the NIC never starves.
func budget(arena int64, conns int) int {
	return max(16, int(arena/4096)*3/4/conns)
}

// emulate sets up devmem RX through the software NIC.
func (c *ClientPath) emulate(ctx context.Context, o ClientOptions) error {
	if o.Provider.Capabilities().Kind == memory.GPU {
		return fmt.Errorf("provider %s: GPU dmabufs cannot be mapped by the CPU: use host or udmabuf memory for --devmem emulate (the software NIC places received bytes through a CPU mapping of the arena)", o.Provider.Name())
	}
	soft, err := devmem.NewSoftNIC(o.Emulation)
	if err != nil {
		return err
	}
	arena, fd, err := arenaFD(o.Provider, func(dmabuf bool) (memory.Buffer, error) {
		return o.Provider.Alloc(ctx, o.ArenaSize, dmabuf)
	})
	if err != nil {
		return fmt.Errorf("arena: %w", err)
	}
	c.push(func() error { return o.Provider.Free(context.Background(), arena.ID) })
	ifindex := o.Emulation.Ifindex
	if ifindex == 0 {
		ifindex = 1
	}
	const queue = 0
	bind, err := soft.BindRX(ifindex, fd, []uint32{queue})
	if err != nil {
		return err
	}
	c.push(bind.Close)
	c.Binding, c.SoftNIC = bind, soft
	c.Transport = &devmem.RecvTransport{
		Kernel: soft, Binding: bind, Arena: arena.ID,
		Config: devmem.RXConfig{FragBudget: budget(o.ArenaSize, o.DataConns)},
		Steer:  func(conn net.Conn) error { return soft.Steer(conn, queue) },
	}
	return nil
}

// hardware tries devmem RX on the NIC that routes to the server. It returns
// the reason it cannot, or an error for failures that are not about devmem.
func (c *ClientPath) hardware(ctx context.Context, o ClientOptions) (*fallback, error) {
	local, ifc, err := routeTo(o.Server)
	if err != nil {
		return fallbackf("no-interface", "no route to %s: %s", o.Server, oneLine(err)), nil
	}
	if fb := loopback(ifc); fb != nil {
		return fb, nil
	}
	if !o.Provider.Capabilities().DmabufExport {
		return fallbackf("provider-cannot-export", "provider %s cannot export its memory as a dmabuf", o.Provider.Name()), nil
	}
	nd, err := netdev.Dial()
	if err != nil {
		return fallbackErr("no-netdev", err, "netdev netlink family: %s", oneLine(err)), nil
	}
	queues, err := nd.Queues(ifc.Index)
	nd.Close()
	if err != nil {
		return fallbackErr("no-binding", err, "%s: queue dump: %s", ifc.Name, oneLine(err)), nil
	}
	queue, ok := lastRXQueue(queues)
	if !ok {
		return fallbackf("no-binding", "%s has no free RX queue", ifc.Name), nil
	}
	eth, err := nic.Dial()
	if err != nil {
		return fallbackErr("nic-setup", err, "ethtool netlink: %s", oneLine(err)), nil
	}
	c.push(eth.Close)
	setup, err := eth.Apply(ifc.Name, []uint32{queue})
	if err != nil {
		return fallbackErr("nic-setup", err, "%s", oneLine(err)), nil
	}
	c.push(setup.Restore)
	arena, err := o.Provider.Alloc(ctx, o.ArenaSize, true)
	if err != nil {
		return fallbackErr("provider-cannot-export", err, "%s: %s", o.Provider.Name(), oneLine(err)), nil
	}
	c.push(func() error { return o.Provider.Free(context.Background(), arena.ID) })
	k := devmem.Host()
	bind, err := k.BindRX(ifc.Index, arena.DmabufFD, []uint32{queue})
	if err != nil {
		return fallbackErr("no-binding", err, "bind-rx %s queue %d: %s", ifc.Name, queue, oneLine(err)), nil
	}
	c.push(bind.Close)
	c.Binding = bind
	c.Transport = &devmem.RecvTransport{
		Kernel: k, Binding: bind, Arena: arena.ID,
		Config: devmem.RXConfig{FragBudget: budget(o.ArenaSize, o.DataConns)},
		Steer: func(conn net.Conn) error {
			l, r := conn.LocalAddr().(*net.TCPAddr), conn.RemoteAddr().(*net.TCPAddr)
			_, err := setup.AddConnRule(nic.FlowRule{SrcIP: r.IP, DstIP: l.IP,
				SrcPort: uint16(r.Port), DstPort: uint16(l.Port), Queue: queue})
			return err
		},
	}
	o.Logger.Info("devmem rx", "interface", ifc.Name, "local", local, "queue", queue, "binding", bind.ID())
	return nil, nil
}

// lastRXQueue picks the highest-numbered RX queue without a memory
// provider: RSS is steered away from it by nic.Setup.
func lastRXQueue(qs []netdev.Queue) (uint32, bool) {
	var best uint32
	found := false
	for _, q := range qs {
		if q.Type == netdev.QueueRX && q.DmabufID == 0 && !q.IOUring && !q.XSK && (!found || q.ID > best) {
			best, found = q.ID, true
		}
	}
	return best, found
}
