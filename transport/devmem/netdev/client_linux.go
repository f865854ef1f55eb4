//go:build linux

package netdev

import (
	"errors"
	"fmt"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

// A Client talks to the kernel's netdev generic netlink family: device,
// queue, page-pool and queue-statistics dumps, the family's operation list,
// and dmabuf bindings.
//
// A Client is safe for concurrent use. Each binding it creates gets a netlink
// socket of its own, so closing the Client does not unbind anything.
type Client struct {
	c      *genetlink.Conn
	family genetlink.Family
	// dial opens the socket of a new binding.
	dial func() (*genetlink.Conn, error)
}

// dialGenl opens a generic netlink socket in strict mode: extended
// acknowledgements (the kernel's error strings) and strict attribute
// checking, failing if the kernel cannot provide them.
func dialGenl() (*genetlink.Conn, error) {
	return genetlink.Dial(&netlink.Config{Strict: true})
}

// Dial opens a Client on the running kernel. If the kernel has no netdev
// family (before 6.3), the error satisfies errors.Is(err, ErrNotSupported).
func Dial() (*Client, error) {
	return NewClient(dialGenl)
}

// NewClient opens a Client whose generic netlink sockets dial opens: one for
// the Client's requests, then one per binding (the binding's socket). Dial
// passes a dialer of strict-mode sockets on the running kernel; tests pass
// a fake family's (netdevtest.Family.Dial).
func NewClient(dial func() (*genetlink.Conn, error)) (*Client, error) {
	c, err := dial()
	if err != nil {
		return nil, opError("dial generic netlink", err)
	}
	f, err := c.GetFamily(uapi.NETDEV_FAMILY_NAME)
	if err != nil {
		_ = c.Close()
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%w: kernel has no %q generic netlink family: %w", ErrNotSupported, uapi.NETDEV_FAMILY_NAME, opError("get-family", err))
		}
		return nil, opError("get-family", err)
	}
	return &Client{c: c, family: f, dial: dial}, nil
}

// Close closes the Client's netlink socket. Bindings are not affected.
func (c *Client) Close() error { return c.c.Close() }

// FamilyID returns the id the kernel assigned to the netdev family.
func (c *Client) FamilyID() uint16 { return c.family.ID }

// FamilyVersion returns the version the kernel reports for the family.
func (c *Client) FamilyVersion() uint8 { return c.family.Version }

func (c *Client) dump(cmd uint8, op string, attrs []byte) ([]genetlink.Message, error) {
	msgs, err := c.c.Execute(genetlink.Message{
		Header: genetlink.Header{Command: cmd, Version: uapi.NETDEV_FAMILY_VERSION},
		Data:   attrs,
	}, c.family.ID, netlink.Request|netlink.Dump)
	if err != nil {
		return nil, opError(op, err)
	}
	return msgs, nil
}

// Devices dumps every network device of the caller's network namespace.
func (c *Client) Devices() ([]Device, error) {
	msgs, err := c.dump(uapi.NETDEV_CMD_DEV_GET, "dev-get", nil)
	if err != nil {
		return nil, err
	}
	out := make([]Device, 0, len(msgs))
	for _, m := range msgs {
		d, err := decodeDevice(m.Data)
		if err != nil {
			return nil, fmt.Errorf("dev-get: %w", err)
		}
		out = append(out, d)
	}
	return out, nil
}

// Queues dumps the RX and TX queues of device ifindex, or of every device if
// ifindex is 0. A device that does not exist yields an error satisfying
// errors.Is(err, os.ErrNotExist).
func (c *Client) Queues(ifindex int) ([]Queue, error) {
	var attrs []byte
	if ifindex != 0 {
		ae := netlink.NewAttributeEncoder()
		ae.Uint32(uapi.NETDEV_A_QUEUE_IFINDEX, uint32(ifindex))
		var err error
		if attrs, err = ae.Encode(); err != nil {
			return nil, err
		}
	}
	msgs, err := c.dump(uapi.NETDEV_CMD_QUEUE_GET, "queue-get", attrs)
	if err != nil {
		return nil, err
	}
	out := make([]Queue, 0, len(msgs))
	for _, m := range msgs {
		q, err := decodeQueue(m.Data)
		if err != nil {
			return nil, fmt.Errorf("queue-get: %w", err)
		}
		out = append(out, q)
	}
	return out, nil
}

// PagePools dumps the page pools of the caller's network namespace. Pools of
// devmem-bound queues report the binding in PagePool.DmabufID.
func (c *Client) PagePools() ([]PagePool, error) {
	msgs, err := c.dump(uapi.NETDEV_CMD_PAGE_POOL_GET, "page-pool-get", nil)
	if err != nil {
		return nil, err
	}
	out := make([]PagePool, 0, len(msgs))
	for _, m := range msgs {
		p, err := decodePagePool(m.Data)
		if err != nil {
			return nil, fmt.Errorf("page-pool-get: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}

// QStats dumps per-queue statistics of device ifindex, or of every device
// that reports them if ifindex is 0. A device whose driver has no queue
// statistics yields an error satisfying errors.Is(err, ErrNotSupported).
func (c *Client) QStats(ifindex int) ([]QStats, error) {
	ae := netlink.NewAttributeEncoder()
	if ifindex != 0 {
		ae.Uint32(uapi.NETDEV_A_QSTATS_IFINDEX, uint32(ifindex))
	}
	ae.Uint32(uapi.NETDEV_A_QSTATS_SCOPE, uapi.NETDEV_QSTATS_SCOPE_QUEUE)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	msgs, err := c.dump(uapi.NETDEV_CMD_QSTATS_GET, "qstats-get", attrs)
	if err != nil {
		return nil, err
	}
	out := make([]QStats, 0, len(msgs))
	for _, m := range msgs {
		s, err := decodeQStats(m.Data)
		if err != nil {
			return nil, fmt.Errorf("qstats-get: %w", err)
		}
		out = append(out, s)
	}
	return out, nil
}

// BindRX binds the dmabuf dmabufFD to RX queues of device ifindex
// (bind-rx). The kernel takes its own reference on the dmabuf, so the fd may
// be closed afterwards. The binding lives until Binding.Close.
//
// bind-rx needs CAP_NET_ADMIN and a driver with queue management and header
// split configured (ethtool -G dev tcp-data-split on, hds-thresh 0). Errors
// are *OpError values carrying the errno and the kernel's explanation, for
// example EINVAL "tcp-data-split is disabled", ERANGE "rx queue index out of
// range", EOPNOTSUPP for devices that cannot (errors.Is(err,
// ErrNotSupported)), ENODEV for a missing device (errors.Is(err,
// os.ErrNotExist)).
func (c *Client) BindRX(ifindex, dmabufFD int, queues []uint32) (*Binding, error) {
	if len(queues) == 0 {
		return nil, &OpError{Subsystem: "netdev", Op: "bind-rx", Err: unix.EINVAL, Message: "no RX queue given"}
	}
	attrs, err := encodeBindRX(ifindex, dmabufFD, queues)
	if err != nil {
		return nil, err
	}
	return c.bind(uapi.NETDEV_CMD_BIND_RX, "bind-rx", attrs, ifindex, BindingRX, queues)
}

// BindTX binds the dmabuf dmabufFD to device ifindex for devmem TX
// (bind-tx, Linux 6.16+). It needs no privilege. A device whose driver
// cannot send from net_iovs fails with EOPNOTSUPP "Driver does not support
// netmem TX" (errors.Is(err, ErrNotSupported)).
func (c *Client) BindTX(ifindex, dmabufFD int) (*Binding, error) {
	attrs, err := encodeBindTX(ifindex, dmabufFD)
	if err != nil {
		return nil, err
	}
	return c.bind(uapi.NETDEV_CMD_BIND_TX, "bind-tx", attrs, ifindex, BindingTX, nil)
}

// bind sends a bind request on a fresh socket that then belongs to the
// binding: closing it is the unbind.
func (c *Client) bind(cmd uint8, op string, attrs []byte, ifindex int, kind BindingKind, queues []uint32) (*Binding, error) {
	conn, err := c.dial()
	if err != nil {
		return nil, opError(op, err)
	}
	// No NLM_F_ACK: a successful request is answered by the reply alone, a
	// failed one by NLMSG_ERROR with the extended acknowledgement.
	msgs, err := conn.Execute(genetlink.Message{
		Header: genetlink.Header{Command: cmd, Version: uapi.NETDEV_FAMILY_VERSION},
		Data:   attrs,
	}, c.family.ID, netlink.Request)
	if err != nil {
		_ = conn.Close()
		return nil, opError(op, err)
	}
	if len(msgs) != 1 {
		_ = conn.Close()
		return nil, fmt.Errorf("%s: %w: %d replies, want 1", op, ErrMalformed, len(msgs))
	}
	id, err := decodeBindReply(msgs[0].Data)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return NewBinding(id, ifindex, kind, queues, conn), nil
}

// FamilyOps returns the netdev family's operations as the kernel's generic
// netlink controller lists them (CTRL_CMD_GETFAMILY): command id to GENL_*
// flags (GENL_ADMIN_PERM, GENL_CMD_CAP_DO, ...). It tells which commands the
// running kernel has: bind-rx since 6.12, bind-tx since 6.16.
func (c *Client) FamilyOps() (map[uint32]uint32, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(uapi.CTRL_ATTR_FAMILY_NAME, uapi.NETDEV_FAMILY_NAME)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	msgs, err := c.c.Execute(genetlink.Message{
		Header: genetlink.Header{Command: uapi.CTRL_CMD_GETFAMILY, Version: 1},
		Data:   attrs,
	}, uapi.GENL_ID_CTRL, netlink.Request)
	if err != nil {
		return nil, opError("get-family", err)
	}
	ops := make(map[uint32]uint32)
	for _, m := range msgs {
		if err := decodeFamilyOps(m.Data, ops); err != nil {
			return nil, fmt.Errorf("get-family: %w", err)
		}
	}
	return ops, nil
}

// opError converts an error of mdlayher/netlink into an *OpError keeping the
// errno and the extended acknowledgement.
func opError(op string, err error) error {
	var nerr *netlink.OpError
	if errors.As(err, &nerr) {
		inner := nerr.Err
		var errno unix.Errno
		if errors.As(inner, &errno) {
			// An errno from a netlink error message, or from a failed
			// system call inside an *os.SyscallError: keep the errno.
			inner = errno
		}
		return &OpError{Subsystem: "netdev", Op: op, Err: inner, Message: nerr.Message, Offset: nerr.Offset}
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		return &OpError{Subsystem: "netdev", Op: op, Err: errno}
	}
	return &OpError{Subsystem: "netdev", Op: op, Err: err}
}
