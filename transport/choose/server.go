package choose

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/devmem"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// ServerOptions describe blockd's send side.
type ServerOptions struct {
	Mode Mode
	// Listen is the address blockd serves on; with Interface empty, the
	// devmem interface is the one that owns its IP.
	Listen string
	// Interface names the devmem NIC explicitly.
	Interface string
	// OpenProvider opens the provider of the TX dmabuf (a udmabuf plugin
	// on real hardware). It is called only once the NIC qualifies, and the
	// provider is closed with the path, so a server that falls back to TCP
	// keeps no plugin running. Nil means no provider: TCP.
	OpenProvider func() (memory.Provider, error)
	// PoolSize is the TX buffer pool, the bound dmabuf, in bytes
	// (default 64 MiB), carved into 256 KiB buffers.
	PoolSize  int64
	Emulation devmem.SoftNICConfig
	// EmulationPool is the memory the software NIC's TX pool lives in
	// under Mode Emulate (blockd passes host memory); it must have
	// mappable buffers. The caller owns and closes it.
	EmulationPool memory.Provider
	Logger        *slog.Logger
}

// ServerPath is the chosen send transport and what it holds. Its Close
// releases the binding and the pool memory; call it after the server has
// stopped.
type ServerPath struct {
	Transport      transport.SendTransport
	FallbackReason string
	undoStack
}

// txBufSize is the size of one TX pool buffer.
const txBufSize = 256 << 10

// Server chooses blockd's send transport.
func Server(ctx context.Context, o ServerOptions) (*ServerPath, error) {
	if o.PoolSize == 0 {
		o.PoolSize = 64 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	path := &ServerPath{}
	switch o.Mode {
	case Off:
		path.Transport = &tcp.Transport{}
		return path, nil
	case Emulate:
		if err := path.emulate(ctx, o); err != nil {
			path.Close()
			return nil, fmt.Errorf("devmem emulation: %w", err)
		}
		return path, nil
	}
	fb, err := path.hardware(ctx, o)
	reason, derr := decide(o.Mode, fb)
	if err != nil || derr != nil || fb != nil {
		path.Close()
		if err = errors.Join(err, derr); err != nil {
			return nil, err
		}
		return &ServerPath{Transport: &tcp.Transport{}, FallbackReason: reason}, nil
	}
	return path, nil
}

// emulate sends through the software NIC from a memfd pool.
func (s *ServerPath) emulate(ctx context.Context, o ServerOptions) error {
	soft, err := devmem.NewSoftNIC(o.Emulation)
	if err != nil {
		return err
	}
	p := o.EmulationPool
	if p == nil {
		return errors.New("no provider for the emulated TX pool")
	}
	mapper, ok := p.(memory.Mapper)
	if !ok {
		return fmt.Errorf("provider %s has no mappable buffers for the emulated TX pool", p.Name())
	}
	buf, fd, err := arenaFD(p, func(dmabuf bool) (memory.Buffer, error) { return p.Alloc(ctx, o.PoolSize, dmabuf) })
	if err != nil {
		return err
	}
	s.push(func() error { return p.Free(context.Background(), buf.ID) })
	mem, err := mapper.Bytes(buf.ID)
	if err != nil {
		return err
	}
	ifindex := o.Emulation.Ifindex
	if ifindex == 0 {
		ifindex = 1
	}
	bind, err := soft.BindTX(ifindex, fd)
	if err != nil {
		return err
	}
	s.push(bind.Close)
	pool, err := devmem.NewBufferPool(0, o.PoolSize, txBufSize)
	if err != nil {
		return err
	}
	s.Transport = &devmem.SendTransport{Kernel: soft, Binding: bind, Pool: pool, Mem: mem}
	return nil
}

// hardware tries devmem TX on the serving NIC from a provider's dmabuf.
func (s *ServerPath) hardware(ctx context.Context, o ServerOptions) (*fallback, error) {
	ifc, fb := s.serverInterface(o)
	if fb != nil {
		return fb, nil
	}
	if o.OpenProvider == nil {
		return fallbackf("no-udmabuf", "no provider for the TX pool"), nil
	}
	p, err := o.OpenProvider()
	if err != nil {
		return fallbackf("no-udmabuf", "TX pool provider: %s", oneLine(err)), nil
	}
	s.push(p.Close)
	buf, mem, fb := s.txPool(ctx, p, o.PoolSize)
	if fb != nil {
		return fb, nil
	}
	k := devmem.Host()
	bind, err := k.BindTX(ifc.Index, buf.DmabufFD)
	if err != nil {
		return fallbackf("no-binding", "bind-tx %s: %s", ifc.Name, oneLine(err)), nil
	}
	s.push(bind.Close)
	pool, err := devmem.NewBufferPool(0, o.PoolSize, txBufSize)
	if err != nil {
		return nil, err
	}
	// No SO_BINDTODEVICE on the accepted data connections: set after the
	// connection exists it resets the socket's cached route, and kernels
	// 6.16 and 6.17 without "net: devmem: refresh devmem TX dst in case of
	// route invalidation" then fail the first devmem send with ENODEV. The
	// kernel refuses a devmem send whose route leaves through another
	// device than the binding's, so the bind added nothing.
	s.Transport = txTransport(k, bind, pool, mem, buf.DmabufFD)
	o.Logger.Info("devmem tx", "interface", ifc.Name, "binding", bind.ID(), "pool", o.PoolSize)
	return nil, nil
}

// txPool allocates the TX pool from p as a dmabuf and maps it: the server
// fills pool buffers from disk through that CPU mapping. A provider whose
// dmabufs the CPU cannot map (a GPU's: the NVIDIA exporter refuses mmap) is
// turned away before it allocates, with what to use instead.
func (s *ServerPath) txPool(ctx context.Context, p memory.Provider, size int64) (memory.Buffer, []byte, *fallback) {
	none := memory.Buffer{DmabufFD: -1}
	caps := p.Capabilities()
	if !caps.DmabufExport {
		return none, nil, fallbackf("no-udmabuf", "provider %s cannot export a dmabuf for the TX pool (use the udmabuf provider on a kernel with CONFIG_UDMABUF)", p.Name())
	}
	if caps.Kind == memory.GPU {
		return none, nil, fallbackf("no-udmabuf", "provider %s: GPU dmabufs cannot be mapped by the CPU: use host or udmabuf memory for the TX pool (--tx-provider udmabuf), which blockd fills from disk through a CPU mapping", p.Name())
	}
	buf, err := p.Alloc(ctx, size, true)
	if err != nil {
		return none, nil, fallbackf("no-udmabuf", "%s: %s", p.Name(), oneLine(err))
	}
	s.push(func() error { return p.Free(context.Background(), buf.ID) })
	mem, err := unix.Mmap(buf.DmabufFD, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return none, nil, fallbackf("no-udmabuf", "the %s dmabuf cannot be mapped by the CPU (mmap: %s): use host or udmabuf memory for the TX pool (--tx-provider udmabuf), which blockd fills from disk through a CPU mapping", p.Name(), oneLine(err))
	}
	s.push(func() error { return unix.Munmap(mem) })
	return buf, mem, nil
}

// txTransport sends from the TX pool mapped at mem, inside the dmabuf
// dmabufFD bound by bind. Each fill of pool buffers through mem is
// bracketed with DMA_BUF_IOCTL_SYNC (devmem.TXConfig.Sync), so that a NIC
// on a non-coherent system reads what the CPU wrote.
func txTransport(k devmem.Kernel, bind *devmem.Binding, pool *devmem.BufferPool, mem []byte, dmabufFD int) *devmem.SendTransport {
	return &devmem.SendTransport{Kernel: k, Binding: bind, Pool: pool, Mem: mem,
		Config: devmem.TXConfig{Sync: devmem.NewDmabufSync(dmabufFD)}}
}

// serverInterface finds the devmem NIC from --devmem-if or the listen IP.
func (s *ServerPath) serverInterface(o ServerOptions) (*net.Interface, *fallback) {
	if o.Interface != "" {
		ifc, err := net.InterfaceByName(o.Interface)
		if err != nil {
			return nil, fallbackf("no-interface", "%s: %s", o.Interface, oneLine(err))
		}
		return ifc, loopback(ifc)
	}
	host, _, err := net.SplitHostPort(o.Listen)
	ip := net.ParseIP(host)
	if err != nil || ip == nil || ip.IsUnspecified() {
		return nil, fallbackf("no-interface", "listening on %q names no interface: pass --devmem-if", o.Listen)
	}
	ifc, err := ifaceFor(ip)
	if err != nil {
		return nil, fallbackf("no-interface", "%s", oneLine(err))
	}
	return ifc, loopback(ifc)
}
