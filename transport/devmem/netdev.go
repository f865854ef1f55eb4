package devmem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/mdlayher/netlink"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

// A QueueType says whether a queue receives or transmits
// (enum netdev_queue_type).
type QueueType uint32

// Queue types.
const (
	QueueRX QueueType = uapi.NETDEV_QUEUE_TYPE_RX
	QueueTX QueueType = uapi.NETDEV_QUEUE_TYPE_TX
)

// String returns "rx" or "tx".
func (t QueueType) String() string {
	switch t {
	case QueueRX:
		return "rx"
	case QueueTX:
		return "tx"
	}
	return fmt.Sprintf("queue-type(%d)", uint32(t))
}

// A Device is one entry of the netdev family's dev-get dump. The family has
// no attribute that advertises devmem support: try BindRX / BindTX.
type Device struct {
	Ifindex int
	// XDPFeatures is the NETDEV_XDP_ACT_* mask.
	XDPFeatures uint64
	// XDPZCMaxSegs is the number of AF_XDP zerocopy segments.
	XDPZCMaxSegs uint32
	// XDPRXMetadataFeatures is the NETDEV_XDP_RX_METADATA_* mask.
	XDPRXMetadataFeatures uint64
	// XSKFeatures is the NETDEV_XSK_FLAGS_* mask.
	XSKFeatures uint64
}

// A Queue is one entry of a queue-get dump.
type Queue struct {
	ID      uint32
	Ifindex int
	Type    QueueType
	// NapiID is the NAPI instance serving the queue, 0 if none.
	NapiID uint32
	// DmabufID is the id of the dmabuf binding on an RX queue, 0 if none.
	DmabufID uint32
	// IOUring and XSK report an io_uring zero-copy RX provider or an
	// AF_XDP socket on the queue; either excludes a devmem binding.
	IOUring bool
	XSK     bool
}

// A PagePool is one entry of a page-pool-get dump.
type PagePool struct {
	ID uint64
	// Ifindex is 0 for a pool whose device is gone (detached pool).
	Ifindex     int
	NapiID      uint64
	Inflight    uint64 // pages (or net_iovs) handed out and not yet returned
	InflightMem uint64 // bytes of those
	// DetachTime is when the pool's device went away (seconds, boot
	// clock), 0 while attached.
	DetachTime uint64
	// DmabufID is the binding that provides the pool's memory, 0 if none.
	DmabufID uint32
	IOUring  bool
}

// QStats are the per-queue statistics of a qstats-get dump (scope queue).
// Counters the driver does not report are zero; Present tells which were
// reported, by NETDEV_A_QSTATS_* attribute id.
type QStats struct {
	Ifindex   int
	QueueType QueueType
	QueueID   uint32

	RXPackets, RXBytes           uint64
	TXPackets, TXBytes           uint64
	RXAllocFail                  uint64 // the page pool (a bound dmabuf) ran dry
	RXHWDrops                    uint64
	RXHWDropOverruns             uint64
	RXCsumBad                    uint64
	TXHWDrops                    uint64
	TXStop, TXWake               uint64
	RXHWGROPackets, RXHWGROBytes uint64

	// Counters holds every counter attribute received, keyed by its
	// NETDEV_A_QSTATS_* id (8 through 34), including the ones above.
	Counters map[uint16]uint64
}

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

func newBinding(id uint32, ifindex int, kind BindingKind, queues []uint32, closer io.Closer) *Binding {
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

// Attribute codecs. They are portable (no kernel needed) and fuzzed.

// uintAttr decodes a netlink "uint" (NLA_UINT): 4 or 8 bytes.
func uintAttr(b []byte) (uint64, error) {
	switch len(b) {
	case 4:
		return uint64(binary.NativeEndian.Uint32(b)), nil
	case 8:
		return binary.NativeEndian.Uint64(b), nil
	}
	return 0, fmt.Errorf("%w: uint attribute of %d bytes", ErrMalformed, len(b))
}

func u32Attr(b []byte) (uint32, error) {
	if len(b) != 4 {
		return 0, fmt.Errorf("%w: u32 attribute of %d bytes", ErrMalformed, len(b))
	}
	return binary.NativeEndian.Uint32(b), nil
}

func u64Attr(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: u64 attribute of %d bytes", ErrMalformed, len(b))
	}
	return binary.NativeEndian.Uint64(b), nil
}

// decodeAttrs walks the attributes of b, calling fn with each type (flags
// masked off) and payload.
func decodeAttrs(b []byte, fn func(typ uint16, data []byte) error) error {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	for ad.Next() {
		typ := ad.Type()
		ad.Do(func(data []byte) error { return fn(typ, data) })
	}
	if err := ad.Err(); err != nil {
		if errors.Is(err, ErrMalformed) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

func decodeDevice(b []byte) (Device, error) {
	var d Device
	var seen bool
	err := decodeAttrs(b, func(typ uint16, data []byte) error {
		var err error
		switch typ {
		case uapi.NETDEV_A_DEV_IFINDEX:
			var v uint32
			v, err = u32Attr(data)
			d.Ifindex, seen = int(v), true
		case uapi.NETDEV_A_DEV_XDP_FEATURES:
			d.XDPFeatures, err = u64Attr(data)
		case uapi.NETDEV_A_DEV_XDP_ZC_MAX_SEGS:
			d.XDPZCMaxSegs, err = u32Attr(data)
		case uapi.NETDEV_A_DEV_XDP_RX_METADATA_FEATURES:
			d.XDPRXMetadataFeatures, err = u64Attr(data)
		case uapi.NETDEV_A_DEV_XSK_FEATURES:
			d.XSKFeatures, err = u64Attr(data)
		}
		return err
	})
	if err == nil && !seen {
		err = fmt.Errorf("%w: dev-get reply without ifindex", ErrMalformed)
	}
	if err != nil {
		return Device{}, err
	}
	return d, nil
}

func encodeDevice(d Device) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(uapi.NETDEV_A_DEV_IFINDEX, uint32(d.Ifindex))
	ae.Uint64(uapi.NETDEV_A_DEV_XDP_FEATURES, d.XDPFeatures)
	ae.Uint32(uapi.NETDEV_A_DEV_XDP_ZC_MAX_SEGS, d.XDPZCMaxSegs)
	ae.Uint64(uapi.NETDEV_A_DEV_XDP_RX_METADATA_FEATURES, d.XDPRXMetadataFeatures)
	ae.Uint64(uapi.NETDEV_A_DEV_XSK_FEATURES, d.XSKFeatures)
	return ae.Encode()
}

func decodeQueue(b []byte) (Queue, error) {
	var q Queue
	var seenID, seenType bool
	err := decodeAttrs(b, func(typ uint16, data []byte) error {
		var err error
		switch typ {
		case uapi.NETDEV_A_QUEUE_ID:
			q.ID, err = u32Attr(data)
			seenID = true
		case uapi.NETDEV_A_QUEUE_IFINDEX:
			var v uint32
			v, err = u32Attr(data)
			q.Ifindex = int(v)
		case uapi.NETDEV_A_QUEUE_TYPE:
			var v uint32
			v, err = u32Attr(data)
			q.Type, seenType = QueueType(v), true
		case uapi.NETDEV_A_QUEUE_NAPI_ID:
			q.NapiID, err = u32Attr(data)
		case uapi.NETDEV_A_QUEUE_DMABUF:
			q.DmabufID, err = u32Attr(data)
		case uapi.NETDEV_A_QUEUE_IO_URING:
			q.IOUring = true
		case uapi.NETDEV_A_QUEUE_XSK:
			q.XSK = true
		}
		return err
	})
	if err == nil && (!seenID || !seenType) {
		err = fmt.Errorf("%w: queue-get reply without id or type", ErrMalformed)
	}
	if err != nil {
		return Queue{}, err
	}
	return q, nil
}

func encodeQueue(q Queue) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(uapi.NETDEV_A_QUEUE_ID, q.ID)
	ae.Uint32(uapi.NETDEV_A_QUEUE_IFINDEX, uint32(q.Ifindex))
	ae.Uint32(uapi.NETDEV_A_QUEUE_TYPE, uint32(q.Type))
	if q.NapiID != 0 {
		ae.Uint32(uapi.NETDEV_A_QUEUE_NAPI_ID, q.NapiID)
	}
	if q.DmabufID != 0 {
		ae.Uint32(uapi.NETDEV_A_QUEUE_DMABUF, q.DmabufID)
	}
	if q.IOUring {
		ae.Nested(uapi.NETDEV_A_QUEUE_IO_URING, func(*netlink.AttributeEncoder) error { return nil })
	}
	if q.XSK {
		ae.Nested(uapi.NETDEV_A_QUEUE_XSK, func(*netlink.AttributeEncoder) error { return nil })
	}
	return ae.Encode()
}

func decodePagePool(b []byte) (PagePool, error) {
	var p PagePool
	var seen bool
	err := decodeAttrs(b, func(typ uint16, data []byte) error {
		var err error
		switch typ {
		case uapi.NETDEV_A_PAGE_POOL_ID:
			p.ID, err = uintAttr(data)
			seen = true
		case uapi.NETDEV_A_PAGE_POOL_IFINDEX:
			var v uint32
			v, err = u32Attr(data)
			p.Ifindex = int(v)
		case uapi.NETDEV_A_PAGE_POOL_NAPI_ID:
			p.NapiID, err = uintAttr(data)
		case uapi.NETDEV_A_PAGE_POOL_INFLIGHT:
			p.Inflight, err = uintAttr(data)
		case uapi.NETDEV_A_PAGE_POOL_INFLIGHT_MEM:
			p.InflightMem, err = uintAttr(data)
		case uapi.NETDEV_A_PAGE_POOL_DETACH_TIME:
			p.DetachTime, err = uintAttr(data)
		case uapi.NETDEV_A_PAGE_POOL_DMABUF:
			p.DmabufID, err = u32Attr(data)
		case uapi.NETDEV_A_PAGE_POOL_IO_URING:
			p.IOUring = true
		}
		return err
	})
	if err == nil && !seen {
		err = fmt.Errorf("%w: page-pool-get reply without id", ErrMalformed)
	}
	if err != nil {
		return PagePool{}, err
	}
	return p, nil
}

func encodePagePool(p PagePool) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Uint64(uapi.NETDEV_A_PAGE_POOL_ID, p.ID)
	if p.Ifindex != 0 {
		ae.Uint32(uapi.NETDEV_A_PAGE_POOL_IFINDEX, uint32(p.Ifindex))
	}
	if p.NapiID != 0 {
		ae.Uint64(uapi.NETDEV_A_PAGE_POOL_NAPI_ID, p.NapiID)
	}
	ae.Uint64(uapi.NETDEV_A_PAGE_POOL_INFLIGHT, p.Inflight)
	ae.Uint64(uapi.NETDEV_A_PAGE_POOL_INFLIGHT_MEM, p.InflightMem)
	if p.DetachTime != 0 {
		ae.Uint64(uapi.NETDEV_A_PAGE_POOL_DETACH_TIME, p.DetachTime)
	}
	if p.DmabufID != 0 {
		ae.Uint32(uapi.NETDEV_A_PAGE_POOL_DMABUF, p.DmabufID)
	}
	if p.IOUring {
		ae.Nested(uapi.NETDEV_A_PAGE_POOL_IO_URING, func(*netlink.AttributeEncoder) error { return nil })
	}
	return ae.Encode()
}

func decodeQStats(b []byte) (QStats, error) {
	var s QStats
	err := decodeAttrs(b, func(typ uint16, data []byte) error {
		switch typ {
		case uapi.NETDEV_A_QSTATS_IFINDEX:
			v, err := u32Attr(data)
			s.Ifindex = int(v)
			return err
		case uapi.NETDEV_A_QSTATS_QUEUE_TYPE:
			v, err := u32Attr(data)
			s.QueueType = QueueType(v)
			return err
		case uapi.NETDEV_A_QSTATS_QUEUE_ID:
			v, err := u32Attr(data)
			s.QueueID = v
			return err
		case uapi.NETDEV_A_QSTATS_SCOPE:
			return nil
		}
		if typ < uapi.NETDEV_A_QSTATS_RX_PACKETS || typ > uapi.NETDEV_A_QSTATS_TX_WAKE {
			return nil // newer counter: ignore
		}
		v, err := uintAttr(data)
		if err != nil {
			return err
		}
		if s.Counters == nil {
			s.Counters = make(map[uint16]uint64)
		}
		s.Counters[typ] = v
		switch typ {
		case uapi.NETDEV_A_QSTATS_RX_PACKETS:
			s.RXPackets = v
		case uapi.NETDEV_A_QSTATS_RX_BYTES:
			s.RXBytes = v
		case uapi.NETDEV_A_QSTATS_TX_PACKETS:
			s.TXPackets = v
		case uapi.NETDEV_A_QSTATS_TX_BYTES:
			s.TXBytes = v
		case uapi.NETDEV_A_QSTATS_RX_ALLOC_FAIL:
			s.RXAllocFail = v
		case uapi.NETDEV_A_QSTATS_RX_HW_DROPS:
			s.RXHWDrops = v
		case uapi.NETDEV_A_QSTATS_RX_HW_DROP_OVERRUNS:
			s.RXHWDropOverruns = v
		case uapi.NETDEV_A_QSTATS_RX_CSUM_BAD:
			s.RXCsumBad = v
		case uapi.NETDEV_A_QSTATS_TX_HW_DROPS:
			s.TXHWDrops = v
		case uapi.NETDEV_A_QSTATS_TX_STOP:
			s.TXStop = v
		case uapi.NETDEV_A_QSTATS_TX_WAKE:
			s.TXWake = v
		case uapi.NETDEV_A_QSTATS_RX_HW_GRO_PACKETS:
			s.RXHWGROPackets = v
		case uapi.NETDEV_A_QSTATS_RX_HW_GRO_BYTES:
			s.RXHWGROBytes = v
		}
		return nil
	})
	if err != nil {
		return QStats{}, err
	}
	return s, nil
}

func encodeQStats(s QStats) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(uapi.NETDEV_A_QSTATS_IFINDEX, uint32(s.Ifindex))
	ae.Uint32(uapi.NETDEV_A_QSTATS_QUEUE_TYPE, uint32(s.QueueType))
	ae.Uint32(uapi.NETDEV_A_QSTATS_QUEUE_ID, s.QueueID)
	for typ := uint16(uapi.NETDEV_A_QSTATS_RX_PACKETS); typ <= uapi.NETDEV_A_QSTATS_TX_WAKE; typ++ {
		if v, ok := s.Counters[typ]; ok {
			ae.Uint64(typ, v)
		}
	}
	return ae.Encode()
}

// encodeBindRX builds a bind-rx request: ifindex, fd, and one nested
// NETDEV_A_DMABUF_QUEUES per queue holding the queue-id set {id, type rx}.
// Nested attributes carry NLA_F_NESTED, as strict validation requires.
func encodeBindRX(ifindex int, fd int, queues []uint32) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(uapi.NETDEV_A_DMABUF_IFINDEX, uint32(ifindex))
	ae.Uint32(uapi.NETDEV_A_DMABUF_FD, uint32(fd))
	for _, q := range queues {
		ae.Nested(uapi.NETDEV_A_DMABUF_QUEUES, func(nae *netlink.AttributeEncoder) error {
			nae.Uint32(uapi.NETDEV_A_QUEUE_ID, q)
			nae.Uint32(uapi.NETDEV_A_QUEUE_TYPE, uapi.NETDEV_QUEUE_TYPE_RX)
			return nil
		})
	}
	return ae.Encode()
}

// encodeBindTX builds a bind-tx request: ifindex and fd.
func encodeBindTX(ifindex int, fd int) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(uapi.NETDEV_A_DMABUF_IFINDEX, uint32(ifindex))
	ae.Uint32(uapi.NETDEV_A_DMABUF_FD, uint32(fd))
	return ae.Encode()
}

// bindRequest is a decoded bind-rx or bind-tx request (used by tests to
// check what is sent, and fuzzed).
type bindRequest struct {
	Ifindex int
	FD      int
	Queues  []uint32
}

func decodeBindRequest(b []byte) (bindRequest, error) {
	var r bindRequest
	err := decodeAttrs(b, func(typ uint16, data []byte) error {
		switch typ {
		case uapi.NETDEV_A_DMABUF_IFINDEX:
			v, err := u32Attr(data)
			r.Ifindex = int(v)
			return err
		case uapi.NETDEV_A_DMABUF_FD:
			v, err := u32Attr(data)
			r.FD = int(v)
			return err
		case uapi.NETDEV_A_DMABUF_QUEUES:
			var id, qtype uint32
			var seen bool
			err := decodeAttrs(data, func(typ uint16, data []byte) error {
				var err error
				switch typ {
				case uapi.NETDEV_A_QUEUE_ID:
					id, err = u32Attr(data)
					seen = true
				case uapi.NETDEV_A_QUEUE_TYPE:
					qtype, err = u32Attr(data)
				}
				return err
			})
			if err != nil {
				return err
			}
			if !seen || qtype != uapi.NETDEV_QUEUE_TYPE_RX {
				return fmt.Errorf("%w: queue entry without id or not of type rx", ErrMalformed)
			}
			r.Queues = append(r.Queues, id)
		}
		return nil
	})
	if err != nil {
		return bindRequest{}, err
	}
	return r, nil
}

// decodeBindReply extracts NETDEV_A_DMABUF_ID from a bind-rx/bind-tx reply.
func decodeBindReply(b []byte) (uint32, error) {
	var id uint32
	err := decodeAttrs(b, func(typ uint16, data []byte) error {
		if typ != uapi.NETDEV_A_DMABUF_ID {
			return nil
		}
		var err error
		id, err = u32Attr(data)
		return err
	})
	if err == nil && id == 0 {
		err = fmt.Errorf("%w: bind reply without a binding id", ErrMalformed)
	}
	if err != nil {
		return 0, err
	}
	return id, nil
}

func encodeBindReply(id uint32) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(uapi.NETDEV_A_DMABUF_ID, id)
	return ae.Encode()
}
