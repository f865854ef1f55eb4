// Package doctor is the devmem preflight behind `blockd doctor` and
// `blockcat doctor`: it checks the kernel, the netdev netlink family, every
// network interface, udmabuf, the provider plugins and privileges, and says
// for each check whether it passes and, if not, how to fix it.
package doctor

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/providers"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
	"github.com/blockxfer/blockxfer/transport/devmem/nic"
)

// Check is one finding.
type Check struct {
	Scope  string `json:"scope"` // "kernel", "netdev", "udmabuf", "provider", or an interface name
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Options say what to look at.
type Options struct {
	// Interfaces to check; empty means every interface that is up.
	Interfaces []string
	// PluginDir is searched for provider plugins.
	PluginDir string
	// LoadOptions start each plugin.
	LoadOptions *providers.LoadOptions
}

// Run performs every check.
func Run(ctx context.Context, o Options) []Check {
	var out []Check
	out = append(out, kernel()...)
	out = append(out, netdevFamily(netdev.Dial)...)
	out = append(out, interfaces(o.Interfaces)...)
	out = append(out, udmabuf()...)
	out = append(out, plugins(ctx, o)...)
	return out
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

// Print writes the checks for a person.
func Print(w io.Writer, cs []Check) {
	for _, c := range cs {
		mark := "PASS"
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "%s  %-10s %-22s %s\n", mark, c.Scope, c.Name, c.Detail)
		if !c.OK && c.Fix != "" {
			fmt.Fprintf(w, "      fix: %s\n", c.Fix)
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

func kernel() []Check {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return []Check{{Scope: "kernel", Name: "version", Detail: err.Error()}}
	}
	rel := unix.ByteSliceToString(u.Release[:])
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

// interfaces checks every named interface, or every interface that is up.
func interfaces(names []string) []Check {
	if len(names) == 0 {
		ifs, err := net.Interfaces()
		if err != nil {
			return []Check{{Scope: "interfaces", Name: "list", Detail: err.Error()}}
		}
		for _, ifc := range ifs {
			if ifc.Flags&net.FlagUp != 0 && ifc.Flags&net.FlagLoopback == 0 {
				names = append(names, ifc.Name)
			}
		}
	}
	if len(names) == 0 {
		return []Check{{Scope: "interfaces", Name: "nic", Detail: "no network interface is up besides loopback",
			Fix: "bring up the NIC that carries the data connections"}}
	}
	nd, _ := netdev.Dial()
	if nd != nil {
		defer nd.Close()
	}
	var out []Check
	for _, name := range names {
		for _, f := range nic.Check(name) {
			out = append(out, Check{Scope: name, Name: f.Name, OK: f.OK, Detail: f.Detail, Fix: f.Fix})
		}
		ifc, err := net.InterfaceByName(name)
		if err != nil || nd == nil {
			continue
		}
		qs, err := nd.Queues(ifc.Index)
		if err != nil {
			out = append(out, Check{Scope: name, Name: "queues", Detail: "queue dump: " + err.Error()})
			continue
		}
		var rx, bound []string
		for _, q := range qs {
			if q.Type != netdev.QueueRX {
				continue
			}
			rx = append(rx, strconv.Itoa(int(q.ID)))
			if q.DmabufID != 0 {
				bound = append(bound, fmt.Sprintf("%d->dmabuf %d", q.ID, q.DmabufID))
			}
		}
		detail := fmt.Sprintf("%d RX queues, none bound to a dmabuf", len(rx))
		if len(bound) > 0 {
			detail = fmt.Sprintf("%d RX queues, bound: %s", len(rx), strings.Join(bound, ", "))
		}
		out = append(out, Check{Scope: name, Name: "queues-free", OK: len(rx) > len(bound) && len(rx) > 1, Detail: detail,
			Fix: "devmem needs a queue of its own beside the RSS queues: ethtool -L " + name + " combined N"})
	}
	return out
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
		caps, why := p.Capabilities(), p.Unusable()
		p.Close()
		ok := why == "" && caps.DmabufExport
		if ok {
			exporters++
		}
		detail := fmt.Sprintf("%s memory, dmabuf export %v", caps.Kind, caps.DmabufExport)
		if why != "" {
			detail += ": unusable: " + why
		}
		out = append(out, Check{Scope: "provider", Name: p.Name(), OK: ok, Detail: detail})
	}
	return append(out, Check{Scope: "provider", Name: "dmabuf-exporter", OK: exporters > 0,
		Detail: fmt.Sprintf("%d usable provider(s) export dmabufs in %s", exporters, o.PluginDir),
		Fix:    "install the udmabuf or gpu provider plugin where --plugin-dir points, on a machine with udmabuf or a GPU"})
}
