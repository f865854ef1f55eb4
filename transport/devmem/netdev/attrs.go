package netdev

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

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

// decodeFamilyOps adds the operations a CTRL_CMD_GETFAMILY reply lists to
// ops, op id to GENL_* flags. CTRL_ATTR_OPS is a nest of nests, each holding
// CTRL_ATTR_OP_ID and CTRL_ATTR_OP_FLAGS; an entry without an id is skipped.
func decodeFamilyOps(b []byte, ops map[uint32]uint32) error {
	return decodeAttrs(b, func(typ uint16, data []byte) error {
		if typ != uapi.CTRL_ATTR_OPS {
			return nil
		}
		return decodeAttrs(data, func(_ uint16, op []byte) error {
			var id, flags uint32
			err := decodeAttrs(op, func(typ uint16, data []byte) error {
				var err error
				switch typ {
				case uapi.CTRL_ATTR_OP_ID:
					id, err = u32Attr(data)
				case uapi.CTRL_ATTR_OP_FLAGS:
					flags, err = u32Attr(data)
				}
				return err
			})
			if err == nil && id != 0 {
				ops[id] = flags
			}
			return err
		})
	})
}
