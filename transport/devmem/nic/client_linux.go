//go:build linux

package nic

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Dial opens a Client: one generic netlink socket, used both for the ethtool
// netlink family and, as the ethtool command does when it has no AF_INET
// socket, for SIOCETHTOOL ioctls. The socket is created in the network
// namespace of the calling thread. The socket is opened in strict mode, so
// the kernel's extended-ack messages reach OpError.Message.
//
// A kernel without the ethtool netlink family (before 5.6) gives an error
// satisfying errors.Is(err, ErrNotSupported).
func Dial() (*Client, error) {
	conn, err := genetlink.Dial(&netlink.Config{Strict: true})
	if err != nil {
		return nil, fmt.Errorf("nic: dial generic netlink: %w", err)
	}
	f, err := conn.GetFamily(ethtoolGenlName)
	if err != nil {
		_ = conn.Close()
		if errors.Is(err, os.ErrNotExist) {
			return nil, notSupportedf("nic: kernel has no %q generic netlink family (needs Linux 5.6+): %v", ethtoolGenlName, err)
		}
		return nil, fmt.Errorf("nic: get generic netlink family %q: %w", ethtoolGenlName, err)
	}
	d := &linuxDevice{conn: conn, family: f.ID}
	return newClient(d, d.close), nil
}

// linuxDevice implements device with ethtool netlink and SIOCETHTOOL.
type linuxDevice struct {
	// mu is held for reading by every operation and for writing by close,
	// so the socket is never closed (and its number reused) under an
	// ioctl.
	mu     sync.RWMutex
	closed bool
	conn   *genetlink.Conn
	family uint16
}

func (d *linuxDevice) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return d.conn.Close()
}

// opError converts a netlink or syscall failure into an *OpError, keeping
// the errno and the extended-ack message.
func opError(op, ifname string, err error) error {
	var ne *netlink.OpError
	if errors.As(err, &ne) {
		return &OpError{Subsystem: "nic", Op: op, Ifname: ifname, Err: ne.Err, Message: ne.Message}
	}
	return &OpError{Subsystem: "nic", Op: op, Ifname: ifname, Err: err}
}

// execute sends one ethtool netlink request and returns the replies.
func (d *linuxDevice) execute(op, ifname string, cmd uint8, attrs []byte, flags netlink.HeaderFlags) ([]genetlink.Message, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, &OpError{Subsystem: "nic", Op: op, Ifname: ifname, Err: net.ErrClosed}
	}
	msgs, err := d.conn.Execute(genetlink.Message{
		Header: genetlink.Header{Command: cmd, Version: ethtoolGenlVersion},
		Data:   attrs,
	}, d.family, flags)
	if err != nil {
		return nil, opError(op, ifname, err)
	}
	return msgs, nil
}

// get sends a get request and returns the attributes of its single reply.
func (d *linuxDevice) get(op, ifname string, cmd uint8, attrs []byte, err error) ([]byte, error) {
	if err != nil {
		return nil, fmt.Errorf("nic: encode %s request: %w", op, err)
	}
	msgs, err := d.execute(op, ifname, cmd, attrs, netlink.Request)
	if err != nil {
		return nil, err
	}
	if len(msgs) != 1 {
		return nil, fmt.Errorf("nic: %s %s: expected 1 reply message, got %d", op, ifname, len(msgs))
	}
	return msgs[0].Data, nil
}

// set sends a set request and waits for the acknowledgement.
func (d *linuxDevice) set(op, ifname string, cmd uint8, attrs []byte, err error) error {
	if err != nil {
		return fmt.Errorf("nic: encode %s request: %w", op, err)
	}
	_, err = d.execute(op, ifname, cmd, attrs, netlink.Request|netlink.Acknowledge)
	return err
}

func (d *linuxDevice) rings(ifname string) (RingConfig, error) {
	req, err := encodeRingsGet(ifname)
	b, err := d.get("rings-get", ifname, ethtoolMsgRingsGet, req, err)
	if err != nil {
		return RingConfig{}, err
	}
	return decodeRings(b)
}

func (d *linuxDevice) setRings(ifname string, tds TCPDataSplit, hds *uint32) error {
	req, err := encodeRingsSet(ifname, tds, hds)
	return d.set("rings-set", ifname, ethtoolMsgRingsSet, req, err)
}

func (d *linuxDevice) features(ifname string) (Features, error) {
	req, err := encodeFeaturesGet(ifname)
	b, err := d.get("features-get", ifname, ethtoolMsgFeaturesGet, req, err)
	if err != nil {
		return Features{}, err
	}
	return decodeFeatures(b)
}

func (d *linuxDevice) setFeature(ifname, name string, on bool) error {
	req, err := encodeFeaturesSet(ifname, name, on)
	return d.set("features-set", ifname, ethtoolMsgFeaturesSet, req, err)
}

func (d *linuxDevice) channels(ifname string) (Channels, error) {
	req, err := encodeChannelsGet(ifname)
	b, err := d.get("channels-get", ifname, ethtoolMsgChannelsGet, req, err)
	if err != nil {
		return Channels{}, err
	}
	return decodeChannels(b)
}

// ifreqData is struct ifreq with ifr_data set: the interface name and a
// pointer to the ethtool command structure. The union is padded to its
// 64-bit size (24 bytes); the kernel copies sizeof(struct ifreq) from user
// space, which is never more than this.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ioctl issues SIOCETHTOOL for ifname with data pointing at the command
// structure (whose first field is the ETHTOOL_* command). The caller keeps
// data alive; the pointer is stored in a heap-allocated ifreq for the
// duration of the call.
func (d *linuxDevice) ioctl(op, ifname string, data unsafe.Pointer) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return &OpError{Subsystem: "nic", Op: op, Ifname: ifname, Err: net.ErrClosed}
	}
	rc, err := d.conn.SyscallConn()
	if err != nil {
		return &OpError{Subsystem: "nic", Op: op, Ifname: ifname, Err: err}
	}
	ifr := &ifreqData{data: data}
	copy(ifr.name[:unix.IFNAMSIZ-1], ifname)
	var errno syscall.Errno
	cerr := rc.Control(func(fd uintptr) {
		for {
			_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, siocEthtool, uintptr(unsafe.Pointer(ifr)))
			if errno != unix.EINTR {
				return
			}
		}
	})
	runtime.KeepAlive(ifr)
	if cerr != nil {
		return &OpError{Subsystem: "nic", Op: op, Ifname: ifname, Err: cerr}
	}
	if errno != 0 {
		return &OpError{Subsystem: "nic", Op: op, Ifname: ifname, Err: errno}
	}
	return nil
}

func (d *linuxDevice) rssTable(ifname string) ([]uint32, error) {
	// First call with size 0: the kernel answers with the table size.
	h := &ethtoolRxfhIndir{Cmd: ethtoolGRXFHINDIR}
	if err := d.ioctl("ETHTOOL_GRXFHINDIR", ifname, unsafe.Pointer(h)); err != nil {
		return nil, err
	}
	n := h.Size
	if n == 0 {
		return nil, &OpError{Subsystem: "nic", Op: "ETHTOOL_GRXFHINDIR", Ifname: ifname, Err: unix.EOPNOTSUPP}
	}
	buf := make([]uint32, 2+int(n))
	h = (*ethtoolRxfhIndir)(unsafe.Pointer(&buf[0]))
	h.Cmd, h.Size = ethtoolGRXFHINDIR, n
	if err := d.ioctl("ETHTOOL_GRXFHINDIR", ifname, unsafe.Pointer(&buf[0])); err != nil {
		return nil, err
	}
	if h.Size != n {
		return nil, fmt.Errorf("nic: ETHTOOL_GRXFHINDIR %s: table size changed from %d to %d", ifname, n, h.Size)
	}
	return append([]uint32(nil), buf[2:]...), nil
}

func (d *linuxDevice) setRSSTable(ifname string, table []uint32) error {
	buf := make([]uint32, 2+len(table))
	h := (*ethtoolRxfhIndir)(unsafe.Pointer(&buf[0]))
	h.Cmd, h.Size = ethtoolSRXFHINDIR, uint32(len(table))
	copy(buf[2:], table)
	return d.ioctl("ETHTOOL_SRXFHINDIR", ifname, unsafe.Pointer(&buf[0]))
}

func (d *linuxDevice) insertRule(ifname string, r FlowRule) (uint32, error) {
	if err := rxnfcLayoutOK(); err != nil {
		return 0, err
	}
	loc, err := d.ruleLocation(ifname)
	if err != nil {
		return 0, err
	}
	nfc, err := ruleInsert(r, loc)
	if err != nil {
		return 0, err
	}
	p := &nfc
	if err := d.ioctl("ETHTOOL_SRXCLSRLINS", ifname, unsafe.Pointer(p)); err != nil {
		return 0, err
	}
	// The kernel copies the request back with the location the driver
	// chose.
	return p.FS.Location, nil
}

// ruleLocation returns RX_CLS_LOC_ANY when the driver chooses locations
// itself (RX_CLS_LOC_SPECIAL in the GRXCLSRLCNT answer) or cannot say (no
// get_rxnfc: the insert then reports the driver's answer), and otherwise the
// last free slot of the rule table, as the ethtool command does.
func (d *linuxDevice) ruleLocation(ifname string) (uint32, error) {
	cnt := &ethtoolRxnfc{Cmd: ethtoolGRXCLSRLCNT}
	if err := d.ioctl("ETHTOOL_GRXCLSRLCNT", ifname, unsafe.Pointer(cnt)); err != nil {
		if errors.Is(err, ErrNotSupported) {
			return rxClsLocAny, nil
		}
		return 0, err
	}
	if cnt.Data&rxClsLocSpecial != 0 {
		return rxClsLocAny, nil
	}
	size, used, err := d.ruleLocations(ifname, cnt.RuleCnt)
	if err != nil {
		return 0, err
	}
	loc, ok := pickLocation(size, used)
	if !ok {
		return 0, &OpError{Subsystem: "nic", Op: "ETHTOOL_GRXCLSRLALL", Ifname: ifname, Err: unix.ENOSPC}
	}
	return loc, nil
}

// ruleLocations reads the rule table size and the locations in use
// (ETHTOOL_GRXCLSRLALL with room for n locations after the struct).
func (d *linuxDevice) ruleLocations(ifname string, n uint32) (size uint32, used []uint32, err error) {
	const maxRules = 1 << 16
	if n > maxRules {
		return 0, nil, fmt.Errorf("nic: ETHTOOL_GRXCLSRLCNT %s: implausible rule count %d", ifname, n)
	}
	bytes := max(unsafe.Sizeof(ethtoolRxnfc{}), rxnfcRuleLocsOffset+4*uintptr(n))
	buf := make([]uint64, (bytes+7)/8)
	base := unsafe.Pointer(&buf[0])
	nfc := (*ethtoolRxnfc)(base)
	nfc.Cmd, nfc.RuleCnt = ethtoolGRXCLSRLALL, n
	if err := d.ioctl("ETHTOOL_GRXCLSRLALL", ifname, base); err != nil {
		return 0, nil, err
	}
	got := min(nfc.RuleCnt, n)
	locs := unsafe.Slice((*uint32)(unsafe.Add(base, rxnfcRuleLocsOffset)), got)
	return uint32(nfc.Data), append([]uint32(nil), locs...), nil
}

func (d *linuxDevice) deleteRule(ifname string, loc uint32) error {
	if err := rxnfcLayoutOK(); err != nil {
		return err
	}
	nfc := &ethtoolRxnfc{Cmd: ethtoolSRXCLSRLDEL}
	nfc.FS.Location = loc
	return d.ioctl("ETHTOOL_SRXCLSRLDEL", ifname, unsafe.Pointer(nfc))
}

// netAdmin reports whether CAP_NET_ADMIN is in the effective set.
func (d *linuxDevice) netAdmin() (bool, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, fmt.Errorf("nic: capget: %w", err)
	}
	return data[unix.CAP_NET_ADMIN/32].Effective&(1<<(unix.CAP_NET_ADMIN%32)) != 0, nil
}

// driverInfo issues ETHTOOL_GDRVINFO (struct ethtool_drvinfo, 196 bytes).
func (d *linuxDevice) driverInfo(ifname string) (DriverInfo, error) {
	info := &unix.EthtoolDrvinfo{Cmd: unix.ETHTOOL_GDRVINFO}
	if err := d.ioctl("ETHTOOL_GDRVINFO", ifname, unsafe.Pointer(info)); err != nil {
		return DriverInfo{}, err
	}
	return DriverInfo{
		Driver:          unix.ByteSliceToString(info.Driver[:]),
		Version:         unix.ByteSliceToString(info.Version[:]),
		FirmwareVersion: unix.ByteSliceToString(info.Fw_version[:]),
		BusInfo:         unix.ByteSliceToString(info.Bus_info[:]),
	}, nil
}
