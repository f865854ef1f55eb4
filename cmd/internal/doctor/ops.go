package doctor

import (
	"fmt"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// familyOps asks nlctrl which operations a generic netlink family has; the
// result maps op id to its flags (GENL_ADMIN_PERM and so on).
func familyOps(name string) (map[uint32]uint32, error) {
	c, err := genetlink.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("genetlink: %w", err)
	}
	defer c.Close()
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.CTRL_ATTR_FAMILY_NAME, name)
	data, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	msgs, err := c.Execute(genetlink.Message{
		Header: genetlink.Header{Command: unix.CTRL_CMD_GETFAMILY, Version: 1},
		Data:   data,
	}, unix.GENL_ID_CTRL, netlink.Request)
	if err != nil {
		return nil, fmt.Errorf("get family %s: %w", name, err)
	}
	ops := map[uint32]uint32{}
	for _, m := range msgs {
		if err := decodeOps(m.Data, ops); err != nil {
			return nil, fmt.Errorf("get family %s: %w", name, err)
		}
	}
	return ops, nil
}

// decodeOps reads CTRL_ATTR_OPS: a nest of nests, each holding
// CTRL_ATTR_OP_ID and CTRL_ATTR_OP_FLAGS.
func decodeOps(b []byte, ops map[uint32]uint32) error {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return err
	}
	for ad.Next() {
		if ad.Type() != unix.CTRL_ATTR_OPS {
			continue
		}
		ad.Nested(func(list *netlink.AttributeDecoder) error {
			for list.Next() {
				list.Nested(func(op *netlink.AttributeDecoder) error {
					var id, flags uint32
					for op.Next() {
						switch op.Type() {
						case unix.CTRL_ATTR_OP_ID:
							id = op.Uint32()
						case unix.CTRL_ATTR_OP_FLAGS:
							flags = op.Uint32()
						}
					}
					if id != 0 {
						ops[id] = flags
					}
					return op.Err()
				})
			}
			return list.Err()
		})
	}
	return ad.Err()
}
