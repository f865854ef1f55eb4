//go:build linux

package netdev_test

// Tests of the client against the fake family of netdevtest: what the
// machine's kernel cannot show (devices that can bind, extended
// acknowledgements of a driver that refuses) without a devmem NIC.

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev/netdevtest"
)

// fakeNIC returns a fake kernel with lo (ifindex 1) and a two-queue NIC
// (ifindex 2).
func fakeNIC() *netdevtest.Family {
	return &netdevtest.Family{
		Devices: []netdev.Device{{Ifindex: 1}, {Ifindex: 2, XDPFeatures: 0x7f, XDPZCMaxSegs: 1}},
		Queues: []netdev.Queue{
			{ID: 0, Ifindex: 1, Type: netdev.QueueRX},
			{ID: 0, Ifindex: 1, Type: netdev.QueueTX},
			{ID: 0, Ifindex: 2, Type: netdev.QueueRX, NapiID: 513},
			{ID: 1, Ifindex: 2, Type: netdev.QueueRX, NapiID: 514},
			{ID: 0, Ifindex: 2, Type: netdev.QueueTX, NapiID: 513},
			{ID: 1, Ifindex: 2, Type: netdev.QueueTX, NapiID: 514},
		},
		PagePools: []netdev.PagePool{{ID: 7, Ifindex: 2, NapiID: 513, Inflight: 1024, InflightMem: 4 << 20}},
		QStats: []netdev.QStats{{Ifindex: 2, QueueType: netdev.QueueRX, QueueID: 1, Counters: map[uint16]uint64{
			uapi.NETDEV_A_QSTATS_RX_PACKETS: 10, uapi.NETDEV_A_QSTATS_RX_BYTES: 15000, uapi.NETDEV_A_QSTATS_RX_ALLOC_FAIL: 2,
		}}},
	}
}

func newFakeClient(t *testing.T, f *netdevtest.Family) *netdev.Client {
	t.Helper()
	c, err := netdev.NewClient(f.Dial)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestFakeDumps(t *testing.T) {
	f := fakeNIC()
	c := newFakeClient(t, f)
	if c.FamilyID() != netdevtest.DefaultFamilyID || c.FamilyVersion() != uapi.NETDEV_FAMILY_VERSION {
		t.Errorf("family id %d version %d", c.FamilyID(), c.FamilyVersion())
	}
	devs, err := c.Devices()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(f.Devices, devs); diff != "" {
		t.Errorf("Devices (-fake +client):\n%s", diff)
	}
	all, err := c.Queues(0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(f.Queues, all); diff != "" {
		t.Errorf("Queues(0) (-fake +client):\n%s", diff)
	}
	qs, err := c.Queues(2)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(f.Queues[2:], qs); diff != "" {
		t.Errorf("Queues(2) (-fake +client):\n%s", diff)
	}
	pools, err := c.PagePools()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(f.PagePools, pools); diff != "" {
		t.Errorf("PagePools (-fake +client):\n%s", diff)
	}
	stats, err := c.QStats(2)
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 1 || stats[0].RXPackets != 10 || stats[0].RXBytes != 15000 || stats[0].RXAllocFail != 2 || stats[0].QueueID != 1 {
		t.Errorf("QStats(2) = %+v", stats)
	}
	if stats, err := c.QStats(1); err != nil || len(stats) != 0 {
		t.Errorf("QStats(1) = %+v, %v; want none", stats, err)
	}
	ops, err := c.FamilyOps()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(netdevtest.DefaultOps(), ops); diff != "" {
		t.Errorf("FamilyOps (-fake +client):\n%s", diff)
	}
}

func TestFakeBindRoundTrip(t *testing.T) {
	leakCheck(t)
	f := fakeNIC()
	c := newFakeClient(t, f)
	rx, err := c.BindRX(2, 42, []uint32{1})
	if err != nil {
		t.Fatal(err)
	}
	if rx.ID() != 1 || rx.Kind() != netdev.BindingRX || rx.Ifindex() != 2 || !cmp.Equal(rx.Queues(), []uint32{1}) {
		t.Errorf("RX binding %v", rx)
	}
	tx, err := c.BindTX(2, 43)
	if err != nil {
		t.Fatal(err)
	}
	if tx.ID() != 2 || tx.Kind() != netdev.BindingTX || tx.Queues() != nil {
		t.Errorf("TX binding %v", tx)
	}
	want := []netdevtest.Bound{
		{ID: 1, Kind: netdev.BindingRX, Request: netdevtest.BindRequest{Ifindex: 2, FD: 42, Queues: []uint32{1}}},
		{ID: 2, Kind: netdev.BindingTX, Request: netdevtest.BindRequest{Ifindex: 2, FD: 43}},
	}
	if diff := cmp.Diff(want, f.Bindings()); diff != "" {
		t.Errorf("bindings (-want +fake):\n%s", diff)
	}
	// The bound queue reports its binding, as the kernel's queue-get does.
	qs, err := c.Queues(2)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		bound := q.Type == netdev.QueueRX && q.ID == 1
		if bound != (q.DmabufID == rx.ID()) {
			t.Errorf("queue %+v, binding %d", q, rx.ID())
		}
	}
	// A bound queue cannot be bound again.
	_, err = c.BindRX(2, 42, []uint32{0, 1})
	var oe *netdev.OpError
	if !errors.As(err, &oe) || oe.Err != syscall.EEXIST || oe.Message != "designated queue already memory provider bound" {
		t.Errorf("second bind of queue 1 = %v, want EEXIST with the kernel's message", err)
	}
	// Closing the client unbinds nothing; closing the binding does, once.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(f.Bindings()); n != 2 {
		t.Errorf("%d bindings after closing the client, want 2", n)
	}
	if err := rx.Close(); err != nil {
		t.Fatal(err)
	}
	<-rx.Done()
	if err := rx.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if diff := cmp.Diff(want[1:], f.Bindings()); diff != "" {
		t.Errorf("bindings after closing RX (-want +fake):\n%s", diff)
	}
	if f.Queues[3].DmabufID != 0 {
		t.Errorf("queue %+v still bound after its binding was closed", f.Queues[3])
	}
	_ = tx.Close()
	if n := len(f.Bindings()); n != 0 {
		t.Errorf("%d bindings left", n)
	}
	// Ids are allocated cyclically: a freed id is not reused at once.
	c2 := newFakeClient(t, f)
	b, err := c2.BindTX(1, 44)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.ID() != 3 {
		t.Errorf("next binding id %d, want 3", b.ID())
	}
}

// TestFakeExtack checks that a refusal carrying the kernel's extended
// acknowledgement comes back as an *OpError with Message and Offset set.
func TestFakeExtack(t *testing.T) {
	f := fakeNIC()
	f.BindRX = func(r netdevtest.BindRequest) error {
		return &netdevtest.Error{Errno: syscall.EINVAL, Message: "tcp-data-split is disabled", Offset: 20}
	}
	f.BindTX = func(netdevtest.BindRequest) error {
		return &netdevtest.Error{Errno: syscall.EOPNOTSUPP, Message: "Driver does not support netmem TX"}
	}
	c := newFakeClient(t, f)
	_, err := c.BindRX(2, 42, []uint32{0})
	var oe *netdev.OpError
	if !errors.As(err, &oe) {
		t.Fatalf("BindRX = %T %v, want *OpError", err, err)
	}
	want := &netdev.OpError{Subsystem: "netdev", Op: "bind-rx", Err: syscall.EINVAL, Message: "tcp-data-split is disabled", Offset: 20}
	if *oe != *want {
		t.Errorf("BindRX error %#v, want %#v", oe, want)
	}
	if got, want := err.Error(), `netdev: bind-rx: invalid argument (errno 22): kernel says "tcp-data-split is disabled" (attribute at offset 20)`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	_, err = c.BindTX(2, 42)
	if !errors.As(err, &oe) || oe.Message != "Driver does not support netmem TX" || !errors.Is(err, netdev.ErrNotSupported) {
		t.Errorf("BindTX = %v, want EOPNOTSUPP (ErrNotSupported) with the driver's message", err)
	}
	// The fake's own checks answer as the kernel does.
	for _, tc := range []struct {
		name    string
		err     error
		errno   syscall.Errno
		message string
	}{
		{"bind-rx of a missing device", bindRX(c, 9, 0), syscall.ENODEV, ""},
		{"bind-rx of a TX-only queue id", bindRX(c, 2, 5), syscall.ERANGE, "rx queue index out of range"},
		{"queue dump of a missing device", queues(c, 9), syscall.ENODEV, ""},
	} {
		if !errors.As(tc.err, &oe) || oe.Err != tc.errno || oe.Message != tc.message || oe.Subsystem != "netdev" {
			t.Errorf("%s: %v, want errno %v message %q", tc.name, tc.err, tc.errno, tc.message)
		}
	}
	if err := queues(c, 9); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("queue dump of a missing device = %v, want os.ErrNotExist", err)
	}
	if n := len(f.Bindings()); n != 0 {
		t.Errorf("%d bindings after refusals", n)
	}
}

func bindRX(c *netdev.Client, ifindex int, queue uint32) error {
	b, err := c.BindRX(ifindex, 42, []uint32{queue})
	if err == nil {
		b.Close()
	}
	return err
}

func queues(c *netdev.Client, ifindex int) error {
	_, err := c.Queues(ifindex)
	return err
}

// TestFakeKernels runs the client against kernels that lack what it needs:
// no netdev family, no bind-tx, no CAP_NET_ADMIN, no queue statistics.
func TestFakeKernels(t *testing.T) {
	if _, err := netdev.NewClient((&netdevtest.Family{Absent: true}).Dial); !errors.Is(err, netdev.ErrNotSupported) {
		t.Errorf("NewClient without the family = %v, want ErrNotSupported", err)
	}

	old := fakeNIC()
	old.Ops = netdevtest.DefaultOps()
	delete(old.Ops, uapi.NETDEV_CMD_BIND_TX)
	c := newFakeClient(t, old)
	ops, err := c.FamilyOps()
	if _, has := ops[uapi.NETDEV_CMD_BIND_TX]; err != nil || has || ops[uapi.NETDEV_CMD_BIND_RX]&uapi.GENL_ADMIN_PERM == 0 {
		t.Errorf("FamilyOps of a 6.12 kernel = %v, %v", ops, err)
	}
	if _, err := c.BindTX(2, 42); !errors.Is(err, netdev.ErrNotSupported) {
		t.Errorf("BindTX on a kernel without bind-tx = %v, want ErrNotSupported", err)
	}

	unpriv := fakeNIC()
	unpriv.Unprivileged = true
	c = newFakeClient(t, unpriv)
	if _, err := c.BindRX(2, 42, []uint32{0}); !errors.Is(err, os.ErrPermission) || !errors.Is(err, syscall.EPERM) {
		t.Errorf("BindRX without CAP_NET_ADMIN = %v, want EPERM", err)
	}
	b, err := c.BindTX(2, 42)
	if err != nil {
		t.Fatalf("BindTX without CAP_NET_ADMIN: %v", err)
	}
	b.Close()

	nostats := fakeNIC()
	nostats.Fail = func(cmd uint8) error {
		if cmd == uapi.NETDEV_CMD_QSTATS_GET {
			return &netdevtest.Error{Errno: syscall.EOPNOTSUPP}
		}
		return nil
	}
	c = newFakeClient(t, nostats)
	if _, err := c.QStats(2); !errors.Is(err, netdev.ErrNotSupported) {
		t.Errorf("QStats of a driver without queue stats = %v, want ErrNotSupported", err)
	}
	if _, err := c.Devices(); err != nil {
		t.Errorf("Devices: %v", err)
	}
}
