// Package netdevtest serves a fake netdev generic netlink family, in the
// style of github.com/mdlayher/genetlink/genltest, so that netdev.Client and
// its callers can be tested without the kernel.
//
// A Family holds what the fake kernel knows (devices, queues, page pools,
// queue statistics, the operation list) and answers the client's requests
// on in-memory netlink sockets, in the kernel's encodings: the generic
// netlink controller's get-family (with the operation list), the dumps of
// dev-get, queue-get, page-pool-get and qstats-get, and bind-rx / bind-tx,
// which reply with a binding id and keep the binding until the socket that
// made it is closed. Refusals come back as the kernel sends them, an
// NLMSG_ERROR carrying the errno and the extended acknowledgement (see
// Error), so the client turns them into *netdev.OpError values.
//
//	f := &netdevtest.Family{
//		Devices: []netdev.Device{{Ifindex: 2}},
//		Queues:  []netdev.Queue{{ID: 0, Ifindex: 2, Type: netdev.QueueRX}},
//	}
//	c, err := netdev.NewClient(f.Dial)
//
// netdev.Client needs Linux; so does the fake, whose errnos mdlayher/netlink
// decodes on Linux only.
package netdevtest

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"
	"syscall"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
)

// DefaultFamilyID is the id a Family reports when its ID is 0.
const DefaultFamilyID = 30

// DefaultOps returns the operation list of a Linux 6.16+ kernel's netdev
// family (command id to GENL_* flags): the get commands can do and dump,
// bind-rx and napi-set need CAP_NET_ADMIN (GENL_ADMIN_PERM), bind-tx needs
// no privilege.
func DefaultOps() map[uint32]uint32 {
	const (
		do    = uapi.GENL_CMD_CAP_DO | uapi.GENL_CMD_CAP_HASPOL
		dump  = uapi.GENL_CMD_CAP_DUMP | uapi.GENL_CMD_CAP_HASPOL
		admin = uapi.GENL_ADMIN_PERM
	)
	return map[uint32]uint32{
		uapi.NETDEV_CMD_DEV_GET:             do | dump,
		uapi.NETDEV_CMD_PAGE_POOL_GET:       do | dump,
		uapi.NETDEV_CMD_PAGE_POOL_STATS_GET: do | dump,
		uapi.NETDEV_CMD_QUEUE_GET:           do | dump,
		uapi.NETDEV_CMD_NAPI_GET:            do | dump,
		uapi.NETDEV_CMD_QSTATS_GET:          dump,
		uapi.NETDEV_CMD_BIND_RX:             admin | do,
		uapi.NETDEV_CMD_NAPI_SET:            admin | do,
		uapi.NETDEV_CMD_BIND_TX:             do,
	}
}

// An Error is a refusal the fake sends back the way the kernel does: an
// NLMSG_ERROR with the errno and, when Message or Offset is set, the
// extended acknowledgement (NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS). The
// client reports them in netdev.OpError's Err, Message and Offset.
type Error struct {
	Errno syscall.Errno
	// Message is the kernel's explanation, e.g. "tcp-data-split is
	// disabled".
	Message string
	// Offset is the byte offset of the offending attribute in the request
	// (from the start of its nlmsghdr): 20 is the first attribute after
	// the nlmsghdr and genlmsghdr.
	Offset int
}

// Error describes the refusal.
func (e *Error) Error() string {
	s := "netdevtest: " + e.Errno.Error()
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Offset != 0 {
		s += fmt.Sprintf(" (attribute at offset %d)", e.Offset)
	}
	return s
}

// A Bound is a live binding of the fake.
type Bound struct {
	ID      uint32
	Kind    netdev.BindingKind
	Request BindRequest
}

// A Family is a fake netdev generic netlink family. The zero value is a
// kernel with the family, DefaultOps and no devices. Set the fields before
// the first Dial and do not change them afterwards: the fake reads them
// while it serves, and sets Queues[i].DmabufID while an RX binding holds
// queue i, as the kernel reports it.
//
// Only dumps of the get commands are served (a do request of a get command,
// and the commands the client does not send, fail with EOPNOTSUPP); the
// fake checks what the kernel checks before it answers: the command exists
// in Ops (else EOPNOTSUPP), GENL_ADMIN_PERM (EPERM when Unprivileged), a
// dump filtered by an ifindex not among Devices (ENODEV), and for bind
// requests the device (ENODEV) and the RX queues (ERANGE for a queue that is
// not an RX queue of the device, EEXIST for a queue already bound).
//
// A Family is safe for concurrent use. Its hooks run with the Family locked
// and must not call its methods.
type Family struct {
	// ID and Version are the family id and version get-family reports;
	// 0 means DefaultFamilyID and uapi version 1.
	ID      uint16
	Version uint8
	// Ops is the operation list, command id to GENL_* flags; nil means
	// DefaultOps. A command missing from it fails with EOPNOTSUPP, as on
	// a kernel that predates it.
	Ops map[uint32]uint32
	// Absent makes get-family fail with ENOENT, as on a kernel without the
	// netdev family (before 6.3).
	Absent bool
	// Unprivileged makes the commands flagged GENL_ADMIN_PERM fail with
	// EPERM, as for a socket opened without CAP_NET_ADMIN.
	Unprivileged bool

	// Devices, Queues, PagePools and QStats are what the dumps return.
	Devices   []netdev.Device
	Queues    []netdev.Queue
	PagePools []netdev.PagePool
	QStats    []netdev.QStats

	// Fail, if not nil, is asked about every netdev request that passed
	// the operation checks, with its command (uapi NETDEV_CMD_*); a
	// non-nil answer is sent back instead of the reply. An *Error is sent
	// as the kernel's NLMSG_ERROR; any other error is returned to the
	// client's socket as is.
	Fail func(cmd uint8) error
	// BindRX and BindTX, if not nil, are asked about each bind request
	// that passed the fake's checks; a non-nil answer is sent back, as
	// for Fail, instead of the binding.
	BindRX func(BindRequest) error
	BindTX func(BindRequest) error

	mu      sync.Mutex
	nextPID uint32
	lastID  uint32
	bound   map[uint32]Bound
}

// Dial opens a socket to the fake, wrapped in a genetlink.Conn: pass
// f.Dial to netdev.NewClient. Closing the socket unbinds the bindings made
// on it.
func (f *Family) Dial() (*genetlink.Conn, error) {
	f.mu.Lock()
	f.nextPID++
	pid := f.nextPID
	f.mu.Unlock()
	return genetlink.NewConn(netlink.NewConn(&socket{f: f}, pid)), nil
}

// Bindings returns the live bindings, by increasing id.
func (f *Family) Bindings() []Bound {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Bound, 0, len(f.bound))
	for _, b := range f.bound {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b Bound) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

func (f *Family) familyID() uint16 {
	if f.ID == 0 {
		return DefaultFamilyID
	}
	return f.ID
}

func (f *Family) ops() map[uint32]uint32 {
	if f.Ops == nil {
		return DefaultOps()
	}
	return f.Ops
}

// socket is an in-memory netlink socket: a request's replies are queued by
// Send and handed out by the next Receive.
type socket struct {
	f *Family

	mu       sync.Mutex
	replies  []netlink.Message
	err      error
	closed   bool
	bindings []uint32
}

var errNoReply = errors.New("netdevtest: receive without a pending reply")

func (s *socket) Send(m netlink.Message) error { return s.SendMessages([]netlink.Message{m}) }

func (s *socket) SendMessages(msgs []netlink.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return syscall.EBADF
	}
	for _, m := range msgs {
		replies, err := s.f.serve(s, m)
		if err != nil {
			s.err = err
			continue
		}
		s.replies = append(s.replies, replies...)
	}
	return nil
}

func (s *socket) Receive() ([]netlink.Message, error) {
	var out []netlink.Message
	for m, err := range s.ReceiveIter() {
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func (s *socket) ReceiveIter() iter.Seq2[netlink.Message, error] {
	return func(yield func(netlink.Message, error) bool) {
		s.mu.Lock()
		msgs, err := s.replies, s.err
		s.replies, s.err = nil, nil
		s.mu.Unlock()
		if err == nil && len(msgs) == 0 {
			err = errNoReply
		}
		if err != nil {
			yield(netlink.Message{}, err)
			return
		}
		for _, m := range msgs {
			if !yield(m, nil) {
				return
			}
		}
	}
}

// Close unbinds what was bound through the socket, as the kernel does when
// the netlink socket that sent bind-rx or bind-tx is released.
func (s *socket) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	for _, id := range s.bindings {
		s.f.unbindLocked(id)
	}
	s.bindings = nil
	return nil
}

// serve answers one request: the replies to queue, or an error to return
// from the socket.
func (f *Family) serve(s *socket, req netlink.Message) ([]netlink.Message, error) {
	var gm genetlink.Message
	if err := gm.UnmarshalBinary(req.Data); err != nil {
		return refuse(req, &Error{Errno: syscall.EINVAL})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch req.Header.Type {
	case uapi.GENL_ID_CTRL:
		return f.serveCtrlLocked(req, gm)
	case netlink.HeaderType(f.familyID()):
		return f.serveNetdevLocked(s, req, gm)
	}
	return refuse(req, &Error{Errno: syscall.ENOENT})
}

// serveCtrlLocked answers the controller's get-family for "netdev".
func (f *Family) serveCtrlLocked(req netlink.Message, gm genetlink.Message) ([]netlink.Message, error) {
	if gm.Header.Command != uapi.CTRL_CMD_GETFAMILY || req.Header.Flags&netlink.Dump == netlink.Dump {
		return refuse(req, &Error{Errno: syscall.EOPNOTSUPP, Message: "netdevtest: only get-family of one family is served"})
	}
	ad, err := netlink.NewAttributeDecoder(gm.Data)
	if err != nil {
		return refuse(req, &Error{Errno: syscall.EINVAL})
	}
	var name string
	for ad.Next() {
		if ad.Type() == uapi.CTRL_ATTR_FAMILY_NAME {
			name = ad.String()
		}
	}
	if ad.Err() != nil || name == "" {
		return refuse(req, &Error{Errno: syscall.EINVAL})
	}
	if name != uapi.NETDEV_FAMILY_NAME || f.Absent {
		return refuse(req, &Error{Errno: syscall.ENOENT})
	}
	version := uint32(f.Version)
	if version == 0 {
		version = uapi.NETDEV_FAMILY_VERSION
	}
	ops := f.ops()
	ids := make([]uint32, 0, len(ops))
	for id := range ops {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	ae := netlink.NewAttributeEncoder()
	ae.Uint16(uapi.CTRL_ATTR_FAMILY_ID, f.familyID())
	ae.String(uapi.CTRL_ATTR_FAMILY_NAME, uapi.NETDEV_FAMILY_NAME)
	ae.Uint32(uapi.CTRL_ATTR_VERSION, version)
	ae.Nested(uapi.CTRL_ATTR_OPS, func(nae *netlink.AttributeEncoder) error {
		for i, id := range ids {
			nae.Nested(uint16(i+1), func(op *netlink.AttributeEncoder) error {
				op.Uint32(uapi.CTRL_ATTR_OP_ID, id)
				op.Uint32(uapi.CTRL_ATTR_OP_FLAGS, ops[id])
				return nil
			})
		}
		return nil
	})
	data, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	return reply(req, uapi.GENL_ID_CTRL, genetlink.Message{
		Header: genetlink.Header{Command: uapi.CTRL_CMD_NEWFAMILY, Version: 2},
		Data:   data,
	})
}

func (f *Family) serveNetdevLocked(s *socket, req netlink.Message, gm genetlink.Message) ([]netlink.Message, error) {
	cmd := gm.Header.Command
	flags, ok := f.ops()[uint32(cmd)]
	if !ok {
		return refuse(req, &Error{Errno: syscall.EOPNOTSUPP})
	}
	if flags&uapi.GENL_ADMIN_PERM != 0 && f.Unprivileged {
		return refuse(req, &Error{Errno: syscall.EPERM})
	}
	dump := req.Header.Flags&netlink.Dump == netlink.Dump
	if dump && flags&uapi.GENL_CMD_CAP_DUMP == 0 || !dump && flags&uapi.GENL_CMD_CAP_DO == 0 {
		return refuse(req, &Error{Errno: syscall.EOPNOTSUPP})
	}
	if f.Fail != nil {
		if err := f.Fail(cmd); err != nil {
			return refuse(req, err)
		}
	}
	switch {
	case cmd == uapi.NETDEV_CMD_BIND_RX && !dump:
		return f.bindLocked(s, req, gm, netdev.BindingRX)
	case cmd == uapi.NETDEV_CMD_BIND_TX && !dump:
		return f.bindLocked(s, req, gm, netdev.BindingTX)
	case !dump:
		return refuse(req, &Error{Errno: syscall.EOPNOTSUPP, Message: "netdevtest: only dumps of get commands are served"})
	}
	var entries [][]byte
	var err error
	switch cmd {
	case uapi.NETDEV_CMD_DEV_GET:
		entries, err = encodeAll(f.Devices, nil, EncodeDevice)
	case uapi.NETDEV_CMD_PAGE_POOL_GET:
		entries, err = encodeAll(f.PagePools, nil, EncodePagePool)
	case uapi.NETDEV_CMD_QUEUE_GET:
		ifindex, ok := f.filterLocked(gm.Data, uapi.NETDEV_A_QUEUE_IFINDEX)
		if !ok {
			return refuse(req, &Error{Errno: syscall.ENODEV})
		}
		entries, err = encodeAll(f.Queues, func(q netdev.Queue) bool { return ifindex == 0 || q.Ifindex == ifindex }, EncodeQueue)
	case uapi.NETDEV_CMD_QSTATS_GET:
		ifindex, ok := f.filterLocked(gm.Data, uapi.NETDEV_A_QSTATS_IFINDEX)
		if !ok {
			return refuse(req, &Error{Errno: syscall.ENODEV})
		}
		entries, err = encodeAll(f.QStats, func(s netdev.QStats) bool { return ifindex == 0 || s.Ifindex == ifindex }, EncodeQStats)
	default:
		return refuse(req, &Error{Errno: syscall.EOPNOTSUPP, Message: "netdevtest: command not served"})
	}
	if err != nil {
		return nil, err
	}
	return dumpReply(req, f.familyID(), cmd, entries)
}

// filterLocked reads the ifindex a dump is filtered by (0 for none) and
// reports whether the device exists.
func (f *Family) filterLocked(attrs []byte, typ uint16) (int, bool) {
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return 0, false
	}
	ifindex := 0
	for ad.Next() {
		if ad.Type() == typ {
			ifindex = int(ad.Uint32())
		}
	}
	if ad.Err() != nil {
		return 0, false
	}
	return ifindex, ifindex == 0 || f.hasDeviceLocked(ifindex)
}

func (f *Family) hasDeviceLocked(ifindex int) bool {
	return slices.ContainsFunc(f.Devices, func(d netdev.Device) bool { return d.Ifindex == ifindex })
}

func encodeAll[T any](items []T, keep func(T) bool, enc func(T) ([]byte, error)) ([][]byte, error) {
	var out [][]byte
	for _, it := range items {
		if keep != nil && !keep(it) {
			continue
		}
		b, err := enc(it)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// bindLocked serves bind-rx and bind-tx: the checks, the id (allocated
// cyclically from 1 over one space for RX and TX, as the kernel's
// xa_alloc_cyclic) and the reply.
func (f *Family) bindLocked(s *socket, req netlink.Message, gm genetlink.Message, kind netdev.BindingKind) ([]netlink.Message, error) {
	r, err := DecodeBindRequest(gm.Data)
	if err != nil {
		return refuse(req, &Error{Errno: syscall.EINVAL})
	}
	if !f.hasDeviceLocked(r.Ifindex) {
		return refuse(req, &Error{Errno: syscall.ENODEV})
	}
	hook := f.BindTX
	if kind == netdev.BindingRX {
		hook = f.BindRX
		if len(r.Queues) == 0 {
			return refuse(req, &Error{Errno: syscall.EINVAL})
		}
		for _, q := range r.Queues {
			i := f.rxQueueLocked(r.Ifindex, q)
			switch {
			case i < 0:
				return refuse(req, &Error{Errno: syscall.ERANGE, Message: "rx queue index out of range"})
			case f.Queues[i].DmabufID != 0 || f.Queues[i].IOUring:
				return refuse(req, &Error{Errno: syscall.EEXIST, Message: "designated queue already memory provider bound"})
			case f.Queues[i].XSK:
				return refuse(req, &Error{Errno: syscall.EBUSY, Message: "designated queue already in use by AF_XDP"})
			}
		}
	}
	if hook != nil {
		if err := hook(r); err != nil {
			return refuse(req, err)
		}
	}
	if f.bound == nil {
		f.bound = make(map[uint32]Bound)
	}
	id := f.lastID
	for {
		id++
		if id == 0 {
			id = 1
		}
		if _, used := f.bound[id]; !used {
			break
		}
	}
	f.lastID = id
	f.bound[id] = Bound{ID: id, Kind: kind, Request: r}
	s.bindings = append(s.bindings, id)
	for _, q := range r.Queues {
		f.Queues[f.rxQueueLocked(r.Ifindex, q)].DmabufID = id
	}
	data, err := EncodeBindReply(id)
	if err != nil {
		return nil, err
	}
	return reply(req, netlink.HeaderType(f.familyID()), genetlink.Message{
		Header: genetlink.Header{Command: gm.Header.Command, Version: uapi.NETDEV_FAMILY_VERSION},
		Data:   data,
	})
}

// rxQueueLocked returns the index in f.Queues of RX queue id of ifindex, or
// -1.
func (f *Family) rxQueueLocked(ifindex int, id uint32) int {
	return slices.IndexFunc(f.Queues, func(q netdev.Queue) bool {
		return q.Ifindex == ifindex && q.ID == id && q.Type == netdev.QueueRX
	})
}

func (f *Family) unbindLocked(id uint32) {
	delete(f.bound, id)
	for i := range f.Queues {
		if f.Queues[i].DmabufID == id {
			f.Queues[i].DmabufID = 0
		}
	}
}

// header returns the header of a reply to req.
func header(req netlink.Message, typ netlink.HeaderType, flags netlink.HeaderFlags, dataLen int) netlink.Header {
	return netlink.Header{
		Length:   uint32(nlmsgAlign(nlmsgHeaderLen + dataLen)),
		Type:     typ,
		Flags:    flags,
		Sequence: req.Header.Sequence,
		PID:      req.Header.PID,
	}
}

const nlmsgHeaderLen = 16

func nlmsgAlign(n int) int { return (n + 3) &^ 3 }

// reply answers a do request with one message.
func reply(req netlink.Message, typ netlink.HeaderType, gm genetlink.Message) ([]netlink.Message, error) {
	b, err := gm.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return []netlink.Message{{Header: header(req, typ, 0, len(b)), Data: b}}, nil
}

// dumpReply answers a dump: one multi-part message per entry, then
// NLMSG_DONE.
func dumpReply(req netlink.Message, family uint16, cmd uint8, entries [][]byte) ([]netlink.Message, error) {
	out := make([]netlink.Message, 0, len(entries)+1)
	for _, e := range entries {
		b, err := genetlink.Message{
			Header: genetlink.Header{Command: cmd, Version: uapi.NETDEV_FAMILY_VERSION},
			Data:   e,
		}.MarshalBinary()
		if err != nil {
			return nil, err
		}
		out = append(out, netlink.Message{Header: header(req, netlink.HeaderType(family), netlink.Multi, len(b)), Data: b})
	}
	done := make([]byte, 4)
	out = append(out, netlink.Message{Header: header(req, netlink.Done, netlink.Multi, len(done)), Data: done})
	return out, nil
}

// refuse answers req with err: an *Error becomes the kernel's NLMSG_ERROR
// (the negative errno, the request echoed whole, then the extended
// acknowledgement); any other error is returned from the socket.
func refuse(req netlink.Message, err error) ([]netlink.Message, error) {
	var e *Error
	if !errors.As(err, &e) {
		return nil, err
	}
	reqb, merr := req.MarshalBinary()
	if merr != nil {
		return nil, merr
	}
	data := binary.NativeEndian.AppendUint32(nil, uint32(-int32(e.Errno)))
	data = append(data, reqb...)
	var flags netlink.HeaderFlags
	if e.Message != "" || e.Offset != 0 {
		flags |= uapi.NLM_F_ACK_TLVS
		ae := netlink.NewAttributeEncoder()
		if e.Message != "" {
			ae.String(uapi.NLMSGERR_ATTR_MSG, e.Message)
		}
		if e.Offset != 0 {
			ae.Uint32(uapi.NLMSGERR_ATTR_OFFS, uint32(e.Offset))
		}
		tlvs, err := ae.Encode()
		if err != nil {
			return nil, err
		}
		data = append(data, tlvs...)
	}
	return []netlink.Message{{Header: header(req, netlink.Error, flags, len(data)), Data: data}}, nil
}
