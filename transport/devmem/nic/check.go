package nic

import (
	"errors"
	"fmt"
	"os"
	"strconv"
)

// A Finding is one result of the devmem preflight check.
type Finding struct {
	// Name is the checked item: "interface", "rx-gro-hw" (only for
	// drivers that need it, see DriverNeedsGROHW), "tcp-data-split",
	// "hds-thresh", "ntuple", "rx-queues", "rss", "cap-net-admin" or
	// "ethtool-netlink".
	Name string
	// OK reports whether the item is ready for devmem TCP.
	OK bool
	// Detail says what was found, including the kernel's error when a
	// read failed.
	Detail string
	// Fix is the exact command (or, when no command helps, the action)
	// that makes the item OK. It is empty when OK is true.
	Fix string
	// Setup reports that Client.Apply makes the change in Fix itself (as
	// blockcat does before devmem RX): nobody needs to run Fix by hand
	// for a program that applies a Setup.
	Setup bool
	// Unsupported reports that the driver or device cannot do what is
	// needed: no command fixes it on this NIC, and Fix names NICs that
	// can.
	Unsupported bool
}

// String formats the finding as one line for doctor output.
func (f Finding) String() string {
	s := "[ok]   "
	if !f.OK {
		s = "[FAIL] "
	}
	s += f.Name + ": " + f.Detail
	if f.Fix != "" {
		s += " (fix: " + f.Fix + ")"
	}
	return s
}

// fixNoDevmemNIC is the fix for what no command can change: the driver.
const fixNoDevmemNIC = "use a NIC whose driver supports devmem TCP (gve, bnxt_en, mlx5, fbnic); loopback and veth cannot carry devmem"

// Check runs the read-only devmem preflight on ifname with a Client of its
// own, in the calling thread's network namespace. It never fails: a problem,
// including a kernel without ethtool netlink or a system other than Linux,
// is a Finding.
func Check(ifname string) []Finding {
	c, err := Dial()
	if err != nil {
		return []Finding{{Name: "ethtool-netlink", Detail: err.Error(), Fix: "run on Linux 5.6 or later (devmem TCP RX needs 6.12, TX 6.16)"}}
	}
	defer c.Close()
	return c.Check(ifname)
}

// Check runs the read-only devmem preflight on ifname: tcp-data-split,
// hds-thresh, ntuple, RX queue count, RSS indirection table and
// CAP_NET_ADMIN, each a Finding with the ethtool command that fixes it. A
// driver that answers EOPNOTSUPP yields a failed Finding saying what the
// driver does not support. An unknown interface yields the single Finding
// "interface".
func (c *Client) Check(ifname string) []Finding {
	return check(c.dev, ifname)
}

func check(d device, ifname string) []Finding {
	if err := checkIfname(ifname); err != nil {
		return []Finding{{Name: "interface", Detail: err.Error(), Fix: "ip -br link  # name the NIC that carries the data connections"}}
	}
	rc, rerr := d.rings(ifname)
	f, ferr := d.features(ifname)
	if errors.Is(rerr, os.ErrNotExist) || errors.Is(ferr, os.ErrNotExist) {
		err := rerr
		if err == nil {
			err = ferr
		}
		return []Finding{{Name: "interface", Detail: fmt.Sprintf("no interface %q in this network namespace: %v", ifname, err), Fix: "ip -br link  # name the NIC that carries the data connections"}}
	}
	info, _ := d.driverInfo(ifname) // the driver's name only refines the findings
	var out []Finding
	if DriverNeedsGROHW(info.Driver) && ferr == nil {
		out = append(out, checkGROHW(ifname, f))
	}
	out = append(out, checkTCPDataSplit(ifname, info.Driver, rc, rerr), checkHDSThresh(ifname, rc, rerr), checkNtuple(ifname, f, ferr))
	ch, cerr := d.channels(ifname)
	out = append(out, checkQueues(ifname, ch, cerr))
	t, terr := d.rssTable(ifname)
	out = append(out, checkRSS(ifname, t, terr))
	admin, aerr := d.netAdmin()
	switch {
	case aerr != nil:
		out = append(out, Finding{Name: "cap-net-admin", Detail: aerr.Error(), Fix: "run as root or with CAP_NET_ADMIN"})
	case admin:
		out = append(out, Finding{Name: "cap-net-admin", OK: true, Detail: "the process has CAP_NET_ADMIN (needed to change the NIC and for bind-rx)"})
	default:
		out = append(out, Finding{Name: "cap-net-admin", Detail: "the process lacks CAP_NET_ADMIN: it cannot change the NIC or bind RX queues", Fix: "run as root or grant it: setcap cap_net_admin+ep <binary>"})
	}
	return out
}

// readFailure turns a failed read into a Finding: EOPNOTSUPP means the
// driver does not support what was read. show is the ethtool command that
// displays the same state.
func readFailure(name, what, show string, err error) Finding {
	switch {
	case errors.Is(err, ErrNotSupported):
		return Finding{Name: name, Detail: fmt.Sprintf("driver does not support %s: %v", what, err), Fix: fixNoDevmemNIC, Unsupported: true}
	case errors.Is(err, os.ErrPermission):
		return Finding{Name: name, Detail: fmt.Sprintf("not permitted to read %s: %v", what, err), Fix: "run as root or with CAP_NET_ADMIN"}
	}
	return Finding{Name: name, Detail: fmt.Sprintf("cannot read %s: %v", what, err), Fix: "investigate the error; " + show + " shows the same state"}
}

// checkGROHW reports rx-gro-hw for a driver that needs it for header split
// (mlx5).
func checkGROHW(ifname string, f Features) Finding {
	const name = FeatureGROHW
	switch {
	case f.IsActive(FeatureGROHW):
		return Finding{Name: name, OK: true, Detail: "rx-gro-hw is on (mlx5 needs it for header split)"}
	case f.IsChangeable(FeatureGROHW):
		return Finding{Name: name, Detail: "rx-gro-hw is off: mlx5 needs it for header split; setup turns it on",
			Fix: "ethtool -K " + ifname + " rx-gro-hw on", Setup: true}
	}
	return Finding{Name: name, Detail: "rx-gro-hw is fixed off: mlx5 splits headers only with hardware GRO, so this device cannot (check the firmware and the mlx5 configuration)",
		Fix: fixNoDevmemNIC, Unsupported: true}
}

func checkTCPDataSplit(ifname, driver string, rc RingConfig, err error) Finding {
	const name = "tcp-data-split"
	if err != nil {
		return readFailure(name, "tcp-data-split (ethtool ring parameters)", "ethtool -g "+ifname, err)
	}
	fix := "ethtool -G " + ifname + " tcp-data-split on"
	switch rc.TCPDataSplit {
	case TCPDataSplitEnabled:
		return Finding{Name: name, OK: true, Detail: "tcp-data-split is on (bind-rx needs it set explicitly; Setup sets it even when the driver chose it)"}
	case TCPDataSplitDisabled:
		return Finding{Name: name, Detail: "tcp-data-split is off; Setup turns it on", Fix: fix, Setup: true}
	case TCPDataSplitUnknown:
		// The kernel leaves the attribute out until someone sets it, and
		// drivers such as mlx5 do not fill it in: absence is not proof
		// that the driver has no header split.
		who := "the driver"
		if driver != "" {
			who = driver
		}
		detail := "tcp-data-split unknown (driver default): never set, and " + who + " does not report its default; Setup tries to turn it on (the kernel refuses if the driver has no header split)"
		return Finding{Name: name, Detail: detail, Fix: fix, Setup: true}
	}
	return Finding{Name: name, Detail: "driver reports an unknown tcp-data-split value " + rc.TCPDataSplit.String() + "; Setup sets it on", Fix: fix, Setup: true}
}

func checkHDSThresh(ifname string, rc RingConfig, err error) Finding {
	const name = "hds-thresh"
	if err != nil {
		return readFailure(name, "hds-thresh (ethtool ring parameters)", "ethtool -g "+ifname, err)
	}
	switch {
	case !rc.HasHDSThresh:
		return Finding{Name: name, OK: true, Detail: "driver does not report hds-thresh; the kernel's value stays 0, which bind-rx needs"}
	case rc.HDSThresh == 0:
		return Finding{Name: name, OK: true, Detail: fmt.Sprintf("hds-thresh is 0 (max %d)", rc.HDSThreshMax)}
	}
	return Finding{Name: name, Detail: fmt.Sprintf("hds-thresh is %d (max %d); bind-rx needs 0, Setup sets it", rc.HDSThresh, rc.HDSThreshMax), Fix: "ethtool -G " + ifname + " hds-thresh 0", Setup: true}
}

func checkNtuple(ifname string, f Features, err error) Finding {
	const name = "ntuple"
	if err != nil {
		return readFailure(name, "features", "ethtool -k "+ifname, err)
	}
	switch {
	case f.Ntuple():
		return Finding{Name: name, OK: true, Detail: FeatureNtuple + " is on"}
	case f.IsChangeable(FeatureNtuple):
		return Finding{Name: name, Detail: FeatureNtuple + " is off; Setup turns it on", Fix: "ethtool -K " + ifname + " ntuple on", Setup: true}
	}
	return Finding{Name: name, Detail: "driver has no ntuple flow steering (" + FeatureNtuple + " is fixed off)", Fix: fixNoDevmemNIC, Unsupported: true}
}

func checkQueues(ifname string, ch Channels, err error) Finding {
	const name = "rx-queues"
	if err != nil {
		return readFailure(name, "channels (queue counts)", "ethtool -l "+ifname, err)
	}
	n := ch.RXQueues()
	if n >= 2 {
		return Finding{Name: name, OK: true, Detail: fmt.Sprintf("%d RX queues (rx %d, combined %d); RSS keeps queues [0, q) and queues q..%d can be devmem queues", n, ch.RXCount, ch.CombinedCount, n-1)}
	}
	detail := fmt.Sprintf("%d RX queue(s); devmem needs at least 2: one for RSS, one bound to the dmabuf", n)
	switch {
	case ch.CombinedMax >= 2:
		return Finding{Name: name, Detail: detail, Fix: "ethtool -L " + ifname + " combined " + strconv.FormatUint(uint64(min(ch.CombinedMax, 2+ch.CombinedCount)), 10)}
	case ch.RXMax >= 2:
		return Finding{Name: name, Detail: detail, Fix: "ethtool -L " + ifname + " rx 2"}
	}
	return Finding{Name: name, Detail: detail + fmt.Sprintf(" (max rx %d, combined %d)", ch.RXMax, ch.CombinedMax), Fix: fixNoDevmemNIC, Unsupported: true}
}

func checkRSS(ifname string, t []uint32, err error) Finding {
	const name = "rss"
	if err != nil {
		return readFailure(name, "an RSS indirection table, so other flows cannot be kept off the devmem queues", "ethtool -x "+ifname, err)
	}
	return Finding{Name: name, OK: true, Detail: fmt.Sprintf("indirection table of %d entries, %s; Setup spreads it over the queues below the first devmem queue", len(t), describeTable(t))}
}
