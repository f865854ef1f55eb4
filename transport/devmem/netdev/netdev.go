package netdev

import (
	"fmt"

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
