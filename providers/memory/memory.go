// Package memory holds the contract between the engine and the providers of
// destination memory: a Provider hands out buffers (host, udmabuf or GPU
// memory) and moves bytes in and out of them. The package imports nothing
// else of blockxfer, so a provider plugin built against it links neither the
// engine, the catalog nor the wire protocol.
package memory

import (
	"context"
	"errors"
)

// Kind names the kind of memory a provider hands out.
type Kind string

// Memory kinds known to the engine. Plugins may report others.
const (
	Host    Kind = "host"
	Udmabuf Kind = "udmabuf"
	GPU     Kind = "gpu"
)

// Capabilities describe what a provider can do. The engine uses them to choose
// a transport per request.
type Capabilities struct {
	Kind   Kind
	Device string // e.g. "cuda:0"; empty for host memory
	// DmabufExport: Alloc can return a dmabuf fd for the buffer, so a NIC
	// can be bound to it (devmem RX/TX).
	DmabufExport bool
	// CPUMappable: the buffer's bytes are addressable by this process (see
	// Mapper), so transports may receive straight into them.
	CPUMappable bool
	// Gather: Gather is implemented on the device (not by read-back + copy-in).
	Gather bool
	// DeviceChecksum: Checksum runs on the device without a copy to the host.
	DeviceChecksum bool
	// MaxAlloc is the largest single allocation in bytes (0: no stated limit).
	MaxAlloc int64
	// ImportKinds lists the kinds of caller-owned memory the provider's
	// Import accepts (see Importer); nil when it imports nothing.
	ImportKinds []ImportKind
}

// BufferID identifies a buffer within one provider.
type BufferID uint64

// Buffer is a region of provider memory. The provider owns it until Free.
type Buffer struct {
	ID   BufferID
	Size int64
	// DmabufFD is the dmabuf exported for this buffer, or -1. The buffer owns
	// the fd: it is closed by Free.
	DmabufFD int
}

// Copy is one element of a gather: Len bytes from Src at SrcOff to Dst at
// DstOff. Src and Dst are buffers of the same provider.
type Copy struct {
	Src    BufferID
	SrcOff int64
	Dst    BufferID
	DstOff int64
	Len    int64
}

// Provider hands out accelerator (or host) memory and moves bytes in and out
// of it. The engine calls it from several goroutines at once; implementations
// must be safe for concurrent use.
type Provider interface {
	// Name identifies the provider in results, logs and metrics.
	Name() string
	// Capabilities reports what the provider can do.
	Capabilities() Capabilities
	// Alloc allocates size bytes. With dmabuf true the buffer must be
	// exportable as a dmabuf (ErrNoDmabuf if the provider cannot).
	Alloc(ctx context.Context, size int64, dmabuf bool) (Buffer, error)
	// Free releases a buffer and closes its dmabuf fd.
	Free(ctx context.Context, id BufferID) error
	// CopyIn copies host bytes src into dst at off.
	CopyIn(ctx context.Context, dst BufferID, off int64, src []byte) error
	// Gather performs a batch of device-side copies; it returns when all are
	// complete, so their sources may be reused.
	Gather(ctx context.Context, copies []Copy) error
	// ReadBack copies len(p) bytes of src at off into host memory p.
	ReadBack(ctx context.Context, src BufferID, off int64, p []byte) error
	// Checksum returns the CRC-32C (Castagnoli) of n bytes of buf at off.
	Checksum(ctx context.Context, buf BufferID, off, n int64) (uint32, error)
	// Close frees every buffer and releases the provider.
	Close() error
}

// Mapper is implemented by providers whose buffers are addressable by this
// process (Capabilities.CPUMappable). Transports use it to receive straight
// into the destination instead of through a staging buffer.
type Mapper interface {
	// Bytes returns the buffer's memory. The slice is valid until Free.
	Bytes(id BufferID) ([]byte, error)
}

// Stager is implemented by providers whose CopyIn is cheapest from memory
// they lend: host staging shared with the device side (a plugin's memfd
// slots, a GPU's pinned buffers). Transports receive into it so that the
// bytes are copied to the device without a host-side copy first.
type Stager interface {
	// Stage lends a staging buffer until release is called. It waits for
	// a free one until ctx ends.
	Stage(ctx context.Context) (mem []byte, release func(), err error)
}

// Provider errors.
var (
	// ErrNoDmabuf: the provider cannot export a dmabuf for this buffer.
	ErrNoDmabuf = errors.New("provider cannot export a dmabuf")
	// ErrUnknownBuffer: the buffer id is not (or no longer) allocated.
	ErrUnknownBuffer = errors.New("unknown buffer")
	// ErrOutOfBounds: an offset and length fall outside a buffer.
	ErrOutOfBounds = errors.New("range outside buffer")
)
