//go:build linux

package nic

import (
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestConstantsMatchXSys pins the package's portable ABI constants to
// golang.org/x/sys/unix.
func TestConstantsMatchXSys(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"ETHTOOL_GENL_VERSION", ethtoolGenlVersion, unix.ETHTOOL_GENL_VERSION},
		{"ETHTOOL_MSG_FEATURES_GET", ethtoolMsgFeaturesGet, unix.ETHTOOL_MSG_FEATURES_GET},
		{"ETHTOOL_MSG_FEATURES_SET", ethtoolMsgFeaturesSet, unix.ETHTOOL_MSG_FEATURES_SET},
		{"ETHTOOL_MSG_RINGS_GET", ethtoolMsgRingsGet, unix.ETHTOOL_MSG_RINGS_GET},
		{"ETHTOOL_MSG_RINGS_SET", ethtoolMsgRingsSet, unix.ETHTOOL_MSG_RINGS_SET},
		{"ETHTOOL_MSG_CHANNELS_GET", ethtoolMsgChannelsGet, unix.ETHTOOL_MSG_CHANNELS_GET},
		{"ETHTOOL_A_HEADER_DEV_INDEX", ethtoolAHeaderDevIndex, unix.ETHTOOL_A_HEADER_DEV_INDEX},
		{"ETHTOOL_A_HEADER_DEV_NAME", ethtoolAHeaderDevName, unix.ETHTOOL_A_HEADER_DEV_NAME},
		{"ETHTOOL_A_HEADER_FLAGS", ethtoolAHeaderFlags, unix.ETHTOOL_A_HEADER_FLAGS},
		{"ETHTOOL_FLAG_OMIT_REPLY", ethtoolFlagOmitReply, unix.ETHTOOL_FLAG_OMIT_REPLY},
		{"ETHTOOL_A_RINGS_HEADER", ethtoolARingsHeader, unix.ETHTOOL_A_RINGS_HEADER},
		{"ETHTOOL_A_RINGS_RX_MAX", ethtoolARingsRXMax, unix.ETHTOOL_A_RINGS_RX_MAX},
		{"ETHTOOL_A_RINGS_TX_MAX", ethtoolARingsTXMax, unix.ETHTOOL_A_RINGS_TX_MAX},
		{"ETHTOOL_A_RINGS_RX", ethtoolARingsRX, unix.ETHTOOL_A_RINGS_RX},
		{"ETHTOOL_A_RINGS_TX", ethtoolARingsTX, unix.ETHTOOL_A_RINGS_TX},
		{"ETHTOOL_A_RINGS_RX_BUF_LEN", ethtoolARingsRXBufLen, unix.ETHTOOL_A_RINGS_RX_BUF_LEN},
		{"ETHTOOL_A_RINGS_TCP_DATA_SPLIT", ethtoolARingsTCPDataSplit, unix.ETHTOOL_A_RINGS_TCP_DATA_SPLIT},
		{"ETHTOOL_A_RINGS_HDS_THRESH", ethtoolARingsHDSThresh, unix.ETHTOOL_A_RINGS_HDS_THRESH},
		{"ETHTOOL_A_RINGS_HDS_THRESH_MAX", ethtoolARingsHDSThreshMax, unix.ETHTOOL_A_RINGS_HDS_THRESH_MAX},
		{"ETHTOOL_A_FEATURES_HEADER", ethtoolAFeaturesHeader, unix.ETHTOOL_A_FEATURES_HEADER},
		{"ETHTOOL_A_FEATURES_HW", ethtoolAFeaturesHW, unix.ETHTOOL_A_FEATURES_HW},
		{"ETHTOOL_A_FEATURES_WANTED", ethtoolAFeaturesWanted, unix.ETHTOOL_A_FEATURES_WANTED},
		{"ETHTOOL_A_FEATURES_ACTIVE", ethtoolAFeaturesActive, unix.ETHTOOL_A_FEATURES_ACTIVE},
		{"ETHTOOL_A_FEATURES_NOCHANGE", ethtoolAFeaturesNochange, unix.ETHTOOL_A_FEATURES_NOCHANGE},
		{"ETHTOOL_A_BITSET_NOMASK", ethtoolABitsetNomask, unix.ETHTOOL_A_BITSET_NOMASK},
		{"ETHTOOL_A_BITSET_SIZE", ethtoolABitsetSize, unix.ETHTOOL_A_BITSET_SIZE},
		{"ETHTOOL_A_BITSET_BITS", ethtoolABitsetBits, unix.ETHTOOL_A_BITSET_BITS},
		{"ETHTOOL_A_BITSET_VALUE", ethtoolABitsetValue, unix.ETHTOOL_A_BITSET_VALUE},
		{"ETHTOOL_A_BITSET_MASK", ethtoolABitsetMask, unix.ETHTOOL_A_BITSET_MASK},
		{"ETHTOOL_A_BITSET_BITS_BIT", ethtoolABitsetBitsBit, unix.ETHTOOL_A_BITSET_BITS_BIT},
		{"ETHTOOL_A_BITSET_BIT_INDEX", ethtoolABitsetBitIndex, unix.ETHTOOL_A_BITSET_BIT_INDEX},
		{"ETHTOOL_A_BITSET_BIT_NAME", ethtoolABitsetBitName, unix.ETHTOOL_A_BITSET_BIT_NAME},
		{"ETHTOOL_A_BITSET_BIT_VALUE", ethtoolABitsetBitValue, unix.ETHTOOL_A_BITSET_BIT_VALUE},
		{"ETHTOOL_A_CHANNELS_HEADER", ethtoolAChannelsHeader, unix.ETHTOOL_A_CHANNELS_HEADER},
		{"ETHTOOL_A_CHANNELS_RX_MAX", ethtoolAChannelsRXMax, unix.ETHTOOL_A_CHANNELS_RX_MAX},
		{"ETHTOOL_A_CHANNELS_TX_MAX", ethtoolAChannelsTXMax, unix.ETHTOOL_A_CHANNELS_TX_MAX},
		{"ETHTOOL_A_CHANNELS_OTHER_MAX", ethtoolAChannelsOtherMax, unix.ETHTOOL_A_CHANNELS_OTHER_MAX},
		{"ETHTOOL_A_CHANNELS_COMBINED_MAX", ethtoolAChannelsCombinedMax, unix.ETHTOOL_A_CHANNELS_COMBINED_MAX},
		{"ETHTOOL_A_CHANNELS_RX_COUNT", ethtoolAChannelsRXCount, unix.ETHTOOL_A_CHANNELS_RX_COUNT},
		{"ETHTOOL_A_CHANNELS_TX_COUNT", ethtoolAChannelsTXCount, unix.ETHTOOL_A_CHANNELS_TX_COUNT},
		{"ETHTOOL_A_CHANNELS_OTHER_COUNT", ethtoolAChannelsOtherCount, unix.ETHTOOL_A_CHANNELS_OTHER_COUNT},
		{"ETHTOOL_A_CHANNELS_COMBINED_COUNT", ethtoolAChannelsCombinedCount, unix.ETHTOOL_A_CHANNELS_COMBINED_COUNT},
		{"SIOCETHTOOL", siocEthtool, unix.SIOCETHTOOL},
		{"ETHTOOL_GRXCLSRLCNT", ethtoolGRXCLSRLCNT, unix.ETHTOOL_GRXCLSRLCNT},
		{"ETHTOOL_GRXCLSRLALL", ethtoolGRXCLSRLALL, unix.ETHTOOL_GRXCLSRLALL},
		{"ETHTOOL_SRXCLSRLDEL", ethtoolSRXCLSRLDEL, unix.ETHTOOL_SRXCLSRLDEL},
		{"ETHTOOL_SRXCLSRLINS", ethtoolSRXCLSRLINS, unix.ETHTOOL_SRXCLSRLINS},
		{"ETHTOOL_GRXFHINDIR", ethtoolGRXFHINDIR, unix.ETHTOOL_GRXFHINDIR},
		{"ETHTOOL_SRXFHINDIR", ethtoolSRXFHINDIR, unix.ETHTOOL_SRXFHINDIR},
		{"TCP_V4_FLOW", tcpV4Flow, unix.TCP_V4_FLOW},
		{"TCP_V6_FLOW", tcpV6Flow, unix.TCP_V6_FLOW},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, x/sys/unix says %d", c.name, c.got, c.want)
		}
	}
	if ethtoolGenlName != unix.ETHTOOL_GENL_NAME {
		t.Errorf("family name %q, x/sys/unix says %q", ethtoolGenlName, unix.ETHTOOL_GENL_NAME)
	}
	if got := unsafe.Sizeof(ifreqData{}); got < unsafe.Sizeof(unix.Ifreq{}) {
		t.Errorf("ifreqData is %d bytes, struct ifreq %d", got, unsafe.Sizeof(unix.Ifreq{}))
	}
}

func dialClient(t *testing.T) *Client {
	t.Helper()
	c, err := Dial()
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// wantOpErrno asserts that err is an *OpError for op carrying errno, and
// logs what the kernel said.
func wantOpErrno(t *testing.T, what string, err error, op string, errno unix.Errno) *OpError {
	t.Helper()
	t.Logf("%s: kernel answered: %v", what, err)
	var oe *OpError
	if !errors.As(err, &oe) {
		t.Fatalf("%s: error %v is not an *OpError", what, err)
	}
	if oe.Op != op || errnoOf(err) != errno {
		t.Fatalf("%s: got op %q errno %v (%d), want op %q errno %v (%d)", what, oe.Op, errnoOf(err), int(errnoOf(err)), op, errno, int(errno))
	}
	return oe
}

// TestKernelLoopback reads the host's loopback device (read-only). On 6.18
// loopback has no ring parameters, channels or RSS (EOPNOTSUPP, no extack)
// and ntuple is fixed off.
func TestKernelLoopback(t *testing.T) {
	checkFDs(t)
	c := dialClient(t)

	_, err := c.Rings("lo")
	wantOpErrno(t, "rings-get lo", err, "rings-get", unix.EOPNOTSUPP)
	if !errors.Is(err, ErrNotSupported) {
		t.Fatalf("rings-get lo: %v does not satisfy ErrNotSupported", err)
	}

	f, err := c.Features("lo")
	if err != nil {
		t.Fatalf("features-get lo: %v", err)
	}
	t.Logf("lo active features: %v", f.Active)
	if !f.IsActive("loopback") || f.Ntuple() || f.IsChangeable(FeatureNtuple) {
		t.Fatalf("lo features: loopback %v, ntuple %v, ntuple changeable %v", f.IsActive("loopback"), f.Ntuple(), f.IsChangeable(FeatureNtuple))
	}

	_, err = c.Channels("lo")
	wantOpErrno(t, "channels-get lo", err, "channels-get", unix.EOPNOTSUPP)
	// Loopback has no driver behind it: no get_drvinfo, no parent device.
	_, err = c.DriverInfo("lo")
	wantOpErrno(t, "ETHTOOL_GDRVINFO lo", err, "ETHTOOL_GDRVINFO", unix.EOPNOTSUPP)
	_, err = c.RSSIndirection("lo")
	wantOpErrno(t, "ETHTOOL_GRXFHINDIR lo", err, "ETHTOOL_GRXFHINDIR", unix.EOPNOTSUPP)

	fs := c.Check("lo")
	for _, f := range fs {
		t.Logf("check lo: %v", f)
		if f.OK != (f.Fix == "") {
			t.Errorf("finding %v: a failure needs a fix, a pass none", f)
		}
	}
	byName := map[string]Finding{}
	for _, f := range fs {
		byName[f.Name] = f
	}
	for _, name := range []string{"tcp-data-split", "hds-thresh", "ntuple", "rx-queues", "rss"} {
		if f, ok := byName[name]; !ok || f.OK {
			t.Errorf("lo: finding %q missing or OK: %v", name, f)
		}
	}
	if f := byName["tcp-data-split"]; !strings.Contains(f.Detail, "driver does not support tcp-data-split") {
		t.Errorf("tcp-data-split finding: %v", f)
	}
	if f := byName["cap-net-admin"]; f.OK != (os.Geteuid() == 0) {
		t.Errorf("cap-net-admin finding %v for euid %d", f, os.Geteuid())
	}
	// The package-level Check dials its own client.
	if got := Check("lo"); len(got) != len(fs) {
		t.Errorf("Check(lo) gave %d findings, Client.Check %d", len(got), len(fs))
	}
}

func TestKernelUnknownInterface(t *testing.T) {
	checkFDs(t)
	c := dialClient(t)
	const name = "nosuchnic0"

	_, err := c.Rings(name)
	oe := wantOpErrno(t, "rings-get", err, "rings-get", unix.ENODEV)
	if oe.Message != "no device matches name" {
		t.Errorf("extack %q, want %q", oe.Message, "no device matches name")
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%v does not satisfy os.ErrNotExist", err)
	}
	_, err = c.Features(name)
	wantOpErrno(t, "features-get", err, "features-get", unix.ENODEV)
	_, err = c.Channels(name)
	wantOpErrno(t, "channels-get", err, "channels-get", unix.ENODEV)
	err = c.SetHeaderSplit(name, true, 0)
	wantOpErrno(t, "set header split", err, "rings-get", unix.ENODEV)
	_, err = c.RSSIndirection(name)
	wantOpErrno(t, "ETHTOOL_GRXFHINDIR", err, "ETHTOOL_GRXFHINDIR", unix.ENODEV)
	_, err = c.InsertFlowRule(name, conn1)
	wantOpErrno(t, "insert rule", err, "ETHTOOL_GRXCLSRLCNT", unix.ENODEV)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ioctl path: %v does not satisfy os.ErrNotExist", err)
	}
	err = c.DeleteFlowRule(name, 1)
	wantOpErrno(t, "delete rule", err, "ETHTOOL_SRXCLSRLDEL", unix.ENODEV)
	_, err = c.DriverInfo(name)
	wantOpErrno(t, "drvinfo", err, "ETHTOOL_GDRVINFO", unix.ENODEV)

	fs := c.Check(name)
	if len(fs) != 1 || fs[0].Name != "interface" || fs[0].OK || fs[0].Fix == "" {
		t.Fatalf("Check(%s) = %v", name, fs)
	}
	t.Logf("check: %v", fs[0])
}

// TestKernelVeth runs every operation against a veth pair in a fresh
// network namespace, so nothing on the host changes. veth (6.18) reports
// channels but has no ring parameters, RSS table, ntuple rules or ntuple
// feature; the set requests fail with the kernel's errno and extack.
func TestKernelVeth(t *testing.T) {
	checkFDs(t)
	requireRoot(t)
	c := vethNS(t, "nicveth0", "nicveth1", 4)
	const dev = "nicveth0"

	_, err := c.Rings(dev)
	wantOpErrno(t, "rings-get veth", err, "rings-get", unix.EOPNOTSUPP)

	// The set request reaches the kernel even though the read failed, so
	// the error is the kernel's own answer to RINGS_SET.
	err = c.SetHeaderSplit(dev, true, 0)
	oe := wantOpErrno(t, "rings-set veth", err, "rings-set", unix.EOPNOTSUPP)
	if oe.Message != "setting TCP data split is not supported" {
		t.Errorf("rings-set extack %q", oe.Message)
	}
	if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "setting TCP data split is not supported") {
		t.Errorf("rings-set error %q lost its class or message", err)
	}
	err = c.SetHeaderSplit(dev, false, 0)
	wantOpErrno(t, "rings-set off veth", err, "rings-set", unix.EOPNOTSUPP)
	// The namespace's own loopback answers RINGS_SET the same way.
	err = c.SetHeaderSplit("lo", true, 0)
	if oe := wantOpErrno(t, "rings-set lo (test namespace)", err, "rings-set", unix.EOPNOTSUPP); oe.Message != "setting TCP data split is not supported" {
		t.Errorf("rings-set lo extack %q", oe.Message)
	}

	info, err := c.DriverInfo(dev)
	if err != nil || info.Driver != "veth" || info.BusInfo != "" {
		t.Fatalf("ETHTOOL_GDRVINFO veth = %+v, %v; want driver veth, no bus", info, err)
	}
	t.Logf("veth drvinfo: %+v", info)

	ch, err := c.Channels(dev)
	if err != nil {
		t.Fatalf("channels-get veth: %v", err)
	}
	t.Logf("veth channels: %+v", ch)
	if ch.RXCount != 4 || ch.RXMax != 4 || ch.RXQueues() != 4 {
		t.Fatalf("veth channels %+v, want 4 RX queues", ch)
	}

	f, err := c.Features(dev)
	if err != nil {
		t.Fatalf("features-get veth: %v", err)
	}
	if f.Ntuple() || f.IsChangeable(FeatureNtuple) || !f.IsChangeable("rx-gro") {
		t.Fatalf("veth features: ntuple %v, changeable %v", f.Ntuple(), f.Changeable)
	}
	// The kernel accepts FEATURES_SET for a fixed feature without error;
	// SetNtuple must notice.
	if err := c.SetNtuple(dev, true); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("SetNtuple(veth) = %v, want ErrNotSupported", err)
	} else {
		t.Logf("SetNtuple veth: %v", err)
	}
	if err := c.SetNtuple(dev, false); err != nil {
		t.Fatalf("SetNtuple off on veth (already off): %v", err)
	}
	// A real FEATURES_SET round trip that the device does accept.
	gro := f.IsActive("rx-gro")
	if err := setFeature(c.dev, dev, "rx-gro", !gro); err != nil {
		t.Fatalf("toggle rx-gro: %v", err)
	}
	if f, err := c.Features(dev); err != nil || f.IsActive("rx-gro") == gro {
		t.Fatalf("rx-gro not toggled: %v", err)
	}
	err = c.dev.setFeature(dev, "no-such-feature", true)
	oe = wantOpErrno(t, "features-set unknown name", err, "features-set", unix.EOPNOTSUPP)
	if oe.Message != "bit name not found" {
		t.Errorf("features-set extack %q", oe.Message)
	}

	// No ntuple rules: both the 5-tuple and the 3-tuple attempt fail.
	_, err = c.InsertFlowRule(dev, conn1)
	t.Logf("insert 5-tuple rule on veth: %v", err)
	if !errors.Is(err, ErrNotSupported) || strings.Count(err.Error(), "ETHTOOL_SRXCLSRLINS") != 2 {
		t.Fatalf("InsertFlowRule(veth) = %v, want EOPNOTSUPP for both attempts", err)
	}
	_, err = c.InsertFlowRule(dev, FlowRule{DstIP: net.ParseIP("2001:db8::2"), DstPort: 5201, Queue: 3})
	wantOpErrno(t, "insert 3-tuple tcp6 rule", err, "ETHTOOL_SRXCLSRLINS", unix.EOPNOTSUPP)
	err = c.DeleteFlowRule(dev, 0)
	wantOpErrno(t, "delete rule", err, "ETHTOOL_SRXCLSRLDEL", unix.EOPNOTSUPP)

	_, err = c.RSSIndirection(dev)
	wantOpErrno(t, "ETHTOOL_GRXFHINDIR veth", err, "ETHTOOL_GRXFHINDIR", unix.EOPNOTSUPP)
	err = c.SetRSSIndirection(dev, nil)
	wantOpErrno(t, "ETHTOOL_SRXFHINDIR veth", err, "ETHTOOL_SRXFHINDIR", unix.EOPNOTSUPP)
	_, err = c.SetRSSEqual(dev, 2)
	wantOpErrno(t, "rss equal veth", err, "ETHTOOL_GRXFHINDIR", unix.EOPNOTSUPP)

	// Apply gets past the queue check (4 queues) and stops at ntuple,
	// having changed nothing.
	before, _ := c.Features(dev)
	s, err := c.Apply(dev, []uint32{2, 3})
	if s != nil || !errors.Is(err, ErrNotSupported) {
		t.Fatalf("Apply(veth) = %v, %v; want ErrNotSupported", s, err)
	}
	t.Logf("Apply veth: %v", err)
	if after, _ := c.Features(dev); strings.Join(after.Active, ",") != strings.Join(before.Active, ",") {
		t.Fatalf("Apply changed the features: %v -> %v", before.Active, after.Active)
	}
	if _, err := c.Apply(dev, []uint32{4}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Apply beyond the queue count: %v", err)
	}

	fs := c.Check(dev)
	byName := map[string]Finding{}
	for _, f := range fs {
		t.Logf("check veth: %v", f)
		byName[f.Name] = f
		if f.OK != (f.Fix == "") {
			t.Errorf("finding %v: a failure needs a fix, a pass none", f)
		}
	}
	for name, ok := range map[string]bool{"tcp-data-split": false, "hds-thresh": false, "ntuple": false, "rx-queues": true, "rss": false} {
		if f, found := byName[name]; !found || f.OK != ok {
			t.Errorf("veth finding %q = %v, want OK %v", name, f, ok)
		}
	}
	if f := byName["ntuple"]; !strings.Contains(f.Detail, "fixed off") {
		t.Errorf("ntuple finding %v", f)
	}
}

// TestKernelClosedClient: operations after Close fail cleanly, Close is
// idempotent.
func TestKernelClosedClient(t *testing.T) {
	checkFDs(t)
	c, err := Dial()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.Rings("lo"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Rings after Close: %v", err)
	}
	if _, err := c.RSSIndirection("lo"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ioctl after Close: %v", err)
	}
}
