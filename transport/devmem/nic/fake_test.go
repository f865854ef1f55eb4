package nic

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"syscall"
)

// fakeDevice is a NIC at the package's seam that supports everything
// devmem needs. It logs every call that changes state, and fail injects
// errors: it is asked before each operation (named as in the log, with the
// call count for that name) and a non-nil answer is returned instead.
type fakeDevice struct {
	mu sync.Mutex

	ifname     string
	state      fakeState
	changeable map[string]bool
	admin      bool
	// no5Tuple makes rules with a source fail EOPNOTSUPP.
	no5Tuple bool
	// info is what driverInfo reports.
	info DriverInfo
	// hdsNeedsGROHW models mlx5: tcp-data-split on is refused with
	// EINVAL unless rx-gro-hw is on.
	hdsNeedsGROHW bool

	log   []string
	calls map[string]int
	fail  func(op string, n int) error
}

// fakeState is everything Setup may change, for before/after comparison.
type fakeState struct {
	Rings    RingConfig
	Features map[string]bool
	Channels Channels
	RSS      []uint32
	Rules    map[uint32]FlowRule
}

// newFakeDevice returns an 8-queue NIC with a stock configuration: ntuple
// off, header split off with threshold 256, default RSS over all queues.
func newFakeDevice() *fakeDevice {
	return &fakeDevice{
		ifname: "eth0",
		state: fakeState{
			Rings: RingConfig{RX: 1024, RXMax: 4096, TX: 1024, TXMax: 4096,
				TCPDataSplit: TCPDataSplitDisabled, HasHDSThresh: true, HDSThresh: 256, HDSThreshMax: 1024},
			Features: map[string]bool{"rx-gro": true},
			Channels: Channels{CombinedCount: 8, CombinedMax: 16},
			RSS:      equalTable(128, 8),
			Rules:    map[uint32]FlowRule{},
		},
		changeable: map[string]bool{"rx-gro": true, FeatureNtuple: true},
		admin:      true,
		info:       DriverInfo{Driver: "fakenic", Version: "6.18.0", FirmwareVersion: "1.2.3", BusInfo: "0000:3b:00.0"},
		calls:      map[string]int{},
	}
}

// mlx5GROHWExtack is mlx5e_ethtool_set_tcp_data_split's refusal.
const mlx5GROHWExtack = "TCP-data-split is not supported when GRO HW is disabled"

// newMLX5Device returns a ConnectX NIC as mlx5_core shows it before anyone
// configured header split: rx-gro-hw off but changeable, tcp-data-split
// never set (the kernel leaves the attribute out of its rings reply, and
// mlx5 does not fill it in), no hds-thresh, and the refusal of
// tcp-data-split on while rx-gro-hw is off.
func newMLX5Device() *fakeDevice {
	d := newFakeDevice()
	d.info = DriverInfo{Driver: DriverMLX5, Version: "6.18.0", FirmwareVersion: "22.39.1002", BusInfo: "0000:3b:00.0"}
	d.changeable[FeatureGROHW] = true
	d.state.Rings.TCPDataSplit = TCPDataSplitUnknown
	d.state.Rings.HasHDSThresh, d.state.Rings.HDSThresh, d.state.Rings.HDSThreshMax = false, 0, 0
	d.hdsNeedsGROHW = true
	return d
}

func (s fakeState) clone() fakeState {
	s.Features = maps.Clone(s.Features)
	s.RSS = slices.Clone(s.RSS)
	s.Rules = maps.Clone(s.Rules)
	return s
}

func (f *fakeDevice) snapshot() fakeState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state.clone()
}

func (f *fakeDevice) takeLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.log
	f.log = nil
	return l
}

// enter counts the call, checks the interface and asks fail. f.mu is held.
func (f *fakeDevice) enter(op, ifname string) error {
	f.calls[op]++
	if ifname != f.ifname {
		return &OpError{Op: op, Ifname: ifname, Err: syscall.ENODEV, Message: "no device matches name"}
	}
	if f.fail != nil {
		if err := f.fail(op, f.calls[op]); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeDevice) rings(ifname string) (RingConfig, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("rings", ifname); err != nil {
		return RingConfig{}, err
	}
	return f.state.Rings, nil
}

func (f *fakeDevice) setRings(ifname string, tds TCPDataSplit, hds *uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	entry := "set-rings tcp-data-split " + tds.String()
	if hds != nil {
		entry += fmt.Sprintf(" hds-thresh %d", *hds)
	}
	if err := f.enter("set-rings", ifname); err != nil {
		return err
	}
	if hds != nil && !f.state.Rings.HasHDSThresh {
		return &OpError{Op: "rings-set", Ifname: ifname, Err: syscall.EOPNOTSUPP, Message: "setting hds-thresh is not supported"}
	}
	if f.hdsNeedsGROHW && tds == TCPDataSplitEnabled && !f.state.Features[FeatureGROHW] {
		return &OpError{Op: "rings-set", Ifname: ifname, Err: syscall.EINVAL, Message: "mlx5_core: " + mlx5GROHWExtack}
	}
	f.log = append(f.log, entry)
	f.state.Rings.TCPDataSplit = tds
	if hds != nil {
		f.state.Rings.HDSThresh = *hds
	}
	return nil
}

func (f *fakeDevice) features(ifname string) (Features, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("features", ifname); err != nil {
		return Features{}, err
	}
	var feat Features
	for _, n := range slices.Sorted(maps.Keys(f.state.Features)) {
		if f.state.Features[n] {
			feat.Active = append(feat.Active, n)
		}
	}
	feat.Changeable = slices.Sorted(maps.Keys(f.changeable))
	return feat, nil
}

func (f *fakeDevice) setFeature(ifname, name string, on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("set-feature", ifname); err != nil {
		return err
	}
	f.log = append(f.log, "set-feature "+name+" "+onOff(on))
	switch {
	case !f.changeable[name]:
	case on:
		f.state.Features[name] = true
	default:
		delete(f.state.Features, name)
	}
	return nil
}

func (f *fakeDevice) channels(ifname string) (Channels, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("channels", ifname); err != nil {
		return Channels{}, err
	}
	return f.state.Channels, nil
}

func (f *fakeDevice) rssTable(ifname string) ([]uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("rss", ifname); err != nil {
		return nil, err
	}
	return slices.Clone(f.state.RSS), nil
}

func (f *fakeDevice) setRSSTable(ifname string, table []uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("set-rss", ifname); err != nil {
		return err
	}
	switch {
	case len(table) == 0:
		f.log = append(f.log, "set-rss default")
		f.state.RSS = equalTable(len(f.state.RSS), f.state.Channels.RXQueues())
		return nil
	case len(table) != len(f.state.RSS):
		return &OpError{Op: "ETHTOOL_SRXFHINDIR", Ifname: ifname, Err: syscall.EINVAL}
	}
	f.log = append(f.log, "set-rss "+describeTable(table))
	f.state.RSS = slices.Clone(table)
	return nil
}

func (f *fakeDevice) insertRule(ifname string, r FlowRule) (uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("insert-rule", ifname); err != nil {
		return 0, err
	}
	if f.no5Tuple && r.hasSource() {
		return 0, &OpError{Op: "ETHTOOL_SRXCLSRLINS", Ifname: ifname, Err: syscall.EOPNOTSUPP}
	}
	loc, ok := pickLocation(1024, slices.Collect(maps.Keys(f.state.Rules)))
	if !ok {
		return 0, &OpError{Op: "ETHTOOL_SRXCLSRLINS", Ifname: ifname, Err: syscall.ENOSPC}
	}
	f.log = append(f.log, fmt.Sprintf("insert-rule %d %v", loc, r))
	f.state.Rules[loc] = r
	return loc, nil
}

func (f *fakeDevice) deleteRule(ifname string, loc uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("delete-rule", ifname); err != nil {
		return err
	}
	if _, ok := f.state.Rules[loc]; !ok {
		return &OpError{Op: "ETHTOOL_SRXCLSRLDEL", Ifname: ifname, Err: syscall.ENOENT}
	}
	f.log = append(f.log, fmt.Sprintf("delete-rule %d", loc))
	delete(f.state.Rules, loc)
	return nil
}

func (f *fakeDevice) driverInfo(ifname string) (DriverInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("drvinfo", ifname); err != nil {
		return DriverInfo{}, err
	}
	return f.info, nil
}

func (f *fakeDevice) netAdmin() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.admin, nil
}

// failAt returns a fail hook that fails the n-th call of op with err.
func failAt(op string, n int, err error) func(string, int) error {
	return func(o string, c int) error {
		if o == op && c == n {
			return err
		}
		return nil
	}
}

// opErr is an errno refusal as the kernel would give it.
func opErr(op string, errno syscall.Errno, msg string) error {
	return &OpError{Op: op, Ifname: "eth0", Err: errno, Message: msg}
}
