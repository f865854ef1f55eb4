package netdevtest

import (
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
)

// The kernel's side of the netdev attribute encodings: what the family puts
// in its replies and how it reads bind requests. The Family uses them; tests
// of the client's decoders use them to build replies.

// EncodeDevice encodes d as the attributes of a dev-get reply.
func EncodeDevice(d netdev.Device) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(uapi.NETDEV_A_DEV_IFINDEX, uint32(d.Ifindex))
	ae.Uint64(uapi.NETDEV_A_DEV_XDP_FEATURES, d.XDPFeatures)
	ae.Uint32(uapi.NETDEV_A_DEV_XDP_ZC_MAX_SEGS, d.XDPZCMaxSegs)
	ae.Uint64(uapi.NETDEV_A_DEV_XDP_RX_METADATA_FEATURES, d.XDPRXMetadataFeatures)
	ae.Uint64(uapi.NETDEV_A_DEV_XSK_FEATURES, d.XSKFeatures)
	return ae.Encode()
}

// EncodeQueue encodes q as the attributes of a queue-get reply; the
// optional attributes are left out when zero.
func EncodeQueue(q netdev.Queue) ([]byte, error) {
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

// EncodePagePool encodes p as the attributes of a page-pool-get reply; the
// optional attributes are left out when zero.
func EncodePagePool(p netdev.PagePool) ([]byte, error) {
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

// EncodeQStats encodes s as the attributes of a qstats-get reply of scope
// queue. The counters sent are those of s.Counters (the named fields are
// not consulted).
func EncodeQStats(s netdev.QStats) ([]byte, error) {
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

// EncodeBindReply encodes the reply to bind-rx or bind-tx: the binding id
// (NETDEV_A_DMABUF_ID).
func EncodeBindReply(id uint32) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(uapi.NETDEV_A_DMABUF_ID, id)
	return ae.Encode()
}

// A BindRequest is a decoded bind-rx or bind-tx request.
type BindRequest struct {
	Ifindex int
	FD      int
	// Queues are the RX queue ids of a bind-rx request, nil for bind-tx.
	Queues []uint32
}

// DecodeBindRequest decodes the attributes of a bind-rx or bind-tx request:
// the ifindex, the dmabuf fd and, for bind-rx, one NETDEV_A_DMABUF_QUEUES
// nest per queue holding its id and type (which must be rx). Errors wrap
// netdev.ErrMalformed.
func DecodeBindRequest(b []byte) (BindRequest, error) {
	var r BindRequest
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return BindRequest{}, fmt.Errorf("%w: %v", netdev.ErrMalformed, err)
	}
	for ad.Next() {
		switch ad.Type() {
		case uapi.NETDEV_A_DMABUF_IFINDEX:
			r.Ifindex = int(ad.Uint32())
		case uapi.NETDEV_A_DMABUF_FD:
			r.FD = int(ad.Uint32())
		case uapi.NETDEV_A_DMABUF_QUEUES:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				var id, qtype uint32
				var seen bool
				for nad.Next() {
					switch nad.Type() {
					case uapi.NETDEV_A_QUEUE_ID:
						id, seen = nad.Uint32(), true
					case uapi.NETDEV_A_QUEUE_TYPE:
						qtype = nad.Uint32()
					}
				}
				if err := nad.Err(); err != nil {
					return err
				}
				if !seen || qtype != uapi.NETDEV_QUEUE_TYPE_RX {
					return errors.New("queue entry without id or not of type rx")
				}
				r.Queues = append(r.Queues, id)
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return BindRequest{}, fmt.Errorf("%w: %v", netdev.ErrMalformed, err)
	}
	return r, nil
}
