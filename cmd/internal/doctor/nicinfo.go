package doctor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/blockxfer/blockxfer/transport/devmem/nic"
)

// nicClient is what the doctor reads from the NIC: *nic.Client, or a fake
// in tests.
type nicClient interface {
	Check(ifname string) []nic.Finding
	DriverInfo(ifname string) (nic.DriverInfo, error)
	Channels(ifname string) (nic.Channels, error)
	Close() error
}

// dialNIC opens the real ethtool client.
func dialNIC() (nicClient, error) {
	c, err := nic.Dial()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// pciAddr matches a PCI address as the kernel names devices
// (domain:bus:device.function).
var pciAddr = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

// driverInfo reads the driver's name, versions and bus address with
// ETHTOOL_GDRVINFO and fills in what it leaves out from sysfs
// (root/class/net/IF/device/driver and the PCI device above
// root/class/net/IF/device). The error is ETHTOOL_GDRVINFO's when sysfs
// had nothing either.
func driverInfo(c nicClient, sysfs, ifname string) (nic.DriverInfo, error) {
	var info nic.DriverInfo
	var err error
	if c != nil {
		info, err = c.DriverInfo(ifname)
	}
	dev := filepath.Join(sysfs, "class", "net", ifname, "device")
	if info.Driver == "" {
		if l, lerr := os.Readlink(filepath.Join(dev, "driver")); lerr == nil {
			info.Driver = filepath.Base(l)
		}
	}
	if !pciAddr.MatchString(info.BusInfo) {
		if p, perr := filepath.EvalSymlinks(dev); perr == nil {
			if a := pciAncestor(p); a != "" {
				info.BusInfo = a
			}
		}
	}
	if info.Driver != "" || info.BusInfo != "" {
		err = nil
	}
	return info, err
}

// pciAncestor returns the last path element of p that is a PCI address:
// the PCI function a (virtio, auxiliary) device hangs off, or "".
func pciAncestor(p string) string {
	parts := strings.Split(filepath.ToSlash(p), "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if pciAddr.MatchString(parts[i]) {
			return parts[i]
		}
	}
	return ""
}

// describeNIC formats the header line of an interface: driver, versions,
// firmware and bus address.
func describeNIC(ifname string, info nic.DriverInfo, err error) string {
	if err != nil && info.Driver == "" {
		if errors.Is(err, nic.ErrNotSupported) {
			return "NIC " + ifname + ": no driver behind it (ETHTOOL_GDRVINFO not supported, no device in sysfs)"
		}
		return "NIC " + ifname + ": driver unknown: " + err.Error()
	}
	none := func(s string) string {
		if s == "" {
			return "none reported"
		}
		return s
	}
	s := "NIC " + ifname + ": driver " + none(info.Driver)
	if info.Version != "" {
		s += " " + info.Version
	}
	s += ", firmware " + none(info.FirmwareVersion)
	switch {
	case pciAddr.MatchString(info.BusInfo):
		s += ", PCI " + info.BusInfo
	case info.BusInfo != "":
		s += ", bus " + info.BusInfo
	default:
		s += ", no bus address (not a PCI device)"
	}
	return s
}

// routeTo returns the local address the kernel picks to reach server
// (HOST[:PORT]; the port does not matter for routing) and the interface
// that owns it: a connected UDP socket sends nothing, it only looks up the
// route.
func routeTo(server string) (net.IP, string, error) {
	addr := server
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]"), "7070")
	}
	c, err := net.Dial("udp", addr)
	if err != nil {
		return nil, "", err
	}
	local := c.LocalAddr().(*net.UDPAddr).IP
	c.Close()
	ifs, err := net.Interfaces()
	if err != nil {
		return local, "", err
	}
	name, err := ifaceOwning(local, ifs, func(ifc net.Interface) ([]net.Addr, error) { return ifc.Addrs() })
	return local, name, err
}

// ifaceOwning returns the name of the interface among ifs that has the
// address ip.
func ifaceOwning(ip net.IP, ifs []net.Interface, addrs func(net.Interface) ([]net.Addr, error)) (string, error) {
	for _, ifc := range ifs {
		as, err := addrs(ifc)
		if err != nil {
			continue
		}
		for _, a := range as {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return ifc.Name, nil
			}
		}
	}
	return "", fmt.Errorf("no interface has the local address %v", ip)
}
