package doctor

import (
	"slices"
	"strings"
)

// Kinds of Check besides the plain check (Kind "").
const (
	// KindInfo is a fact for the header (kernel release, NIC, route); it
	// is always OK.
	KindInfo = "info"
	// KindVerdict says whether devmem works on an interface for one role:
	// Name is "devmem-rx" (receiving, what blockcat does) or "devmem-tx"
	// (sending, what blockd does).
	KindVerdict = "verdict"
)

// Drivers known to do devmem, as of Linux 6.18. RX needs header split,
// flow steering and the queue management API; TX needs the driver to set
// netdev->netmem_tx.
var (
	rxDrivers = []string{"gve", "bnxt_en", "mlx5_core", "fbnic"}
	txDrivers = []string{"gve", "mlx5_core", "bnxt_en"}
)

// txDstFix names the kernel fix without which devmem TX on an accepted
// socket fails with ENODEV after SO_BINDTODEVICE (6.16 and 6.17).
const txDstFix = `"net: devmem: refresh devmem TX dst in case of route invalidation"`

// role is what one verdict is about.
type role struct {
	name, label   string // "devmem-rx", "RX"
	kernelCheck   string // kernel/<kernelCheck>
	op            string // netdev/<op>
	minKernel     string
	drivers       []string
	nicChecksUsed bool // the interface's NIC checks decide this role
	tx            bool
}

var (
	roleRX = role{name: "devmem-rx", label: "RX", kernelCheck: "devmem-rx", op: "bind-rx", minKernel: "6.12", drivers: rxDrivers, nicChecksUsed: true}
	roleTX = role{name: "devmem-tx", label: "TX", kernelCheck: "devmem-tx", op: "bind-tx", minKernel: "6.16", drivers: txDrivers, tx: true}
)

// unsupportedPhrase says in a few words what a driver lacks, by the name
// of the failed check; "" for checks that add nothing new.
var unsupportedPhrase = map[string]string{
	"tcp-data-split": "no header split",
	"ntuple":         "no ntuple flow steering",
	"rx-queues":      "fewer than 2 RX queues possible",
	"queues-free":    "fewer than 2 RX queues possible",
	"rss":            "no RSS indirection table",
	"rx-gro-hw":      "rx-gro-hw fixed off",
}

// verdicts returns the RX and TX verdicts for ifname, driven by the other
// checks (cs) and the interface's driver.
func verdicts(ifname, driver, release string, cs []Check) []Check {
	return []Check{verdict(roleRX, ifname, driver, release, cs), verdict(roleTX, ifname, driver, release, cs)}
}

func verdict(r role, ifname, driver, release string, cs []Check) Check {
	v := Check{Scope: ifname, Name: r.name, Kind: KindVerdict}
	prefix := "devmem " + r.label + " on " + ifname + ": "
	major, minor, ok := kernelVersion(release)
	if r.tx && ok && major == 6 && (minor == 16 || minor == 17) {
		v.Warnings = append(v.Warnings, "kernel "+release+" may need the fix "+txDstFix+
			" (in 6.18): without it, sending on an accepted socket bound with SO_BINDTODEVICE fails with ENODEV")
	}
	if r.tx && driver == "gve" {
		v.Warnings = append(v.Warnings, "gve sends devmem only in its DQO RDA queue format, not GQI or QPL")
	}

	var (
		unsupported, kernel, operator, bySetup []string
		provider                               bool
		fix                                    string
	)
	setFix := func(f string) {
		if fix == "" {
			fix = f
		}
	}
	for _, c := range cs {
		if c.OK || c.Kind != "" {
			continue
		}
		switch {
		case c.Scope == ifname && c.Name == "interface":
			v.Detail = prefix + "no, " + c.Detail
			v.Fix = c.Fix
			return v
		case c.Scope == ifname && r.nicChecksUsed:
			switch {
			case c.Unsupported:
				if p := unsupportedPhrase[c.Name]; p != "" && !slices.Contains(unsupported, p) {
					unsupported = append(unsupported, p)
				}
			case c.Setup:
				bySetup = append(bySetup, c.Name)
			default:
				operator = append(operator, c.Name)
			}
		case c.Scope == "kernel" && c.Name == r.kernelCheck:
			kernel = append(kernel, "kernel "+release+" is older than "+r.minKernel)
			setFix(c.Fix)
		case c.Scope == "netdev" && (c.Name == "family" || c.Name == r.op):
			kernel = append(kernel, "no netdev "+map[bool]string{true: "netlink family", false: r.op + " operation"}[c.Name == "family"])
			setFix(c.Fix)
		case c.Scope == "provider" && c.Name == "dmabuf-exporter":
			provider = true
		}
	}

	who, cannot := "driver "+driver, " does not support it"
	if driver == "" {
		who, cannot = ifname, " has no NIC driver behind it"
	}
	var clauses []string
	switch {
	case len(unsupported) > 0:
		clauses = append(clauses, "no, "+who+cannot+" ("+strings.Join(unsupported, ", ")+")")
		v.Fix = "use a NIC whose driver supports devmem " + r.label + " (" + strings.Join(r.drivers, ", ") + ")"
	case r.tx && !slices.Contains(r.drivers, driver):
		clauses = append(clauses, "no, "+who+cannot+" (drivers that send devmem as of Linux 6.18: "+strings.Join(r.drivers, ", ")+")")
		v.Fix = "use a NIC whose driver supports devmem TX (" + strings.Join(r.drivers, ", ") + ")"
	}
	if len(kernel) > 0 {
		c := strings.Join(kernel, ", ")
		if len(clauses) == 0 {
			c = "no, " + c
			v.Fix = fix
		}
		clauses = append(clauses, c)
	}
	if len(operator) > 0 {
		c := "needs " + strings.Join(operator, ", ") + " fixed (see below)"
		if len(clauses) == 0 {
			c = "not yet: " + c
			v.Fix = "run the fixes of the failing " + ifname + " checks below"
		}
		clauses = append(clauses, c)
	}
	if provider {
		c := "no provider exports a dmabuf a NIC can bind"
		if len(clauses) == 0 {
			c = "not yet: " + c
			v.Fix = "install the udmabuf or gpu provider plugin (see the provider checks below)"
		}
		clauses = append(clauses, c)
	}
	if len(clauses) > 0 {
		v.Detail = prefix + clauses[0]
		if len(clauses) > 1 {
			v.Detail += "; also " + strings.Join(clauses[1:], "; ")
		}
		return v
	}

	v.OK = true
	v.Detail = prefix + "yes"
	if len(bySetup) > 0 {
		v.Detail += ", once blockcat's NIC setup changes " + strings.Join(bySetup, ", ") + " (it does so itself, with CAP_NET_ADMIN, and restores them on exit)"
	}
	if !r.tx && !slices.Contains(r.drivers, driver) {
		v.Warnings = append(v.Warnings, who+" is not known to support devmem RX (known: "+strings.Join(r.drivers, ", ")+"); bind-rx decides")
	}
	return v
}
