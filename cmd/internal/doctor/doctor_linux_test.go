//go:build linux

package doctor

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev/netdevtest"
)

// TestNetdevFamilyFake runs the netdev checks against fake kernels: one
// with bind-rx but without bind-tx (6.12 to 6.15), one without the family.
func TestNetdevFamilyFake(t *testing.T) {
	f := &netdevtest.Family{Ops: netdevtest.DefaultOps()}
	delete(f.Ops, 15) // bind-tx
	got := map[string]Check{}
	for _, c := range netdevFamily(func() (*netdev.Client, error) { return netdev.NewClient(f.Dial) }) {
		got[c.Name] = c
	}
	if c := got["family"]; !c.OK {
		t.Errorf("family check %+v", c)
	}
	if c := got["bind-rx"]; !c.OK {
		t.Errorf("bind-rx check %+v", c)
	}
	if c := got["bind-tx"]; c.OK || c.Fix != "run Linux 6.16 or newer" || c.Detail != "op 15 missing" {
		t.Errorf("bind-tx check %+v, want a failure with a fix", c)
	}

	absent := &netdevtest.Family{Absent: true}
	cs := netdevFamily(func() (*netdev.Client, error) { return netdev.NewClient(absent.Dial) })
	if len(cs) != 1 || cs[0].Name != "family" || cs[0].OK || cs[0].Fix == "" {
		t.Errorf("checks without the family: %+v", cs)
	}
}

// inNetns runs fn on a thread in a fresh network namespace holding a veth
// pair a<->b, a with the address 10.77.0.1/24, both up. The thread is
// never reused: the goroutine exits locked, so the runtime ends it.
func inNetns(t *testing.T, a, b string, fn func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (a network namespace and a veth pair)")
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		if err := vethUp(a, b, net.IPv4(10, 77, 0, 1)); err != nil {
			done <- err
			return
		}
		fn()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// vethUp creates the veth pair a<->b with rtnetlink, gives a the address
// ip/24 and sets both up.
func vethUp(a, b string, ip net.IP) error {
	conn, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Strict: true})
	if err != nil {
		return err
	}
	defer conn.Close()
	do := func(typ netlink.HeaderType, flags netlink.HeaderFlags, data []byte) error {
		_, err := conn.Execute(netlink.Message{Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Acknowledge | flags}, Data: data})
		return err
	}
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.IFLA_IFNAME, a)
	ae.Nested(unix.IFLA_LINKINFO, func(li *netlink.AttributeEncoder) error {
		li.String(unix.IFLA_INFO_KIND, "veth")
		li.Nested(unix.IFLA_INFO_DATA, func(data *netlink.AttributeEncoder) error {
			data.Do(1, func() ([]byte, error) { // VETH_INFO_PEER
				pae := netlink.NewAttributeEncoder()
				pae.String(unix.IFLA_IFNAME, b)
				attrs, err := pae.Encode()
				return append(make([]byte, unix.SizeofIfInfomsg), attrs...), err
			})
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	if err := do(unix.RTM_NEWLINK, netlink.Create|netlink.Excl, append(make([]byte, unix.SizeofIfInfomsg), attrs...)); err != nil {
		return fmt.Errorf("RTM_NEWLINK veth: %w", err)
	}
	for _, name := range []string{a, b} {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		msg := make([]byte, unix.SizeofIfInfomsg)
		binary.NativeEndian.PutUint32(msg[4:], uint32(ifc.Index))
		binary.NativeEndian.PutUint32(msg[8:], unix.IFF_UP)
		binary.NativeEndian.PutUint32(msg[12:], unix.IFF_UP)
		if err := do(unix.RTM_NEWLINK, 0, msg); err != nil {
			return fmt.Errorf("set %s up: %w", name, err)
		}
		if name != a {
			continue
		}
		ae := netlink.NewAttributeEncoder()
		ae.Bytes(unix.IFA_LOCAL, ip.To4())
		ae.Bytes(unix.IFA_ADDRESS, ip.To4())
		attrs, err := ae.Encode()
		if err != nil {
			return err
		}
		hdr := make([]byte, unix.SizeofIfAddrmsg)
		hdr[0], hdr[1] = unix.AF_INET, 24
		binary.NativeEndian.PutUint32(hdr[4:], uint32(ifc.Index))
		if err := do(unix.RTM_NEWADDR, netlink.Create|netlink.Excl, append(hdr, attrs...)); err != nil {
			return fmt.Errorf("RTM_NEWADDR %v on %s: %w", ip, a, err)
		}
	}
	return nil
}

// TestServerRouteVeth: `doctor 10.77.0.2:7070` in a namespace whose route
// to 10.77.0.0/24 goes through a veth checks that veth, names it with its
// driver in the header, and the verdicts say veth cannot do devmem. The
// loopback is not checked.
func TestServerRouteVeth(t *testing.T) {
	var (
		ifs      ifaceResult
		local    net.IP
		name     string
		routeErr error
	)
	inNetns(t, "drveth0", "drveth1", func() {
		local, name, routeErr = routeTo("10.77.0.2:7070")
		ifs = interfaces(Options{Server: "10.77.0.2:7070"}, realNICEnv())
	})
	if routeErr != nil || name != "drveth0" || !local.Equal(net.IPv4(10, 77, 0, 1)) {
		t.Fatalf("routeTo = %v, %q, %v; want 10.77.0.1 on drveth0", local, name, routeErr)
	}
	if diff := cmp.Diff([]string{"drveth0"}, ifs.names); diff != "" {
		t.Fatalf("checked interfaces (-want +got):\n%s", diff)
	}
	if ifs.drivers["drveth0"] != "veth" {
		t.Errorf("driver %q, want veth", ifs.drivers["drveth0"])
	}
	cs := assemble("6.18.44", ifs, ifs.checks)
	m := map[string]Check{}
	for _, c := range cs {
		m[c.Kind+"/"+c.Scope+"/"+c.Name] = c
		if c.Scope != "drveth0" && c.Kind != KindInfo {
			t.Errorf("check of another interface: %+v", c)
		}
	}
	var buf bytes.Buffer
	Print(&buf, cs)
	t.Logf("\n%s", buf.String())
	if got := m["info/drveth0/route"].Detail; got != "server 10.77.0.2:7070 is reached via drveth0 (local address 10.77.0.1)" {
		t.Errorf("route line %q", got)
	}
	if got := m["info/drveth0/nic"].Detail; !strings.HasPrefix(got, "NIC drveth0: driver veth") || !strings.Contains(got, "no bus address") {
		t.Errorf("NIC line %q", got)
	}
	if v := m["verdict/drveth0/devmem-rx"]; v.OK || !strings.HasPrefix(v.Detail, "devmem RX on drveth0: no, driver veth does not support it (no header split, no ntuple flow steering, no RSS indirection table)") {
		t.Errorf("RX verdict %+v", v)
	}
	if v := m["verdict/drveth0/devmem-tx"]; v.OK || !strings.HasPrefix(v.Detail, "devmem TX on drveth0: no, driver veth does not support it") {
		t.Errorf("TX verdict %+v", v)
	}
}

// TestRouteToLoopback looks up real routes in this namespace (read-only):
// a server on this machine is reached via the loopback, with or without a
// port; a name that does not resolve is an error.
func TestRouteToLoopback(t *testing.T) {
	for _, server := range []string{"127.0.0.1:7070", "127.0.0.1", "localhost:9"} {
		local, name, err := routeTo(server)
		if err != nil || !local.IsLoopback() {
			t.Errorf("routeTo(%q) = %v, %q, %v", server, local, name, err)
			continue
		}
		if ifc, err := net.InterfaceByName(name); err != nil || ifc.Flags&net.FlagLoopback == 0 {
			t.Errorf("routeTo(%q) names %q, not the loopback: %v", server, name, err)
		}
	}
	if _, _, err := routeTo("no-such-host.invalid:7070"); err == nil {
		t.Error("routeTo of an unresolvable name succeeded")
	}
}
