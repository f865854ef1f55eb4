package nic

import (
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func findingNames(fs []Finding) []string {
	var names []string
	for _, f := range fs {
		names = append(names, f.Name)
	}
	return names
}

func TestCheckReadyDevice(t *testing.T) {
	d := newFakeDevice()
	d.state.Features[FeatureNtuple] = true
	d.state.Rings.TCPDataSplit, d.state.Rings.HDSThresh = TCPDataSplitEnabled, 0
	fs := check(d, "eth0")
	if diff := cmp.Diff([]string{"tcp-data-split", "hds-thresh", "ntuple", "rx-queues", "rss", "cap-net-admin"}, findingNames(fs)); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	for _, f := range fs {
		if !f.OK || f.Fix != "" || f.Detail == "" {
			t.Errorf("finding %v: want OK with a detail and no fix", f)
		}
	}
	if l := d.takeLog(); len(l) != 0 {
		t.Fatalf("Check changed the device: %v", l)
	}
}

func TestCheckFixableDevice(t *testing.T) {
	d := newFakeDevice() // header split off, hds-thresh 256, ntuple off
	d.state.Channels = Channels{CombinedCount: 1, CombinedMax: 8}
	d.admin = false
	fs := check(d, "eth0")
	want := map[string]string{
		"tcp-data-split": "ethtool -G eth0 tcp-data-split on",
		"hds-thresh":     "ethtool -G eth0 hds-thresh 0",
		"ntuple":         "ethtool -K eth0 ntuple on",
		"rx-queues":      "ethtool -L eth0 combined 3",
		"rss":            "",
		"cap-net-admin":  "run as root or grant it: setcap cap_net_admin+ep <binary>",
	}
	got := map[string]string{}
	for _, f := range fs {
		got[f.Name] = f.Fix
		if f.OK != (f.Fix == "") {
			t.Errorf("finding %v: OK must mean no fix", f)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("fixes (-want +got):\n%s", diff)
	}
	// Setup makes the header-split and ntuple changes itself; queues and
	// privileges are the operator's.
	for _, f := range fs {
		bySetup := f.Name == "tcp-data-split" || f.Name == "hds-thresh" || f.Name == "ntuple"
		if f.Setup != bySetup || f.Unsupported {
			t.Errorf("finding %v: Setup %v Unsupported %v", f, f.Setup, f.Unsupported)
		}
	}
}

func TestCheckUnsupportedDriver(t *testing.T) {
	// What loopback and veth answer on 6.18: no ring parameters, no
	// channels (loopback), no RSS; ntuple fixed off.
	d := newFakeDevice()
	delete(d.changeable, FeatureNtuple)
	d.fail = func(op string, _ int) error {
		switch op {
		case "rings", "channels", "rss":
			return opErr(op, syscall.EOPNOTSUPP, "")
		}
		return nil
	}
	fs := check(d, "eth0")
	for _, f := range fs {
		if f.Name == "cap-net-admin" {
			continue
		}
		if f.OK || f.Fix != fixNoDevmemNIC {
			t.Errorf("finding %v: want a failure whose fix is another NIC", f)
		}
		if !strings.Contains(f.Detail, "driver does not support") && !strings.Contains(f.Detail, "fixed off") {
			t.Errorf("finding %v does not say what the driver lacks", f)
		}
	}
	if !strings.Contains(fs[0].Detail, "driver does not support tcp-data-split") {
		t.Errorf("tcp-data-split finding: %v", fs[0])
	}

	for _, f := range fs {
		if !f.OK && f.Name != "cap-net-admin" && !f.Unsupported {
			t.Errorf("finding %v not marked Unsupported", f)
		}
	}

	// A driver that has ring parameters but leaves tcp-data-split out of
	// its reply (never set, default not reported): unknown, not "no
	// header split"; Setup tries to turn it on.
	d = newFakeDevice()
	d.state.Rings.TCPDataSplit = TCPDataSplitUnknown
	d.state.Rings.HasHDSThresh = false
	fs = check(d, "eth0")
	if fs[0].OK || fs[0].Unsupported || !fs[0].Setup || fs[0].Fix != "ethtool -G eth0 tcp-data-split on" ||
		!strings.Contains(fs[0].Detail, "unknown (driver default)") || !fs[1].OK {
		t.Fatalf("findings %v %v", fs[0], fs[1])
	}
}

func TestCheckUnknownInterface(t *testing.T) {
	fs := check(newFakeDevice(), "eth9")
	if len(fs) != 1 || fs[0].Name != "interface" || fs[0].OK || fs[0].Fix == "" {
		t.Fatalf("unexpected findings %v", fs)
	}
	if !strings.Contains(fs[0].Detail, "no device matches name") {
		t.Fatalf("detail lost the kernel message: %v", fs[0])
	}
	if fs := check(newFakeDevice(), ""); len(fs) != 1 || fs[0].Name != "interface" {
		t.Fatalf("empty name: %v", fs)
	}
}

func TestCheckPermission(t *testing.T) {
	d := newFakeDevice()
	d.fail = func(op string, _ int) error {
		if op == "rss" {
			return opErr("ETHTOOL_GRXFHINDIR", syscall.EPERM, "")
		}
		return nil
	}
	for _, f := range check(d, "eth0") {
		if f.Name == "rss" && (f.OK || !strings.Contains(f.Fix, "root")) {
			t.Fatalf("rss finding %v", f)
		}
	}
}

func TestFindingString(t *testing.T) {
	f := Finding{Name: "ntuple", Detail: "rx-ntuple-filter is off", Fix: "ethtool -K eth0 ntuple on"}
	if got, want := f.String(), "[FAIL] ntuple: rx-ntuple-filter is off (fix: ethtool -K eth0 ntuple on)"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
}

// TestCheckMLX5: a ConnectX NIC before header split was configured. The
// kernel leaves tcp-data-split out of its rings reply; that is "unknown
// (driver default)", which Setup turns on, not "no header split". rx-gro-hw
// is off, and mlx5 needs it on for header split.
func TestCheckMLX5(t *testing.T) {
	d := newMLX5Device()
	byName := map[string]Finding{}
	for _, f := range check(d, "eth0") {
		byName[f.Name] = f
		if f.Fix == fixNoDevmemNIC {
			t.Errorf("finding %v tells the user to pick another NIC; mlx5 supports devmem", f)
		}
	}
	tds := byName["tcp-data-split"]
	if tds.OK || !strings.Contains(tds.Detail, "unknown (driver default)") || !strings.Contains(tds.Detail, "Setup") || tds.Fix != "ethtool -G eth0 tcp-data-split on" || !tds.Setup || tds.Unsupported {
		t.Errorf("tcp-data-split finding %v", tds)
	}
	gro, ok := byName["rx-gro-hw"]
	if !ok || gro.OK || gro.Detail != "rx-gro-hw is off: mlx5 needs it for header split; setup turns it on" || gro.Fix != "ethtool -K eth0 rx-gro-hw on" || !gro.Setup {
		t.Errorf("rx-gro-hw finding %v (present %v)", gro, ok)
	}

	d.state.Features[FeatureGROHW] = true
	for _, f := range check(d, "eth0") {
		if f.Name == "rx-gro-hw" && !f.OK {
			t.Errorf("rx-gro-hw on: %v", f)
		}
	}
	delete(d.state.Features, FeatureGROHW)
	delete(d.changeable, FeatureGROHW)
	for _, f := range check(d, "eth0") {
		if f.Name == "rx-gro-hw" && (f.OK || f.Fix != fixNoDevmemNIC || !f.Unsupported) {
			t.Errorf("rx-gro-hw fixed off: %v", f)
		}
	}
}
