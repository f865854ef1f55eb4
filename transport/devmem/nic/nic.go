package nic

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"syscall"
)

// TCPDataSplit is the ethtool tcp-data-split setting (enum
// ethtool_tcp_data_split in the kernel's ethtool uapi).
type TCPDataSplit uint8

// Values of TCPDataSplit. They are the kernel's values; note that ncdevmem's
// string helper labels 0/1/2 as off/auto/on, which is wrong.
const (
	// TCPDataSplitUnknown (0): in a reply, the driver did not report the
	// setting (it does not support header split); in a request, "auto":
	// the driver's default.
	TCPDataSplitUnknown TCPDataSplit = 0
	// TCPDataSplitDisabled (1): header split off.
	TCPDataSplitDisabled TCPDataSplit = 1
	// TCPDataSplitEnabled (2): header split on. bind-rx requires this value
	// to have been set explicitly.
	TCPDataSplitEnabled TCPDataSplit = 2
)

// String returns the word the ethtool command uses for the value: "auto"
// for unknown, "off", "on", or a number for values the kernel does not
// define.
func (t TCPDataSplit) String() string {
	switch t {
	case TCPDataSplitUnknown:
		return "auto"
	case TCPDataSplitDisabled:
		return "off"
	case TCPDataSplitEnabled:
		return "on"
	}
	return "tcp-data-split(" + strconv.Itoa(int(t)) + ")"
}

// RingConfig is what ETHTOOL_MSG_RINGS_GET reports for an interface. The
// kernel leaves out attributes a driver does not support; such fields are 0.
type RingConfig struct {
	// RX and RXMax are the current and maximum RX ring sizes.
	RX, RXMax uint32
	// TX and TXMax are the current and maximum TX ring sizes.
	TX, TXMax uint32
	// RXBufLen is the RX buffer length, 0 when not reported.
	RXBufLen uint32
	// TCPDataSplit is the header-split state; TCPDataSplitUnknown when the
	// driver does not report it.
	TCPDataSplit TCPDataSplit
	// HasHDSThresh reports whether the kernel sent hds-thresh, which it
	// does only for drivers that support setting it.
	HasHDSThresh bool
	// HDSThresh is the header-split threshold: packets shorter than this
	// are not split. devmem needs 0.
	HDSThresh uint32
	// HDSThreshMax is the largest threshold the driver accepts.
	HDSThreshMax uint32
}

// FeatureNtuple is the ethtool name of the ntuple flow-steering feature
// (NETIF_F_NTUPLE; "ntuple" on the ethtool command line).
const FeatureNtuple = "rx-ntuple-filter"

// Features is what ETHTOOL_MSG_FEATURES_GET reports: the names of the
// device's active features and of those the user may change.
type Features struct {
	// Active lists the features currently on, in kernel bit order.
	Active []string
	// Changeable lists the features the user may toggle (the driver's
	// hw_features minus those that never change). A feature that is not
	// changeable is what ethtool prints as "[fixed]".
	Changeable []string
}

// IsActive reports whether the named feature is on.
func (f Features) IsActive(name string) bool { return slices.Contains(f.Active, name) }

// IsChangeable reports whether the named feature can be toggled.
func (f Features) IsChangeable(name string) bool { return slices.Contains(f.Changeable, name) }

// Ntuple reports whether ntuple flow steering (rx-ntuple-filter) is on.
func (f Features) Ntuple() bool { return f.IsActive(FeatureNtuple) }

// FeatureGROHW is the ethtool name of hardware GRO (NETIF_F_GRO_HW;
// "rx-gro-hw" on the ethtool command line). mlx5 refuses tcp-data-split on
// while it is off (see DriverNeedsGROHW).
const FeatureGROHW = "rx-gro-hw"

// DriverMLX5 is the driver name NVIDIA ConnectX NICs report (ethtool -i).
const DriverMLX5 = "mlx5_core"

// DriverNeedsGROHW reports whether the driver refuses header split unless
// hardware GRO (rx-gro-hw) is on. mlx5 does: its tcp-data-split is SHAMPO,
// part of hardware GRO, and mlx5e_ethtool_set_tcp_data_split answers
// EINVAL, "TCP-data-split is not supported when GRO HW is disabled".
func DriverNeedsGROHW(driver string) bool { return driver == DriverMLX5 }

// DriverInfo is what ETHTOOL_GDRVINFO ("ethtool -i") reports about the
// driver behind an interface. Empty fields were not reported.
type DriverInfo struct {
	// Driver is the driver's name, e.g. "mlx5_core", "gve", "virtio_net".
	Driver string
	// Version is the driver's version string (for in-tree drivers usually
	// the kernel release).
	Version string
	// FirmwareVersion is the NIC's firmware version.
	FirmwareVersion string
	// BusInfo is the device's bus address, for a PCI NIC its PCI address
	// ("0000:3b:00.0").
	BusInfo string
}

// Channels is what ETHTOOL_MSG_CHANNELS_GET reports: how many queues of each
// kind the device runs, and the maximums.
type Channels struct {
	// RXCount, TXCount, OtherCount and CombinedCount are the channels in
	// use: RX-only, TX-only, other (link interrupts) and combined RX+TX.
	RXCount, TXCount, OtherCount, CombinedCount uint32
	// RXMax, TXMax, OtherMax and CombinedMax are the driver's limits.
	RXMax, TXMax, OtherMax, CombinedMax uint32
}

// RXQueues returns the number of RX queues: dedicated RX channels plus
// combined channels, the count ncdevmem uses.
func (c Channels) RXQueues() uint32 { return c.RXCount + c.CombinedCount }

// A FlowRule steers one TCP flow to an RX queue. DstIP and DstPort are the
// local (receiving) side. SrcIP and SrcPort are the peer; when both are zero
// only the 3-tuple (protocol, DstIP, DstPort) is matched. IPv4-mapped IPv6
// addresses are matched as IPv4 (flow-type tcp4), like ncdevmem does.
type FlowRule struct {
	SrcIP, DstIP     net.IP
	SrcPort, DstPort uint16
	// Queue is the RX queue the flow is steered to.
	Queue uint32
}

// String formats the rule like the ethtool command line.
func (r FlowRule) String() string {
	typ := "tcp6"
	if r.DstIP.To4() != nil {
		typ = "tcp4"
	}
	s := "flow-type " + typ
	if r.SrcIP != nil && !r.SrcIP.IsUnspecified() {
		s += " src-ip " + r.SrcIP.String()
	}
	s += " dst-ip " + r.DstIP.String()
	if r.SrcPort != 0 {
		s += " src-port " + strconv.Itoa(int(r.SrcPort))
	}
	s += " dst-port " + strconv.Itoa(int(r.DstPort)) + " queue " + strconv.FormatUint(uint64(r.Queue), 10)
	return s
}

// hasSource reports whether the rule matches on the peer's address or port.
func (r FlowRule) hasSource() bool {
	return (r.SrcIP != nil && !r.SrcIP.IsUnspecified()) || r.SrcPort != 0
}

// threeTuple returns the rule without its source fields.
func (r FlowRule) threeTuple() FlowRule {
	r.SrcIP, r.SrcPort = nil, 0
	return r
}

// device is the package's kernel seam: the few ethtool operations on which
// everything else (flow-rule fallback, Setup, Check) is built. The Linux
// implementation makes netlink requests and ioctls; tests inject fakes.
type device interface {
	rings(ifname string) (RingConfig, error)
	// setRings sends tcp-data-split, and hds-thresh when hds is not nil.
	setRings(ifname string, tds TCPDataSplit, hds *uint32) error
	features(ifname string) (Features, error)
	setFeature(ifname, name string, on bool) error
	channels(ifname string) (Channels, error)
	// rssTable reads the RSS indirection table.
	rssTable(ifname string) ([]uint32, error)
	// setRSSTable writes the table; an empty table resets it to the
	// driver's default spread.
	setRSSTable(ifname string, table []uint32) error
	// insertRule inserts exactly r (3-tuple when it has no source) and
	// returns the rule's location.
	insertRule(ifname string, r FlowRule) (uint32, error)
	deleteRule(ifname string, loc uint32) error
	// netAdmin reports whether the process has CAP_NET_ADMIN.
	netAdmin() (bool, error)
	// driverInfo reads the driver's name, versions and bus address.
	driverInfo(ifname string) (DriverInfo, error)
}

// A Client reads and changes the devmem-relevant configuration of network
// interfaces. It is safe for concurrent use. Close it when done; a Setup
// created by the Client needs it open until Setup.Restore has run.
type Client struct {
	dev device

	closeOnce sync.Once
	closeErr  error
	close     func() error
}

// newClient wraps a device; close may be nil.
func newClient(d device, closeFn func() error) *Client {
	return &Client{dev: d, close: closeFn}
}

// Close releases the Client's socket. It is safe to call more than once.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		if c.close != nil {
			c.closeErr = c.close()
		}
	})
	return c.closeErr
}

// Rings reads the ring configuration of ifname, including tcp-data-split
// and hds-thresh. A driver without ring parameters (loopback, veth) makes the
// kernel answer EOPNOTSUPP: errors.Is(err, ErrNotSupported).
func (c *Client) Rings(ifname string) (RingConfig, error) {
	if err := checkIfname(ifname); err != nil {
		return RingConfig{}, err
	}
	return c.dev.rings(ifname)
}

// SetHeaderSplit turns TCP header/data split on or off. When on, it sends
// tcp-data-split "on" (TCPDataSplitEnabled) together with hdsThresh in one
// RINGS_SET request; devmem needs hdsThresh 0. When off, it sends only
// tcp-data-split "off" and ignores hdsThresh.
//
// hds-thresh is only sent to drivers that report it (see
// RingConfig.HasHDSThresh); the others keep the kernel's value of 0, and a
// non-zero hdsThresh for them fails with ErrNotSupported. When the driver
// has no ring parameters at all, the request is still sent, so the error is
// the kernel's own answer to RINGS_SET (on 6.18: EOPNOTSUPP, "setting TCP
// data split is not supported").
func (c *Client) SetHeaderSplit(ifname string, on bool, hdsThresh uint32) error {
	if err := checkIfname(ifname); err != nil {
		return err
	}
	if !on {
		return c.dev.setRings(ifname, TCPDataSplitDisabled, nil)
	}
	// Read first to learn whether the driver has hds-thresh. If even the
	// read is unsupported, send both attributes anyway: the kernel's
	// answer to the set request is the authoritative error.
	rc, err := c.dev.rings(ifname)
	if err != nil && !errors.Is(err, ErrNotSupported) {
		return err
	}
	hds := &hdsThresh
	if err == nil && !rc.HasHDSThresh {
		if hdsThresh != 0 {
			return notSupportedf("nic: rings-set %s: the driver has no hds-thresh, cannot set it to %d", ifname, hdsThresh)
		}
		hds = nil
	}
	return c.dev.setRings(ifname, TCPDataSplitEnabled, hds)
}

// DriverInfo reads the interface's driver name, driver and firmware
// versions and bus address (ETHTOOL_GDRVINFO, what "ethtool -i" shows). A
// device without a driver behind it (loopback) answers EOPNOTSUPP.
func (c *Client) DriverInfo(ifname string) (DriverInfo, error) {
	if err := checkIfname(ifname); err != nil {
		return DriverInfo{}, err
	}
	return c.dev.driverInfo(ifname)
}

// Features reads the device's features (verbose bitsets, so names come with
// the bits).
func (c *Client) Features(ifname string) (Features, error) {
	if err := checkIfname(ifname); err != nil {
		return Features{}, err
	}
	return c.dev.features(ifname)
}

// SetNtuple turns ntuple flow steering (rx-ntuple-filter, "ethtool -K ntuple")
// on or off and verifies that the device took the change. The kernel accepts
// a request for a fixed feature without error and leaves it unchanged; this
// method reports that as an error wrapping ErrNotSupported.
func (c *Client) SetNtuple(ifname string, on bool) error {
	if err := checkIfname(ifname); err != nil {
		return err
	}
	return setFeature(c.dev, ifname, FeatureNtuple, on)
}

// setFeature toggles a feature and checks the result.
func setFeature(d device, ifname, name string, on bool) error {
	f, err := d.features(ifname)
	if err != nil {
		return err
	}
	if f.IsActive(name) == on {
		return nil
	}
	if !f.IsChangeable(name) {
		return notSupportedf("nic: features-set %s: %s is fixed %s on this device", ifname, name, onOff(f.IsActive(name)))
	}
	if err := d.setFeature(ifname, name, on); err != nil {
		return err
	}
	f, err = d.features(ifname)
	if err != nil {
		return err
	}
	if f.IsActive(name) != on {
		return fmt.Errorf("nic: features-set %s: the kernel accepted %s %s but the feature is still %s (a dependent feature or the driver refused it)", ifname, name, onOff(on), onOff(!on))
	}
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// Channels reads the device's channel (queue) counts.
func (c *Client) Channels(ifname string) (Channels, error) {
	if err := checkIfname(ifname); err != nil {
		return Channels{}, err
	}
	return c.dev.channels(ifname)
}

// InsertFlowRule inserts an ntuple rule steering r to r.Queue and returns its
// location (driver-chosen: RX_CLS_LOC_ANY when the driver supports it,
// otherwise the last free slot, as the ethtool command does). Like ncdevmem,
// it first tries the full rule and, when the kernel answers EOPNOTSUPP or
// EINVAL (many NICs cannot match on the source), falls back to the 3-tuple
// (DstIP, DstPort). If both fail the error wraps both attempts' errors.
func (c *Client) InsertFlowRule(ifname string, r FlowRule) (uint32, error) {
	if err := checkIfname(ifname); err != nil {
		return 0, err
	}
	return insertFlowRule(c.dev, ifname, r)
}

func insertFlowRule(d device, ifname string, r FlowRule) (uint32, error) {
	if err := r.validate(); err != nil {
		return 0, err
	}
	loc, err := d.insertRule(ifname, r)
	if err == nil || !r.hasSource() || !fallbackErr(err) {
		return loc, err
	}
	loc, err3 := d.insertRule(ifname, r.threeTuple())
	if err3 != nil {
		return 0, fmt.Errorf("nic: insert flow rule %v on %s: 5-tuple: %w; 3-tuple fallback: %w", r, ifname, err, err3)
	}
	return loc, nil
}

// validate checks that the rule's addresses are usable.
func (r FlowRule) validate() error {
	if r.DstIP == nil || r.DstIP.IsUnspecified() {
		return fmt.Errorf("nic: flow rule %v: destination IP is required", r)
	}
	if r.DstPort == 0 {
		return fmt.Errorf("nic: flow rule %v: destination port is required", r)
	}
	if r.DstIP.To16() == nil {
		return fmt.Errorf("nic: flow rule: invalid destination IP %v", r.DstIP)
	}
	if r.SrcIP != nil && !r.SrcIP.IsUnspecified() {
		if r.SrcIP.To16() == nil {
			return fmt.Errorf("nic: flow rule: invalid source IP %v", r.SrcIP)
		}
		if (r.SrcIP.To4() == nil) != (r.DstIP.To4() == nil) {
			return fmt.Errorf("nic: flow rule %v: source and destination IP families differ", r)
		}
	}
	return nil
}

// fallbackErr reports whether a failed 5-tuple insert should be retried as a
// 3-tuple: the driver cannot match on the source (EOPNOTSUPP) or rejects the
// mask (EINVAL).
func fallbackErr(err error) bool {
	return errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EINVAL)
}

// DeleteFlowRule deletes the ntuple rule at loc.
func (c *Client) DeleteFlowRule(ifname string, loc uint32) error {
	if err := checkIfname(ifname); err != nil {
		return err
	}
	return c.dev.deleteRule(ifname, loc)
}

// RSSIndirection reads the RSS indirection table: entry i is the RX queue
// that receives flows whose hash selects slot i.
func (c *Client) RSSIndirection(ifname string) ([]uint32, error) {
	if err := checkIfname(ifname); err != nil {
		return nil, err
	}
	return c.dev.rssTable(ifname)
}

// SetRSSIndirection writes the RSS indirection table. The table must have the
// device's size (the length RSSIndirection returns); an empty table resets it
// to the driver's default ("ethtool -X default").
func (c *Client) SetRSSIndirection(ifname string, table []uint32) error {
	if err := checkIfname(ifname); err != nil {
		return err
	}
	return c.dev.setRSSTable(ifname, table)
}

// SetRSSEqual spreads RSS evenly over queues [0, n) ("ethtool -X equal n"), so
// queues n and above receive no RSS traffic. It returns the previous table.
func (c *Client) SetRSSEqual(ifname string, n uint32) (old []uint32, err error) {
	if err := checkIfname(ifname); err != nil {
		return nil, err
	}
	old, err = c.dev.rssTable(ifname)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("nic: rss %s: cannot spread over 0 queues", ifname)
	}
	return old, c.dev.setRSSTable(ifname, equalTable(len(old), n))
}

// equalTable returns an indirection table of size entries spread round-robin
// over queues [0, n), what "ethtool -X equal n" writes and what the kernel's
// default (ethtool_rxfh_indir_default) is for n RX rings.
func equalTable(size int, n uint32) []uint32 {
	t := make([]uint32, size)
	for i := range t {
		t[i] = uint32(i) % n
	}
	return t
}

// equalOver reports the n for which t == equalTable(len(t), n), or 0.
func equalOver(t []uint32) uint32 {
	if len(t) == 0 {
		return 0
	}
	n := uint32(0)
	for _, q := range t {
		n = max(n, q+1)
	}
	if n == 0 || !slices.Equal(t, equalTable(len(t), n)) {
		return 0
	}
	return n
}

// checkIfname rejects names the kernel cannot resolve. The SIOCETHTOOL ioctl
// takes at most IFNAMSIZ-1 (15) bytes.
func checkIfname(ifname string) error {
	if ifname == "" {
		return errors.New("nic: empty interface name")
	}
	if len(ifname) >= 16 {
		return fmt.Errorf("nic: interface name %q longer than 15 bytes", ifname)
	}
	return nil
}
