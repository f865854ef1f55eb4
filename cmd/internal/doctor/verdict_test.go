package doctor

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/blockxfer/blockxfer/internal/syserr"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
	"github.com/blockxfer/blockxfer/transport/devmem/nic"
)

// fakeNIC is the doctor's NIC seam: what nic.Client would report.
type fakeNIC struct {
	findings map[string][]nic.Finding
	info     map[string]nic.DriverInfo
	infoErr  error
	channels nic.Channels
	chErr    error
	closed   bool
}

func (f *fakeNIC) Check(ifname string) []nic.Finding { return f.findings[ifname] }
func (f *fakeNIC) DriverInfo(ifname string) (nic.DriverInfo, error) {
	if f.infoErr != nil {
		return nic.DriverInfo{}, f.infoErr
	}
	return f.info[ifname], nil
}
func (f *fakeNIC) Channels(string) (nic.Channels, error) { return f.channels, f.chErr }
func (f *fakeNIC) Close() error                          { f.closed = true; return nil }

// fakeEnv serves f for the interfaces named in f.findings, with queues
// RX queues.
func fakeEnv(f *fakeNIC, queues int) nicEnv {
	return nicEnv{
		dial:   func() (nicClient, error) { return f, nil },
		sysfs:  "/nonexistent",
		route:  func(string) (net.IP, string, error) { return net.IPv4(10, 0, 0, 2), "eth0", nil },
		exists: func(name string) bool { _, ok := f.findings[name]; return ok },
		queues: func(string) ([]netdev.Queue, error) {
			var qs []netdev.Queue
			for i := range queues {
				qs = append(qs, netdev.Queue{ID: uint32(i), Type: netdev.QueueRX})
			}
			return qs, nil
		},
	}
}

// passing are the kernel, netdev and provider checks of a machine ready
// for devmem.
var passing = []Check{
	{Scope: "kernel", Name: "devmem-rx", OK: true},
	{Scope: "kernel", Name: "devmem-tx", OK: true},
	{Scope: "netdev", Name: "family", OK: true},
	{Scope: "netdev", Name: "bind-rx", OK: true},
	{Scope: "netdev", Name: "bind-tx", OK: true},
	{Scope: "provider", Name: "dmabuf-exporter", OK: true},
}

// mlx5Findings is what nic.Check says of a ConnectX NIC before setup.
var mlx5Findings = []nic.Finding{
	{Name: "rx-gro-hw", Detail: "rx-gro-hw is off: mlx5 needs it for header split; setup turns it on", Fix: "ethtool -K eth0 rx-gro-hw on", Setup: true},
	{Name: "tcp-data-split", Detail: "tcp-data-split unknown (driver default)", Fix: "ethtool -G eth0 tcp-data-split on", Setup: true},
	{Name: "hds-thresh", OK: true},
	{Name: "ntuple", Detail: "rx-ntuple-filter is off", Fix: "ethtool -K eth0 ntuple on", Setup: true},
	{Name: "rx-queues", OK: true},
	{Name: "rss", OK: true},
	{Name: "cap-net-admin", OK: true},
}

// virtioFindings is what nic.Check says of virtio_net with one queue.
var virtioFindings = []nic.Finding{
	{Name: "tcp-data-split", Detail: "tcp-data-split unknown (driver default)", Fix: "ethtool -G eth0 tcp-data-split on", Setup: true},
	{Name: "hds-thresh", OK: true},
	{Name: "ntuple", Detail: "fixed off", Fix: "another NIC", Unsupported: true},
	{Name: "rx-queues", Detail: "1 RX queue(s)", Fix: "another NIC", Unsupported: true},
	{Name: "rss", Detail: "driver does not support", Fix: "another NIC", Unsupported: true},
	{Name: "cap-net-admin", OK: true},
}

// report runs the interface part of the doctor on a fake NIC and
// assembles it with the given other checks.
func report(t *testing.T, f *fakeNIC, queues int, release string, o Options, others []Check) []Check {
	t.Helper()
	ifs := interfaces(o, fakeEnv(f, queues))
	if !f.closed {
		t.Error("the NIC client was not closed")
	}
	return assemble(release, ifs, append(append([]Check(nil), others...), ifs.checks...))
}

func byKey(cs []Check) map[string]Check {
	m := map[string]Check{}
	for _, c := range cs {
		m[c.Kind+"/"+c.Scope+"/"+c.Name] = c
	}
	return m
}

// TestDoctorMLX5: a ConnectX NIC whose only problems are those Setup fixes
// itself gets "yes" for both roles, and the header names kernel, driver,
// firmware and PCI address.
func TestDoctorMLX5(t *testing.T) {
	f := &fakeNIC{
		findings: map[string][]nic.Finding{"eth0": mlx5Findings},
		info:     map[string]nic.DriverInfo{"eth0": {Driver: "mlx5_core", Version: "6.18.0", FirmwareVersion: "22.39.1002 (MT_0000000359)", BusInfo: "0000:3b:00.0"}},
	}
	cs := report(t, f, 8, "6.18.44", Options{Interfaces: []string{"eth0"}}, passing)
	m := byKey(cs)
	if got := m["info/kernel/release"].Detail; got != "kernel 6.18.44" {
		t.Errorf("kernel line %q", got)
	}
	if got, want := m["info/eth0/nic"].Detail, "NIC eth0: driver mlx5_core 6.18.0, firmware 22.39.1002 (MT_0000000359), PCI 0000:3b:00.0"; got != want {
		t.Errorf("NIC line %q, want %q", got, want)
	}
	rx, tx := m["verdict/eth0/devmem-rx"], m["verdict/eth0/devmem-tx"]
	if !rx.OK || !strings.HasPrefix(rx.Detail, "devmem RX on eth0: yes, once blockcat's NIC setup changes rx-gro-hw, tcp-data-split, ntuple") || len(rx.Warnings) != 0 {
		t.Errorf("RX verdict %+v", rx)
	}
	if !tx.OK || tx.Detail != "devmem TX on eth0: yes" || len(tx.Warnings) != 0 {
		t.Errorf("TX verdict %+v", tx)
	}
	var buf bytes.Buffer
	Print(&buf, cs)
	out := buf.String()
	t.Logf("\n%s", out)
	for _, want := range []string{
		"kernel 6.18.44\nNIC eth0: driver mlx5_core",
		"devmem RX on eth0: yes",
		"devmem TX on eth0: yes\n\n",
		"FAIL  eth0       rx-gro-hw              rx-gro-hw is off: mlx5 needs it for header split; setup turns it on\n      fix: ethtool -K eth0 rx-gro-hw on  (blockcat's NIC setup does this itself)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// TestDoctorVirtio: what this development VM has, virtio_net with one
// queue: both verdicts say no and name the driver; the queue fix is not a
// command that cannot work (the channel maximum is 1).
func TestDoctorVirtio(t *testing.T) {
	f := &fakeNIC{
		findings: map[string][]nic.Finding{"eth0": virtioFindings},
		info:     map[string]nic.DriverInfo{"eth0": {Driver: "virtio_net", Version: "1.0.0", BusInfo: "0000:00:03.0"}},
		channels: nic.Channels{CombinedCount: 1, CombinedMax: 1},
	}
	cs := report(t, f, 1, "6.18.44", Options{}, passing)
	m := byKey(cs)
	rx, tx := m["verdict/eth0/devmem-rx"], m["verdict/eth0/devmem-tx"]
	if rx.OK || rx.Detail != "devmem RX on eth0: no, driver virtio_net does not support it (no ntuple flow steering, fewer than 2 RX queues possible, no RSS indirection table)" || rx.Fix == "" {
		t.Errorf("RX verdict %+v", rx)
	}
	if tx.OK || !strings.HasPrefix(tx.Detail, "devmem TX on eth0: no, driver virtio_net does not support it") || tx.Fix == "" {
		t.Errorf("TX verdict %+v", tx)
	}
	if got, want := m["info/eth0/nic"].Detail, "NIC eth0: driver virtio_net 1.0.0, firmware none reported, PCI 0000:00:03.0"; got != want {
		t.Errorf("NIC line %q, want %q", got, want)
	}
	q := m["/eth0/queues-free"]
	if q.OK || strings.Contains(q.Fix, "ethtool -L") || !q.Unsupported {
		t.Errorf("queues-free %+v: the NIC allows 1 queue, no ethtool -L can help", q)
	}
}

func TestQueuesFreeFix(t *testing.T) {
	rxq := func(n int, bound ...uint32) []netdev.Queue {
		var qs []netdev.Queue
		for i := range n {
			q := netdev.Queue{ID: uint32(i), Type: netdev.QueueRX}
			for _, b := range bound {
				if b == q.ID {
					q.DmabufID = 7
				}
			}
			qs = append(qs, q)
		}
		return qs
	}
	notSup := &syserr.OpError{Subsystem: "nic", Op: "channels-get", Ifname: "eth0", Err: syscall.EOPNOTSUPP}
	for _, tc := range []struct {
		name        string
		qs          []netdev.Queue
		ch          nic.Channels
		err         error
		ok          bool
		fix         string
		unsupported bool
	}{
		{"ready", rxq(4), nic.Channels{CombinedCount: 4, CombinedMax: 8}, nil, true, "", false},
		{"one combined, max 1", rxq(1), nic.Channels{CombinedCount: 1, CombinedMax: 1}, nil, false, fixOtherNIC, true},
		{"one combined, max 8", rxq(1), nic.Channels{CombinedCount: 1, CombinedMax: 8}, nil, false, "ethtool -L eth0 combined 2", false},
		{"rx channels", rxq(1), nic.Channels{RXCount: 1, RXMax: 4, TXCount: 1, TXMax: 4}, nil, false, "ethtool -L eth0 rx 2", false},
		{"all bound, room to grow", rxq(2, 1), nic.Channels{CombinedCount: 2, CombinedMax: 4}, nil, false, "ethtool -L eth0 combined 3", false},
		{"all bound, at the maximum", rxq(2, 1), nic.Channels{CombinedCount: 2, CombinedMax: 2}, nil, false, "stop the programs whose dmabuf bindings hold the queues (a binding ends with its netlink socket)", false},
		{"no channels", rxq(1), nic.Channels{}, notSup, false, fixOtherNIC, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := queuesFree("eth0", tc.qs, tc.ch, tc.err)
			if c.OK != tc.ok || c.Fix != tc.fix || c.Unsupported != tc.unsupported {
				t.Fatalf("queuesFree = %+v, want ok %v fix %q unsupported %v", c, tc.ok, tc.fix, tc.unsupported)
			}
		})
	}
}

// TestTXKernelWarning: 6.16 and 6.17 may lack the TX dst refresh fix; the
// TX verdict keeps its answer and carries a warning line.
func TestTXKernelWarning(t *testing.T) {
	for rel, warn := range map[string]bool{"6.15.2": false, "6.16.0": true, "6.16.12-200.fc42.x86_64": true, "6.17.1": true, "6.18.44-fc-v782": false, "7.0.0": false} {
		v := verdict(roleTX, "eth0", "mlx5_core", rel, passing)
		got := len(v.Warnings) == 1 && strings.Contains(v.Warnings[0], txDstFix) && strings.Contains(v.Warnings[0], "ENODEV")
		if got != warn || (!warn && len(v.Warnings) != 0) {
			t.Errorf("kernel %s: warnings %q, want the dst-refresh warning: %v", rel, v.Warnings, warn)
		}
		if !v.OK {
			t.Errorf("kernel %s: TX verdict %+v", rel, v)
		}
		if rx := verdict(roleRX, "eth0", "mlx5_core", rel, passing); len(rx.Warnings) != 0 {
			t.Errorf("kernel %s: RX verdict warns %q", rel, rx.Warnings)
		}
	}
	var buf bytes.Buffer
	Print(&buf, []Check{verdict(roleTX, "eth0", "mlx5_core", "6.17.1", passing)})
	if !strings.Contains(buf.String(), "devmem TX on eth0: yes\n      warning: kernel 6.17.1 may need the fix") {
		t.Errorf("printed %q", buf.String())
	}
}

// TestVerdictReasons: the kernel, operator fixes and providers each show
// up in the verdict, the driver first.
func TestVerdictReasons(t *testing.T) {
	old := append([]Check(nil), passing...)
	old[1].OK, old[1].Fix = false, "run Linux 6.16 or newer for devmem TX"
	old[4].OK = false
	tx := verdict(roleTX, "eth0", "gve", "6.12.9", old)
	if tx.OK || tx.Detail != "devmem TX on eth0: no, kernel 6.12.9 is older than 6.16, no netdev bind-tx operation" || tx.Fix != "run Linux 6.16 or newer for devmem TX" {
		t.Errorf("TX on an old kernel: %+v", tx)
	}
	if rx := verdict(roleRX, "eth0", "gve", "6.12.9", old); !rx.OK {
		t.Errorf("RX on 6.12: %+v", rx)
	}

	cs := append(append([]Check(nil), passing...),
		Check{Scope: "eth0", Name: "rx-queues", Fix: "ethtool -L eth0 combined 3"},
		Check{Scope: "eth0", Name: "cap-net-admin", Fix: "run as root"})
	cs[5].OK = false // no dmabuf exporter
	rx := verdict(roleRX, "eth0", "bnxt_en", "6.18.1", cs)
	if rx.OK || rx.Detail != "devmem RX on eth0: not yet: needs rx-queues, cap-net-admin fixed (see below); also no provider exports a dmabuf a NIC can bind" {
		t.Errorf("RX verdict %+v", rx)
	}
	if tx := verdict(roleTX, "eth0", "bnxt_en", "6.18.1", cs); tx.OK || tx.Detail != "devmem TX on eth0: not yet: no provider exports a dmabuf a NIC can bind" {
		t.Errorf("TX verdict %+v: the RX checks do not concern TX", tx)
	}

	// An unknown driver whose checks all pass: RX yes with a warning.
	if rx := verdict(roleRX, "eth0", "idpf", "6.18.1", passing); !rx.OK || len(rx.Warnings) != 1 {
		t.Errorf("unknown driver: %+v", rx)
	}
	// A missing interface.
	miss := append(append([]Check(nil), passing...), Check{Scope: "eth9", Name: "interface", Detail: `no interface "eth9"`, Fix: "ip -br link"})
	if v := verdict(roleTX, "eth9", "", "6.18.1", miss); v.OK || v.Detail != `devmem TX on eth9: no, no interface "eth9"` {
		t.Errorf("missing interface: %+v", v)
	}
}

// TestProviderCheck: the example provider's memfds are not dmabufs a NIC
// can bind, though it reports DmabufExport.
func TestProviderCheck(t *testing.T) {
	for _, tc := range []struct {
		caps memory.Capabilities
		why  string
		ok   bool
	}{
		{memory.Capabilities{Kind: "memfd-example", DmabufExport: true, Gather: true, DeviceChecksum: true}, "", false},
		{memory.Capabilities{Kind: memory.Udmabuf, DmabufExport: true}, "", true},
		{memory.Capabilities{Kind: memory.GPU, Device: "cuda:0", DmabufExport: true}, "", true},
		{memory.Capabilities{Kind: memory.GPU, DmabufExport: true}, "no GPU", false},
		{memory.Capabilities{Kind: memory.Host}, "", false},
	} {
		c, ok := providerCheck("p", tc.caps, tc.why)
		if ok != tc.ok || c.OK != tc.ok {
			t.Errorf("%+v (%q): counted %v, check %+v; want %v", tc.caps, tc.why, ok, c, tc.ok)
		}
		if tc.caps.Kind == "memfd-example" && !strings.Contains(c.Detail, "not a dmabuf a NIC can bind") {
			t.Errorf("memfd detail %q", c.Detail)
		}
	}
}

// TestDriverInfoSysfs: when ETHTOOL_GDRVINFO fails, the driver and PCI
// address come from sysfs (a virtio NIC hangs off its PCI function).
func TestDriverInfoSysfs(t *testing.T) {
	root := t.TempDir()
	pci := filepath.Join(root, "devices", "pci0000:00", "0000:00:03.0", "virtio2")
	drv := filepath.Join(root, "bus", "virtio", "drivers", "virtio_net")
	for _, d := range []string{pci, drv, filepath.Join(root, "class", "net", "eth0")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(drv, filepath.Join(pci, "driver")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(pci, filepath.Join(root, "class", "net", "eth0", "device")); err != nil {
		t.Fatal(err)
	}
	f := &fakeNIC{infoErr: errors.New("ETHTOOL_GDRVINFO: injected")}
	info, err := driverInfo(f, root, "eth0")
	if err != nil || info != (nic.DriverInfo{Driver: "virtio_net", BusInfo: "0000:00:03.0"}) {
		t.Fatalf("driverInfo = %+v, %v", info, err)
	}
	// Nothing in sysfs either (loopback): the ioctl's error stays.
	if _, err := driverInfo(f, root, "lo"); err == nil {
		t.Fatal("driverInfo(lo) without a driver: no error")
	}
	if d := describeNIC("lo", nic.DriverInfo{}, &syserr.OpError{Op: "ETHTOOL_GDRVINFO", Err: syscall.EOPNOTSUPP}); !strings.Contains(d, "no driver behind it") {
		t.Errorf("lo: %q", d)
	}
}

// TestServerSelectsInterface: with a SERVER and no --if, only the
// interface that routes to it is checked, and the header says so.
func TestServerSelectsInterface(t *testing.T) {
	f := &fakeNIC{
		findings: map[string][]nic.Finding{"eth0": mlx5Findings, "eth1": virtioFindings},
		info:     map[string]nic.DriverInfo{"eth0": {Driver: "mlx5_core"}, "eth1": {Driver: "virtio_net"}},
	}
	ifs := interfaces(Options{Server: "10.0.0.1:7070"}, fakeEnv(f, 8))
	if diff := cmp.Diff([]string{"eth0"}, ifs.names); diff != "" {
		t.Fatalf("interfaces (-want +got):\n%s", diff)
	}
	if ifs.infos[0].Detail != "server 10.0.0.1:7070 is reached via eth0 (local address 10.0.0.2)" {
		t.Errorf("route line %q", ifs.infos[0].Detail)
	}
	e := fakeEnv(f, 8)
	e.route = func(string) (net.IP, string, error) { return nil, "", errors.New("network is unreachable") }
	ifs = interfaces(Options{Server: "10.9.9.9"}, e)
	if len(ifs.names) != 0 || len(ifs.checks) != 1 || ifs.checks[0].Scope != "route" || ifs.checks[0].OK || ifs.checks[0].Fix == "" {
		t.Fatalf("unroutable server: %+v", ifs)
	}
}

func TestIfaceOwning(t *testing.T) {
	ifs := []net.Interface{{Index: 1, Name: "lo"}, {Index: 2, Name: "eth0"}}
	addrs := map[string][]net.Addr{
		"lo":   {&net.IPNet{IP: net.IPv4(127, 0, 0, 1), Mask: net.CIDRMask(8, 32)}},
		"eth0": {&net.IPNet{IP: net.ParseIP("2001:db8::2"), Mask: net.CIDRMask(64, 128)}, &net.IPNet{IP: net.IPv4(192, 0, 2, 2), Mask: net.CIDRMask(24, 32)}},
	}
	get := func(ifc net.Interface) ([]net.Addr, error) { return addrs[ifc.Name], nil }
	for ip, want := range map[string]string{"192.0.2.2": "eth0", "2001:db8::2": "eth0", "127.0.0.1": "lo"} {
		if got, err := ifaceOwning(net.ParseIP(ip), ifs, get); err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", ip, got, err, want)
		}
	}
	if _, err := ifaceOwning(net.ParseIP("10.0.0.1"), ifs, get); err == nil {
		t.Error("an address no interface has was found")
	}
}
