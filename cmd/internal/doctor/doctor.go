// Package doctor is the devmem preflight behind `blockd doctor` and
// `blockcat doctor`: it checks the kernel, the netdev netlink family, every
// network interface, udmabuf, the provider plugins and privileges, and says
// for each check whether it passes and, if not, how to fix it.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/providers"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
	"github.com/blockxfer/blockxfer/transport/devmem/nic"
)

// Check is one finding, a fact for the header (Kind KindInfo) or a verdict
// (Kind KindVerdict).
type Check struct {
	Scope  string `json:"scope"` // "kernel", "netdev", "udmabuf", "provider", "route", or an interface name
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
	// Kind is "" for a check, KindInfo or KindVerdict.
	Kind string `json:"kind,omitempty"`
	// Warnings are caveats of a verdict that do not change it.
	Warnings []string `json:"warnings,omitempty"`
	// Setup: blockcat's NIC setup makes the change in Fix itself.
	Setup bool `json:"setup,omitempty"`
	// Unsupported: the NIC's driver or device cannot do it; no command
	// fixes it on this NIC.
	Unsupported bool `json:"unsupported,omitempty"`
}

// Options say what to look at.
type Options struct {
	// Interfaces to check; empty means the interface that routes to
	// Server, or, without Server, every interface that is up.
	Interfaces []string
	// Server (HOST[:PORT]), when set, is looked up in the routing table
	// and the interface that reaches it is named in the header.
	Server string
	// PluginDir is searched for provider plugins.
	PluginDir string
	// LoadOptions start each plugin.
	LoadOptions *providers.LoadOptions
}

// Run performs every check. The result starts with the header facts
// (KindInfo: kernel release, each NIC's driver, firmware and bus address,
// the route to Options.Server), then one verdict per interface and role
// (KindVerdict), then the checks.
func Run(ctx context.Context, o Options) []Check {
	rel, relErr := unameRelease()
	var out []Check
	out = append(out, kernel(rel, relErr)...)
	out = append(out, netdevFamily(netdev.Dial)...)
	ifs := interfaces(o, realNICEnv())
	out = append(out, ifs.checks...)
	out = append(out, udmabuf()...)
	out = append(out, plugins(ctx, o)...)
	return assemble(rel, ifs, out)
}

// assemble puts the header facts and the verdicts before the checks.
func assemble(release string, ifs ifaceResult, checks []Check) []Check {
	head := []Check{{Scope: "kernel", Name: "release", OK: true, Kind: KindInfo, Detail: "kernel " + release}}
	if release == "" {
		head[0].Detail = "kernel release unknown"
	}
	head = append(head, ifs.infos...)
	for _, name := range ifs.names {
		head = append(head, verdicts(name, ifs.drivers[name], release, checks)...)
	}
	return append(head, checks...)
}

// Passed reports whether every check passed.
func Passed(cs []Check) bool {
	for _, c := range cs {
		if !c.OK {
			return false
		}
	}
	return true
}

// Print writes the checks for a person: the header facts, the verdicts
// with their warnings, then every check with its fix.
func Print(w io.Writer, cs []Check) {
	var checks []Check
	sep := false
	for _, c := range cs {
		switch c.Kind {
		case KindInfo:
			fmt.Fprintln(w, c.Detail)
			sep = true
		case KindVerdict:
			fmt.Fprintln(w, c.Detail)
			for _, warn := range c.Warnings {
				fmt.Fprintf(w, "      warning: %s\n", warn)
			}
			sep = true
		default:
			checks = append(checks, c)
		}
	}
	if sep && len(checks) > 0 {
		fmt.Fprintln(w)
	}
	for _, c := range checks {
		mark := "PASS"
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "%s  %-10s %-22s %s\n", mark, c.Scope, c.Name, c.Detail)
		if !c.OK && c.Fix != "" {
			fix := c.Fix
			if c.Setup {
				fix += "  (blockcat's NIC setup does this itself)"
			}
			fmt.Fprintf(w, "      fix: %s\n", fix)
		}
	}
}

// kernelVersion parses "6.18.44-..." into (6, 18).
func kernelVersion(release string) (major, minor int, ok bool) {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minorStr := strings.TrimLeftFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' })
	end := strings.IndexFunc(minorStr, func(r rune) bool { return r < '0' || r > '9' })
	if end >= 0 {
		minorStr = minorStr[:end]
	}
	minor, err2 := strconv.Atoi(minorStr)
	return major, minor, err1 == nil && err2 == nil
}

// unameRelease returns the kernel release (uname -r).
func unameRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", err
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}

func kernel(rel string, err error) []Check {
	if err != nil {
		return []Check{{Scope: "kernel", Name: "version", Detail: err.Error(), Fix: "run Linux 6.12 or newer"}}
	}
	major, minor, ok := kernelVersion(rel)
	atLeast := func(a, b int) bool { return ok && (major > a || major == a && minor >= b) }
	return []Check{
		{Scope: "kernel", Name: "devmem-rx", OK: atLeast(6, 12), Detail: "kernel " + rel + " (devmem RX needs 6.12)",
			Fix: "run Linux 6.12 or newer built with CONFIG_NET_DEVMEM"},
		{Scope: "kernel", Name: "devmem-tx", OK: atLeast(6, 16), Detail: "kernel " + rel + " (devmem TX needs 6.16)",
			Fix: "run Linux 6.16 or newer for devmem TX"},
	}
}

// netdevFamily checks the netdev family and its bind operations on the
// client dial opens.
func netdevFamily(dial func() (*netdev.Client, error)) []Check {
	c, err := dial()
	if err != nil {
		return []Check{{Scope: "netdev", Name: "family", Detail: "netdev generic netlink family: " + err.Error(),
			Fix: "run a kernel built with CONFIG_NET_DEVMEM (6.12+)"}}
	}
	defer c.Close()
	out := []Check{{Scope: "netdev", Name: "family", OK: true,
		Detail: fmt.Sprintf("netdev family id %d, version %d", c.FamilyID(), c.FamilyVersion())}}
	ops, err := c.FamilyOps()
	if err != nil {
		return append(out, Check{Scope: "netdev", Name: "ops", Detail: err.Error()})
	}
	for _, op := range []struct {
		id   uint32
		name string
		fix  string
	}{
		{13, "bind-rx", "run Linux 6.12 or newer"},
		{15, "bind-tx", "run Linux 6.16 or newer"},
	} {
		_, has := ops[op.id]
		out = append(out, Check{Scope: "netdev", Name: op.name, OK: has,
			Detail: fmt.Sprintf("op %d %s", op.id, map[bool]string{true: "present", false: "missing"}[has]), Fix: op.fix})
	}
	return out
}

// nicEnv is how interfaces reaches the NICs; tests swap in fakes.
type nicEnv struct {
	dial   func() (nicClient, error)
	sysfs  string
	route  func(server string) (net.IP, string, error)
	exists func(ifname string) bool
	// queues dumps the RX queues of an interface (netdev), nil when the
	// netdev family is unavailable.
	queues func(ifname string) ([]netdev.Queue, error)
}

func realNICEnv() nicEnv {
	e := nicEnv{dial: dialNIC, sysfs: "/sys", route: routeTo,
		exists: func(name string) bool { _, err := net.InterfaceByName(name); return err == nil }}
	e.queues = func(name string) ([]netdev.Queue, error) {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return nil, err
		}
		nd, err := netdev.Dial()
		if err != nil {
			return nil, err
		}
		defer nd.Close()
		return nd.Queues(ifc.Index)
	}
	return e
}

// ifaceResult is what interfaces found: header facts, checks, and the
// interfaces that get verdicts with their drivers.
type ifaceResult struct {
	infos, checks []Check
	names         []string
	drivers       map[string]string
}

// fixOtherNIC is the fix when the NIC itself cannot do what devmem needs.
const fixOtherNIC = "use a NIC whose driver supports devmem TCP (gve, bnxt_en, mlx5, fbnic)"

// interfaces checks the named interfaces, else the one that routes to
// o.Server, else every interface that is up.
func interfaces(o Options, e nicEnv) ifaceResult {
	res := ifaceResult{drivers: map[string]string{}}
	names := o.Interfaces
	if o.Server != "" {
		local, name, err := e.route(o.Server)
		if err != nil {
			res.checks = append(res.checks, Check{Scope: "route", Name: o.Server, Detail: "no route to " + o.Server + ": " + err.Error(),
				Fix: "check the server address, or name the NIC with --if"})
			if len(names) == 0 {
				return res
			}
		} else {
			res.infos = append(res.infos, Check{Scope: name, Name: "route", OK: true, Kind: KindInfo,
				Detail: fmt.Sprintf("server %s is reached via %s (local address %s)", o.Server, name, local)})
			if len(names) == 0 {
				names = []string{name}
			}
		}
	}
	if len(names) == 0 {
		ifs, err := net.Interfaces()
		if err != nil {
			res.checks = append(res.checks, Check{Scope: "interfaces", Name: "list", Detail: err.Error(), Fix: "name the NIC with --if"})
			return res
		}
		for _, ifc := range ifs {
			if ifc.Flags&net.FlagUp != 0 && ifc.Flags&net.FlagLoopback == 0 {
				names = append(names, ifc.Name)
			}
		}
	}
	if len(names) == 0 {
		res.checks = append(res.checks, Check{Scope: "interfaces", Name: "nic", Detail: "no network interface is up besides loopback",
			Fix: "bring up the NIC that carries the data connections"})
		return res
	}
	res.names = names
	c, err := e.dial()
	if err != nil {
		for _, name := range names {
			res.checks = append(res.checks, Check{Scope: name, Name: "ethtool-netlink", Detail: err.Error(),
				Fix: "run on Linux 5.6 or later (devmem TCP RX needs 6.12, TX 6.16)"})
		}
		return res
	}
	defer c.Close()
	for _, name := range names {
		if e.exists(name) {
			info, ierr := driverInfo(c, e.sysfs, name)
			res.drivers[name] = info.Driver
			res.infos = append(res.infos, Check{Scope: name, Name: "nic", OK: true, Kind: KindInfo, Detail: describeNIC(name, info, ierr)})
		}
		fs := c.Check(name)
		for _, f := range fs {
			res.checks = append(res.checks, Check{Scope: name, Name: f.Name, OK: f.OK, Detail: f.Detail, Fix: f.Fix,
				Setup: f.Setup, Unsupported: f.Unsupported})
		}
		if (len(fs) == 1 && fs[0].Name == "interface") || e.queues == nil || !e.exists(name) {
			continue
		}
		qs, err := e.queues(name)
		if err != nil {
			res.checks = append(res.checks, Check{Scope: name, Name: "queues", Detail: "queue dump: " + err.Error(),
				Fix: "run a kernel with the netdev netlink family (6.12+)"})
			continue
		}
		ch, cerr := c.Channels(name)
		res.checks = append(res.checks, queuesFree(name, qs, ch, cerr))
	}
	return res
}

// queuesFree checks that a devmem queue can be had beside the RSS queues:
// an RX queue other than queue 0 with no dmabuf, io_uring or AF_XDP on it
// (blockcat takes the highest such queue). Its fix is
// one that can work on this NIC: the channel maximums come from
// channels-get.
func queuesFree(name string, qs []netdev.Queue, ch nic.Channels, cerr error) Check {
	var rx, bound []string
	free := false // a queue other than 0 (RSS keeps queue 0) is unbound
	for _, q := range qs {
		if q.Type != netdev.QueueRX {
			continue
		}
		rx = append(rx, strconv.Itoa(int(q.ID)))
		switch {
		case q.DmabufID != 0:
			bound = append(bound, fmt.Sprintf("%d->dmabuf %d", q.ID, q.DmabufID))
		case q.IOUring:
			bound = append(bound, fmt.Sprintf("%d->io_uring", q.ID))
		case q.XSK:
			bound = append(bound, fmt.Sprintf("%d->AF_XDP", q.ID))
		case q.ID > 0:
			free = true
		}
	}
	detail := fmt.Sprintf("%d RX queues, none bound to a dmabuf", len(rx))
	if len(bound) > 0 {
		detail = fmt.Sprintf("%d RX queues, bound: %s", len(rx), strings.Join(bound, ", "))
	}
	c := Check{Scope: name, Name: "queues-free", OK: free, Detail: detail}
	if c.OK {
		return c
	}
	// One queue for RSS, one free for devmem, besides those bound.
	need := uint32(len(bound) + 2)
	switch {
	case cerr != nil:
		c.Detail += fmt.Sprintf("; the queue count cannot be read or changed (%v)", cerr)
		c.Fix, c.Unsupported = fixOtherNIC, errors.Is(cerr, nic.ErrNotSupported)
		if !c.Unsupported {
			c.Fix = "investigate the error; ethtool -l " + name + " shows the same state"
		}
	case ch.CombinedMax > ch.CombinedCount && ch.CombinedMax+ch.RXCount >= need:
		n := max(need-min(need, ch.RXCount), ch.CombinedCount+1)
		c.Fix = "ethtool -L " + name + " combined " + strconv.FormatUint(uint64(n), 10)
	case ch.RXMax > ch.RXCount && ch.RXMax+ch.CombinedCount >= need:
		n := max(need-min(need, ch.CombinedCount), ch.RXCount+1)
		c.Fix = "ethtool -L " + name + " rx " + strconv.FormatUint(uint64(n), 10)
	case len(bound) > 0 && len(rx) > 1:
		c.Fix = "stop the programs whose dmabuf bindings hold the queues (a binding ends with its netlink socket)"
	default:
		c.Detail += fmt.Sprintf("; the NIC allows no more (max rx %d, combined %d)", ch.RXMax, ch.CombinedMax)
		c.Fix, c.Unsupported = fixOtherNIC, true
	}
	return c
}

func udmabuf() []Check {
	if _, err := os.Stat("/dev/udmabuf"); err != nil {
		return []Check{{Scope: "udmabuf", Name: "device", Detail: "/dev/udmabuf: " + err.Error(),
			Fix: "build the kernel with CONFIG_UDMABUF (=y, or =m and modprobe udmabuf)"}}
	}
	out := []Check{{Scope: "udmabuf", Name: "device", OK: true, Detail: "/dev/udmabuf present"}}
	b, err := os.ReadFile("/sys/module/udmabuf/parameters/size_limit_mb")
	if err != nil {
		return append(out, Check{Scope: "udmabuf", Name: "size-limit", Detail: err.Error()})
	}
	mb, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return append(out, Check{Scope: "udmabuf", Name: "size-limit", OK: mb >= 256,
		Detail: fmt.Sprintf("size_limit_mb = %d (largest udmabuf)", mb),
		Fix:    "echo 1024 > /sys/module/udmabuf/parameters/size_limit_mb"})
}

func plugins(ctx context.Context, o Options) []Check {
	paths, err := providers.Discover(o.PluginDir)
	if err != nil {
		return []Check{{Scope: "provider", Name: "discover", Detail: err.Error(),
			Fix: "put blockxfer-provider-* plugins in the plugin directory (--plugin-dir)"}}
	}
	out := []Check{}
	exporters := 0
	for _, path := range paths {
		p, err := providers.Load(ctx, path, o.LoadOptions)
		if err != nil {
			out = append(out, Check{Scope: "provider", Name: path, Detail: err.Error()})
			continue
		}
		c, ok := providerCheck(p.Name(), p.Capabilities(), p.Unusable())
		p.Close()
		if ok {
			exporters++
		}
		out = append(out, c)
	}
	return append(out, Check{Scope: "provider", Name: "dmabuf-exporter", OK: exporters > 0,
		Detail: fmt.Sprintf("%d usable provider(s) export dmabufs a NIC can bind in %s", exporters, o.PluginDir),
		Fix:    "install the udmabuf or gpu provider plugin where --plugin-dir points, on a machine with udmabuf or a GPU"})
}

// nicBindable lists the memory kinds whose dmabufs a NIC can bind. The
// example provider's "dmabufs" are memfds (kind "memfd-example"): the
// software NIC binds them, bind-rx and bind-tx on a real NIC refuse them.
var nicBindable = map[memory.Kind]bool{memory.Udmabuf: true, memory.GPU: true}

// providerCheck reports one loaded provider (why: why it is unusable, or
// "") and whether it counts as a dmabuf exporter a NIC can bind.
func providerCheck(name string, caps memory.Capabilities, why string) (Check, bool) {
	ok := why == "" && caps.DmabufExport && nicBindable[caps.Kind]
	detail := fmt.Sprintf("%s memory, dmabuf export %v", caps.Kind, caps.DmabufExport)
	if caps.DmabufExport && !nicBindable[caps.Kind] {
		detail += fmt.Sprintf(", but not a dmabuf a NIC can bind (kind %q; a NIC binds udmabuf or GPU memory; the software NIC, --devmem emulate, can use it)", caps.Kind)
	}
	if why != "" {
		detail += ": unusable: " + why
	}
	return Check{Scope: "provider", Name: name, OK: ok, Detail: detail}, ok
}
