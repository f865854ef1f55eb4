//go:build linux

package netdev_test

// Tests against the running kernel (CI runs them as root on Linux 6.18).
// The machine has no NIC with header split, so binds fail; what is tested
// is that every call reaches the kernel and that its answers (errnos,
// extack, encodings) are the documented ones.

import (
	"encoding/json"
	"errors"
	"maps"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
)

func dialNetdev(t *testing.T) *netdev.Client {
	t.Helper()
	c, err := netdev.Dial()
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestKernelFamily(t *testing.T) {
	leakCheck(t)
	c := dialNetdev(t)
	if c.FamilyID() == 0 || c.FamilyVersion() != uapi.NETDEV_FAMILY_VERSION {
		t.Errorf("family id %d version %d", c.FamilyID(), c.FamilyVersion())
	}
	ops, err := c.FamilyOps()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("netdev family %d, ops (id: GENL flags) %v", c.FamilyID(), ops)
	// The command ids of uapi, as the running kernel lists them.
	for _, id := range []uint32{uapi.NETDEV_CMD_DEV_GET, uapi.NETDEV_CMD_PAGE_POOL_GET, uapi.NETDEV_CMD_QUEUE_GET,
		uapi.NETDEV_CMD_NAPI_GET, uapi.NETDEV_CMD_QSTATS_GET, uapi.NETDEV_CMD_BIND_RX, uapi.NETDEV_CMD_NAPI_SET, uapi.NETDEV_CMD_BIND_TX} {
		if _, ok := ops[id]; !ok {
			t.Errorf("kernel lists no netdev op %d", id)
		}
	}
	if _, ok := ops[uapi.NETDEV_CMD_PAGE_POOL_STATS_GET]; !ok {
		t.Logf("no page-pool-stats-get (op %d): kernel built without CONFIG_PAGE_POOL_STATS", uapi.NETDEV_CMD_PAGE_POOL_STATS_GET)
	}
	if f := ops[uapi.NETDEV_CMD_BIND_RX]; f&unix.GENL_ADMIN_PERM == 0 || f&unix.GENL_CMD_CAP_DO == 0 {
		t.Errorf("bind-rx flags %#x, want GENL_ADMIN_PERM|GENL_CMD_CAP_DO", f)
	}
	if f := ops[uapi.NETDEV_CMD_BIND_TX]; f&(unix.GENL_ADMIN_PERM|unix.GENL_UNS_ADMIN_PERM) != 0 || f&unix.GENL_CMD_CAP_DO == 0 {
		t.Errorf("bind-tx flags %#x, want do without a permission flag", f)
	}
}

// ipLinks returns the ifindexes and up-state of the devices "ip -j link"
// lists (or, without iproute2, the standard library's).
func ipLinks(t *testing.T) map[int]bool {
	t.Helper()
	links := make(map[int]bool)
	out, err := exec.Command("ip", "-j", "link").Output()
	if err != nil {
		t.Logf("ip -j link: %v; using net.Interfaces", err)
		ifs, err := net.Interfaces()
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range ifs {
			links[i.Index] = i.Flags&net.FlagUp != 0
		}
		return links
	}
	var js []struct {
		Ifindex int      `json:"ifindex"`
		Ifname  string   `json:"ifname"`
		Flags   []string `json:"flags"`
	}
	if err := json.Unmarshal(out, &js); err != nil {
		t.Fatal(err)
	}
	for _, l := range js {
		links[l.Ifindex] = slices.Contains(l.Flags, "UP")
	}
	return links
}

func TestKernelDevices(t *testing.T) {
	leakCheck(t)
	c := dialNetdev(t)
	dump := func() map[int]netdev.Device {
		devs, err := c.Devices()
		if err != nil {
			t.Fatal(err)
		}
		m := make(map[int]netdev.Device)
		for _, d := range devs {
			m[d.Ifindex] = d
		}
		return m
	}
	// Tests of other packages, run at the same time, add and remove
	// links in this namespace: compare with ip link's list between two
	// dumps that agree, so no link came or went while it was taken.
	var (
		got   map[int]netdev.Device
		links map[int]bool
	)
	for try := 0; try < 20; try++ {
		before := dump()
		links = ipLinks(t)
		got = dump()
		if maps.EqualFunc(before, got, func(netdev.Device, netdev.Device) bool { return true }) {
			break
		}
	}
	for _, d := range got {
		t.Logf("device %+v", d)
	}
	if _, ok := links[1]; !ok {
		t.Fatal("ip link lists no lo (ifindex 1)")
	}
	for idx := range links {
		if _, ok := got[idx]; !ok {
			t.Errorf("ip link lists ifindex %d, the netdev dump does not", idx)
		}
	}
	if len(got) != len(links) {
		t.Errorf("netdev dump has %d devices, ip link %d", len(got), len(links))
	}
}

func TestKernelQueues(t *testing.T) {
	leakCheck(t)
	c := dialNetdev(t)
	for idx, up := range ipLinks(t) {
		qs, err := c.Queues(idx)
		if err != nil {
			t.Errorf("Queues(%d): %v", idx, err)
			continue
		}
		t.Logf("ifindex %d (up %v): queues %+v", idx, up, qs)
		var rx, tx int
		for _, q := range qs {
			if q.Ifindex != idx {
				t.Errorf("queue %+v in the dump of ifindex %d", q, idx)
			}
			if q.DmabufID != 0 {
				t.Errorf("queue %+v has a dmabuf bound on a machine without devmem NICs", q)
			}
			switch q.Type {
			case netdev.QueueRX:
				rx++
			case netdev.QueueTX:
				tx++
			}
		}
		// The kernel lists the queues of devices that are up.
		if up && (rx == 0 || tx == 0) {
			t.Errorf("ifindex %d is up with %d rx and %d tx queues", idx, rx, tx)
		}
	}
	all, err := c.Queues(0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(all, func(q netdev.Queue) bool { return q.Ifindex == 1 && q.Type == netdev.QueueRX && q.ID == 0 }) {
		t.Errorf("dump of all queues lacks lo rx 0: %+v", all)
	}
	_, err = c.Queues(1 << 30)
	if !errors.Is(err, os.ErrNotExist) || !errors.Is(err, unix.ENODEV) {
		t.Errorf("Queues of a missing device = %v, want ENODEV (os.ErrNotExist)", err)
	}
}

func TestKernelQStatsAndPagePools(t *testing.T) {
	leakCheck(t)
	c := dialNetdev(t)
	_, err := c.QStats(1)
	t.Logf("QStats(lo): %v", err)
	if !errors.Is(err, netdev.ErrNotSupported) {
		t.Errorf("QStats(lo) = %v, want EOPNOTSUPP (loopback has no queue stats)", err)
	}
	all, err := c.QStats(0)
	if err != nil {
		t.Fatalf("QStats(0): %v", err)
	}
	for _, s := range all {
		t.Logf("qstats ifindex %d %v queue %d: rx %d B, tx %d B, counters %v", s.Ifindex, s.QueueType, s.QueueID, s.RXBytes, s.TXBytes, s.Counters)
	}
	pools, err := c.PagePools()
	if err != nil {
		t.Fatalf("PagePools: %v", err)
	}
	for _, p := range pools {
		t.Logf("page pool %+v", p)
		if p.DmabufID != 0 {
			t.Errorf("page pool %+v has a dmabuf", p)
		}
	}
}

// bindErrnos are the errnos bind-rx and bind-tx may return for a device
// that cannot do devmem (devmem-uapi.md 5.3).
var bindErrnos = []syscall.Errno{unix.EOPNOTSUPP, unix.EINVAL, unix.ENODEV, unix.ERANGE, unix.EEXIST, unix.EBUSY, unix.EPERM}

func TestKernelBindErrors(t *testing.T) {
	leakCheck(t)
	c := dialNetdev(t)
	fd, _ := memfd(t, 1<<20)
	for idx, up := range ipLinks(t) {
		for _, kind := range []string{"bind-rx", "bind-tx"} {
			var b *netdev.Binding
			var err error
			if kind == "bind-rx" {
				b, err = c.BindRX(idx, fd, []uint32{0})
			} else {
				b, err = c.BindTX(idx, fd)
			}
			if err == nil {
				b.Close()
				t.Errorf("%s on ifindex %d with a memfd succeeded", kind, idx)
				continue
			}
			var oe *netdev.OpError
			if !errors.As(err, &oe) {
				t.Errorf("%s on ifindex %d: %T %v, want *OpError", kind, idx, err, err)
				continue
			}
			t.Logf("%s ifindex %d (up %v): errno %d (%v), kernel message %q, offset %d", kind, idx, up, oe.Err, oe.Err, oe.Message, oe.Offset)
			errno, ok := oe.Err.(syscall.Errno)
			if !ok || !slices.Contains(bindErrnos, errno) {
				t.Errorf("%s on ifindex %d: errno %v not among the documented ones", kind, idx, oe.Err)
			}
			if oe.Op != kind {
				t.Errorf("Op = %q, want %q", oe.Op, kind)
			}
			// The extack, when sent, points at our ifindex attribute
			// (right after nlmsghdr and genlmsghdr) or explains itself.
			if oe.Offset != 0 && oe.Offset != 16+4 {
				t.Errorf("%s: extack offset %d, want 20 (the ifindex attribute)", kind, oe.Offset)
			}
			if errno == unix.EOPNOTSUPP && !errors.Is(err, netdev.ErrNotSupported) {
				t.Errorf("EOPNOTSUPP does not match ErrNotSupported")
			}
		}
	}
	// Loopback specifically (devmem-uapi.md 5.3).
	_, err := c.BindTX(1, fd)
	var oe *netdev.OpError
	if !errors.As(err, &oe) || oe.Err != unix.EOPNOTSUPP || oe.Message != "Driver does not support netmem TX" {
		t.Errorf("bind-tx on lo = %v, want EOPNOTSUPP with the kernel's message", err)
	}
	_, err = c.BindRX(1, fd, []uint32{0})
	if !errors.Is(err, unix.EOPNOTSUPP) || !errors.Is(err, netdev.ErrNotSupported) {
		t.Errorf("bind-rx on lo = %v, want EOPNOTSUPP", err)
	}
	_, err = c.BindRX(1<<30, fd, []uint32{0})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bind-rx on a missing device = %v, want ENODEV (os.ErrNotExist)", err)
	}
	if _, err := c.BindRX(1, fd, nil); !errors.Is(err, unix.EINVAL) {
		t.Errorf("bind-rx without queues = %v, want EINVAL", err)
	}
}

// TestKernelBindRXNeedsCapNetAdmin opens the netlink socket on a thread
// without CAP_NET_ADMIN: bind-rx (GENL_ADMIN_PERM) must fail with EPERM,
// bind-tx (no permission flag) must get past the permission check.
func TestKernelBindRXNeedsCapNetAdmin(t *testing.T) {
	leakCheck(t)
	fd, _ := memfd(t, 1<<20)
	var rxErr, txErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The thread's credentials change: never give it back.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			rxErr = err
			return
		}
		const capNetAdmin = 12
		data[0].Effective &^= 1 << capNetAdmin
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			rxErr = err
			return
		}
		c, err := netdev.Dial()
		if err != nil {
			rxErr = err
			return
		}
		defer c.Close()
		_, rxErr = c.BindRX(1, fd, []uint32{0})
		_, txErr = c.BindTX(1, fd)
	}()
	wg.Wait()
	t.Logf("without CAP_NET_ADMIN: bind-rx: %v; bind-tx: %v", rxErr, txErr)
	if !errors.Is(rxErr, os.ErrPermission) || !errors.Is(rxErr, unix.EPERM) {
		t.Errorf("bind-rx without CAP_NET_ADMIN = %v, want EPERM (os.ErrPermission)", rxErr)
	}
	if !errors.Is(txErr, unix.EOPNOTSUPP) {
		t.Errorf("bind-tx without CAP_NET_ADMIN = %v, want EOPNOTSUPP from the driver check", txErr)
	}
}
