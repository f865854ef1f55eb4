package nic

import (
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var conn1 = FlowRule{SrcIP: net.IPv4(10, 0, 0, 1), DstIP: net.IPv4(10, 0, 0, 2), SrcPort: 40000, DstPort: 5201, Queue: 6}

func TestSetupApplyAndRestore(t *testing.T) {
	d := newFakeDevice()
	initial := d.snapshot()

	s, err := apply(d, "eth0", []uint32{7, 6, 7})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if diff := cmp.Diff([]string{
		"set-feature rx-ntuple-filter on",
		"set-rings tcp-data-split on hds-thresh 0",
		"set-rss equal over queues [0, 6)",
	}, d.takeLog()); diff != "" {
		t.Fatalf("unexpected changes made by apply (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]uint32{6, 7}, s.RXQueues()); diff != "" {
		t.Fatalf("RXQueues (-want +got):\n%s", diff)
	}
	st := d.snapshot()
	if !st.Features[FeatureNtuple] || st.Rings.TCPDataSplit != TCPDataSplitEnabled || st.Rings.HDSThresh != 0 {
		t.Fatalf("device not configured: %+v", st)
	}
	for i, q := range st.RSS {
		if q >= 6 {
			t.Fatalf("RSS slot %d sends traffic to devmem queue %d", i, q)
		}
	}

	loc, err := s.AddConnRule(conn1)
	if err != nil {
		t.Fatalf("AddConnRule: %v", err)
	}
	if loc != 1023 {
		t.Fatalf("rule location %d, want 1023", loc)
	}
	if diff := cmp.Diff([]Change{
		{What: "ntuple (rx-ntuple-filter) off -> on", Undo: "ethtool -K eth0 ntuple off"},
		{What: "tcp-data-split off -> on, hds-thresh 256 -> 0", Undo: "ethtool -G eth0 tcp-data-split off hds-thresh 256"},
		{What: "RSS indirection table (128 entries) equal over queues [0, 8) -> equal over queues [0, 6)", Undo: "ethtool -X eth0 default"},
		{What: "flow rule 1023: flow-type tcp4 src-ip 10.0.0.1 dst-ip 10.0.0.2 src-port 40000 dst-port 5201 queue 6", Undo: "ethtool -N eth0 delete 1023"},
	}, s.Changes()); diff != "" {
		t.Fatalf("unexpected Changes (-want +got):\n%s", diff)
	}
	d.takeLog()

	if err := s.Restore(); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if diff := cmp.Diff([]string{
		"delete-rule 1023",
		"set-rss default",
		"set-rings tcp-data-split off hds-thresh 256",
		"set-feature rx-ntuple-filter off",
	}, d.takeLog()); diff != "" {
		t.Fatalf("unexpected restore sequence (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(initial, d.snapshot()); diff != "" {
		t.Fatalf("device not back to its initial state (-want +got):\n%s", diff)
	}
	if len(s.Changes()) != 0 {
		t.Fatalf("changes left after Restore: %v", s.Changes())
	}

	// Idempotent: nothing more happens.
	if err := s.Restore(); err != nil {
		t.Fatalf("second Restore: %v", err)
	}
	if l := d.takeLog(); len(l) != 0 {
		t.Fatalf("second Restore changed the device: %v", l)
	}
	if _, err := s.AddConnRule(conn1); !errors.Is(err, ErrRestored) {
		t.Fatalf("AddConnRule after Restore: %v, want ErrRestored", err)
	}
	if err := s.RemoveConnRule(loc); err != nil {
		t.Fatalf("RemoveConnRule after Restore: %v", err)
	}
}

// TestSetupPartialFailure fails each step of apply in turn: apply must undo
// exactly what it had done, in reverse, and return the step's error.
func TestSetupPartialFailure(t *testing.T) {
	injected := opErr("x", syscall.EOPNOTSUPP, "injected")
	tests := []struct {
		failOp  string
		applied []string // changes made before the failure
		undone  []string // the undo sequence
	}{
		{failOp: "channels"},
		{failOp: "features"},
		{failOp: "set-feature"},
		{
			failOp:  "rings",
			applied: []string{"set-feature rx-ntuple-filter on"},
			undone:  []string{"set-feature rx-ntuple-filter off"},
		},
		{
			failOp:  "set-rings",
			applied: []string{"set-feature rx-ntuple-filter on"},
			undone:  []string{"set-feature rx-ntuple-filter off"},
		},
		{
			failOp:  "rss",
			applied: []string{"set-feature rx-ntuple-filter on", "set-rings tcp-data-split on hds-thresh 0"},
			undone:  []string{"set-rings tcp-data-split off hds-thresh 256", "set-feature rx-ntuple-filter off"},
		},
		{
			failOp:  "set-rss",
			applied: []string{"set-feature rx-ntuple-filter on", "set-rings tcp-data-split on hds-thresh 0"},
			undone:  []string{"set-rings tcp-data-split off hds-thresh 256", "set-feature rx-ntuple-filter off"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.failOp, func(t *testing.T) {
			d := newFakeDevice()
			initial := d.snapshot()
			d.fail = failAt(tt.failOp, 1, injected)
			s, err := apply(d, "eth0", []uint32{6, 7})
			if s != nil || !errors.Is(err, injected) || !errors.Is(err, ErrNotSupported) {
				t.Fatalf("apply = %v, %v; want nil and the injected error", s, err)
			}
			want := append(append([]string(nil), tt.applied...), tt.undone...)
			if diff := cmp.Diff(want, d.takeLog(), cmp.Comparer(func(a, b []string) bool {
				return strings.Join(a, "\n") == strings.Join(b, "\n")
			})); diff != "" {
				t.Fatalf("unexpected sequence (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(initial, d.snapshot()); diff != "" {
				t.Fatalf("device not restored (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSetupUndoFailsDuringApply: the RSS step fails and then undoing the
// rings change fails too; apply reports both and still undoes ntuple.
func TestSetupUndoFailsDuringApply(t *testing.T) {
	d := newFakeDevice()
	rssErr := opErr("ETHTOOL_SRXFHINDIR", syscall.EINVAL, "")
	undoErr := opErr("rings-set", syscall.EBUSY, "device busy")
	d.fail = func(op string, n int) error {
		switch {
		case op == "set-rss":
			return rssErr
		case op == "set-rings" && n == 2:
			return undoErr
		}
		return nil
	}
	_, err := apply(d, "eth0", []uint32{6})
	if !errors.Is(err, rssErr) || !errors.Is(err, undoErr) {
		t.Fatalf("apply error %v, want both the RSS and the undo error", err)
	}
	if diff := cmp.Diff([]string{
		"set-feature rx-ntuple-filter on",
		"set-rings tcp-data-split on hds-thresh 0",
		"set-feature rx-ntuple-filter off",
	}, d.takeLog()); diff != "" {
		t.Fatalf("unexpected sequence (-want +got):\n%s", diff)
	}
}

// TestSetupRestoreRetry: the kernel refuses to turn header split off while
// a queue is bound. Restore reports it, keeps that step only, and a later
// Restore finishes the job.
func TestSetupRestoreRetry(t *testing.T) {
	d := newFakeDevice()
	s, err := apply(d, "eth0", []uint32{6, 7})
	if err != nil {
		t.Fatal(err)
	}
	d.takeLog()
	bound := opErr("rings-set", syscall.EINVAL, "can't disable tcp-data-split while device has memory provider enabled")
	d.fail = failAt("set-rings", 2, bound)
	err = s.Restore()
	if !errors.Is(err, bound) {
		t.Fatalf("Restore = %v, want the rings-set refusal", err)
	}
	if !strings.Contains(err.Error(), "memory provider") {
		t.Fatalf("Restore error lost the kernel message: %v", err)
	}
	if diff := cmp.Diff([]string{"set-rss default", "set-feature rx-ntuple-filter off"}, d.takeLog()); diff != "" {
		t.Fatalf("first Restore (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Change{{What: "tcp-data-split off -> on, hds-thresh 256 -> 0", Undo: "ethtool -G eth0 tcp-data-split off hds-thresh 256"}}, s.Changes()); diff != "" {
		t.Fatalf("changes left (-want +got):\n%s", diff)
	}
	if err := s.Restore(); err != nil {
		t.Fatalf("second Restore: %v", err)
	}
	if diff := cmp.Diff([]string{"set-rings tcp-data-split off hds-thresh 256"}, d.takeLog()); diff != "" {
		t.Fatalf("second Restore (-want +got):\n%s", diff)
	}
	if err := s.Restore(); err != nil || len(d.takeLog()) != 0 {
		t.Fatalf("third Restore: %v", err)
	}
}

// TestSetupAlreadyConfigured: a NIC already set up records nothing to undo,
// but header split is still set explicitly (bind-rx checks the configured
// value, not the reported one).
func TestSetupAlreadyConfigured(t *testing.T) {
	d := newFakeDevice()
	d.state.Features[FeatureNtuple] = true
	d.state.Rings.TCPDataSplit, d.state.Rings.HDSThresh = TCPDataSplitEnabled, 0
	d.state.RSS = equalTable(128, 4)
	s, err := apply(d, "eth0", []uint32{4, 5, 6, 7})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"set-rings tcp-data-split on hds-thresh 0"}, d.takeLog()); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if len(s.Changes()) != 0 {
		t.Fatalf("changes recorded: %v", s.Changes())
	}
	if err := s.Restore(); err != nil || len(d.takeLog()) != 0 {
		t.Fatalf("Restore: %v", err)
	}
}

// TestSetupRSSRestore: a table that is not the driver default is written
// back as it was.
func TestSetupRSSRestore(t *testing.T) {
	custom := equalTable(16, 8)
	custom[3] = 0
	tests := []struct {
		name string
		old  []uint32
		undo string
	}{
		{name: "equal over fewer queues", old: equalTable(16, 7), undo: "ethtool -X eth0 equal 7"},
		{name: "custom", old: custom, undo: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newFakeDevice()
			d.state.RSS = tt.old
			s, err := apply(d, "eth0", []uint32{6})
			if err != nil {
				t.Fatal(err)
			}
			ch := s.Changes()
			if got := ch[len(ch)-1].Undo; got != tt.undo {
				t.Fatalf("RSS undo command %q, want %q", got, tt.undo)
			}
			if err := s.Restore(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.old, d.snapshot().RSS); diff != "" {
				t.Fatalf("RSS table not restored (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSetupNoHDSThresh(t *testing.T) {
	d := newFakeDevice()
	d.state.Rings.HasHDSThresh, d.state.Rings.HDSThresh = false, 0
	s, err := apply(d, "eth0", []uint32{6})
	if err != nil {
		t.Fatal(err)
	}
	log := d.takeLog()
	if log[1] != "set-rings tcp-data-split on" {
		t.Fatalf("hds-thresh sent to a driver without it: %v", log)
	}
	if err := s.Restore(); err != nil {
		t.Fatal(err)
	}
	if log := d.takeLog(); !strings.Contains(strings.Join(log, "\n"), "set-rings tcp-data-split off\n") {
		t.Fatalf("unexpected restore %v", log)
	}
}

func TestSetupValidation(t *testing.T) {
	for _, tt := range []struct {
		name   string
		queues []uint32
		want   string
	}{
		{"no queues", nil, "no devmem RX queues"},
		{"queue 0", []uint32{0, 1}, "queue 0 cannot be a devmem queue"},
		{"beyond the device", []uint32{7, 8}, "devmem queue 8 does not exist: the device has 8 RX queues (raise with: ethtool -L eth0 combined 9)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := newFakeDevice()
			_, err := apply(d, "eth0", tt.queues)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("apply error %v, want %q", err, tt.want)
			}
			if l := d.takeLog(); len(l) != 0 {
				t.Fatalf("device changed: %v", l)
			}
		})
	}
	// A fixed-off ntuple feature is not supported, and nothing changes.
	d := newFakeDevice()
	delete(d.changeable, FeatureNtuple)
	if _, err := apply(d, "eth0", []uint32{6}); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("apply on a NIC without ntuple: %v", err)
	}
	if l := d.takeLog(); len(l) != 0 {
		t.Fatalf("device changed: %v", l)
	}
	// The kernel accepted the feature but did not turn it on.
	d = newFakeDevice()
	d.fail = func(op string, n int) error {
		if op == "set-feature" {
			d.changeable[FeatureNtuple] = false // the driver silently refuses
		}
		return nil
	}
	if _, err := apply(d, "eth0", []uint32{6}); err == nil || !strings.Contains(err.Error(), "still off") {
		t.Fatalf("apply with a silently refused ntuple: %v", err)
	}
}

func TestConnRules(t *testing.T) {
	d := newFakeDevice()
	s, err := apply(d, "eth0", []uint32{6, 7})
	if err != nil {
		t.Fatal(err)
	}
	d.takeLog()

	if _, err := s.AddConnRule(FlowRule{DstIP: net.IPv4(10, 0, 0, 2), DstPort: 1, Queue: 2}); err == nil {
		t.Fatal("rule to a non-devmem queue accepted")
	}
	a, err := s.AddConnRule(conn1)
	if err != nil {
		t.Fatal(err)
	}
	r2 := conn1
	r2.SrcPort, r2.Queue = 40001, 7
	b, err := s.AddConnRule(r2)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveConnRule(a); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveConnRule(a); err == nil {
		t.Fatal("removing a rule twice succeeded")
	}
	// A rule someone else deleted (ENOENT) counts as removed.
	d.mu.Lock()
	delete(d.state.Rules, b)
	d.mu.Unlock()
	if err := s.RemoveConnRule(b); err != nil {
		t.Fatalf("RemoveConnRule of a vanished rule: %v", err)
	}
	if diff := cmp.Diff([]string{
		"insert-rule 1023 " + conn1.String(),
		"insert-rule 1022 " + r2.String(),
		"delete-rule 1023",
	}, d.takeLog()); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if err := s.Restore(); err != nil {
		t.Fatal(err)
	}
	if n := len(d.snapshot().Rules); n != 0 {
		t.Fatalf("%d rules left", n)
	}
}

func TestInsertFlowRuleFallback(t *testing.T) {
	// The driver cannot match on the source: 5-tuple EOPNOTSUPP, then the
	// 3-tuple.
	d := newFakeDevice()
	d.no5Tuple = true
	loc, err := insertFlowRule(d, "eth0", conn1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[uint32]FlowRule{loc: conn1.threeTuple()}, d.snapshot().Rules); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if d.calls["insert-rule"] != 2 {
		t.Fatalf("%d insert attempts, want 2", d.calls["insert-rule"])
	}

	// EINVAL also falls back; EPERM does not.
	for _, tt := range []struct {
		errno    syscall.Errno
		attempts int
	}{{syscall.EINVAL, 2}, {syscall.EPERM, 1}} {
		d := newFakeDevice()
		d.fail = failAt("insert-rule", 1, opErr("ETHTOOL_SRXCLSRLINS", tt.errno, ""))
		_, err := insertFlowRule(d, "eth0", conn1)
		if (err == nil) != (tt.attempts == 2) || d.calls["insert-rule"] != tt.attempts {
			t.Fatalf("%v: err %v after %d attempts, want %d", tt.errno, err, d.calls["insert-rule"], tt.attempts)
		}
	}

	// A 3-tuple rule is tried once.
	d = newFakeDevice()
	d.fail = func(string, int) error { return opErr("ETHTOOL_SRXCLSRLINS", syscall.EOPNOTSUPP, "") }
	if _, err := insertFlowRule(d, "eth0", conn1.threeTuple()); !errors.Is(err, ErrNotSupported) || d.calls["insert-rule"] != 1 {
		t.Fatalf("3-tuple: %v after %d attempts", err, d.calls["insert-rule"])
	}
	// Both attempts failing keeps both errors.
	d = newFakeDevice()
	first := opErr("ETHTOOL_SRXCLSRLINS", syscall.EOPNOTSUPP, "")
	second := opErr("ETHTOOL_SRXCLSRLINS", syscall.ENOSPC, "")
	d.fail = func(_ string, n int) error {
		if n == 1 {
			return first
		}
		return second
	}
	_, err = insertFlowRule(d, "eth0", conn1)
	if !errors.Is(err, first) || !errors.Is(err, second) {
		t.Fatalf("joined error %v lost an attempt", err)
	}
}

// TestRestoreConcurrentWithAddConnRule: a shutdown Restore racing data
// connections leaves no rule behind; every AddConnRule either fails with
// ErrRestored or added a rule that Restore deleted.
func TestRestoreConcurrentWithAddConnRule(t *testing.T) {
	d := newFakeDevice()
	s, err := apply(d, "eth0", []uint32{6, 7})
	if err != nil {
		t.Fatal(err)
	}
	const n = 64
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make(chan error, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			r := conn1
			r.SrcPort = uint16(30000 + i)
			_, err := s.AddConnRule(r)
			errs <- err
		})
	}
	wg.Go(func() {
		<-start
		if err := s.Restore(); err != nil {
			t.Errorf("Restore: %v", err)
		}
	})
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && !errors.Is(err, ErrRestored) {
			t.Errorf("AddConnRule: %v", err)
		}
	}
	if err := s.Restore(); err != nil {
		t.Fatal(err)
	}
	if st := d.snapshot(); len(st.Rules) != 0 || st.Features[FeatureNtuple] {
		t.Fatalf("device not restored: %d rules, ntuple %v", len(st.Rules), st.Features[FeatureNtuple])
	}
}

// TestRestoreDeviceGone: an interface that disappeared (ENODEV) has nothing
// left to restore.
func TestRestoreDeviceGone(t *testing.T) {
	d := newFakeDevice()
	s, err := apply(d, "eth0", []uint32{6})
	if err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	d.ifname = "renamed0"
	d.mu.Unlock()
	if err := s.Restore(); err != nil {
		t.Fatalf("Restore after the device vanished: %v", err)
	}
	if len(s.Changes()) != 0 {
		t.Fatal("changes left")
	}
}

func TestClientFakeDevice(t *testing.T) {
	d := newFakeDevice()
	closed := 0
	c := newClient(d, func() error { closed++; return nil })
	if err := c.SetHeaderSplit("eth0", true, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.SetHeaderSplit("eth0", false, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.SetNtuple("eth0", true); err != nil {
		t.Fatal(err)
	}
	if err := c.SetNtuple("eth0", true); err != nil { // already on: no request
		t.Fatal(err)
	}
	old, err := c.SetRSSEqual("eth0", 4)
	if err != nil || len(old) != 128 {
		t.Fatalf("SetRSSEqual: %v, %d entries", err, len(old))
	}
	if err := c.SetRSSIndirection("eth0", nil); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{
		"set-rings tcp-data-split on hds-thresh 0",
		"set-rings tcp-data-split off",
		"set-feature rx-ntuple-filter on",
		"set-rss equal over queues [0, 4)",
		"set-rss default",
	}, d.takeLog()); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	d.state.Rings.HasHDSThresh = false
	if err := c.SetHeaderSplit("eth0", true, 128); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("non-zero hds-thresh on a driver without it: %v", err)
	}
	if _, err := c.Rings("nosuch0"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unknown interface: %v", err)
	}
	for _, bad := range []string{"", "a-name-of-16-byt"} {
		if _, err := c.Rings(bad); err == nil {
			t.Fatalf("interface name %q accepted", bad)
		}
	}
	if err := c.Close(); err != nil || c.Close() != nil || closed != 1 {
		t.Fatalf("Close twice: closed %d times", closed)
	}
}

// TestSetupMLX5GROHW: mlx5 refuses tcp-data-split on while rx-gro-hw is
// off (EINVAL, "TCP-data-split is not supported when GRO HW is disabled").
// Apply turns rx-gro-hw on first, records it, and Restore turns it off
// again after putting tcp-data-split back.
func TestSetupMLX5GROHW(t *testing.T) {
	d := newMLX5Device()
	initial := d.snapshot()
	s, err := apply(d, "eth0", []uint32{6, 7})
	if err != nil {
		t.Fatalf("apply on mlx5: %v", err)
	}
	if diff := cmp.Diff([]string{
		"set-feature rx-ntuple-filter on",
		"set-feature rx-gro-hw on",
		"set-rings tcp-data-split on",
		"set-rss equal over queues [0, 6)",
	}, d.takeLog()); diff != "" {
		t.Fatalf("unexpected changes made by apply (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Change{
		{What: "ntuple (rx-ntuple-filter) off -> on", Undo: "ethtool -K eth0 ntuple off"},
		{What: "rx-gro-hw off -> on (mlx5_core splits headers only with hardware GRO)", Undo: "ethtool -K eth0 rx-gro-hw off"},
		{What: "tcp-data-split auto -> on", Undo: "ethtool -G eth0 tcp-data-split auto"},
		{What: "RSS indirection table (128 entries) equal over queues [0, 8) -> equal over queues [0, 6)", Undo: "ethtool -X eth0 default"},
	}, s.Changes()); diff != "" {
		t.Fatalf("unexpected Changes (-want +got):\n%s", diff)
	}
	if err := s.Restore(); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if diff := cmp.Diff([]string{
		"set-rss default",
		"set-rings tcp-data-split auto",
		"set-feature rx-gro-hw off",
		"set-feature rx-ntuple-filter off",
	}, d.takeLog()); diff != "" {
		t.Fatalf("unexpected restore sequence (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(initial, d.snapshot()); diff != "" {
		t.Fatalf("device not back to its initial state (-want +got):\n%s", diff)
	}
}

// TestSetupGROHWCases: rx-gro-hw already on is left alone; a driver that
// is not known to need it keeps it off; a fixed-off rx-gro-hw makes Apply
// fail with mlx5's own refusal (errno and extack kept) and change nothing;
// a driver whose name could not be read but gives mlx5's refusal gets
// rx-gro-hw turned on and the request retried.
func TestSetupGROHWCases(t *testing.T) {
	t.Run("already on", func(t *testing.T) {
		d := newMLX5Device()
		d.state.Features[FeatureGROHW] = true
		s, err := apply(d, "eth0", []uint32{6})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range s.Changes() {
			if strings.Contains(c.What, FeatureGROHW) {
				t.Fatalf("rx-gro-hw change recorded: %v", c)
			}
		}
		if err := s.Restore(); err != nil || !d.snapshot().Features[FeatureGROHW] {
			t.Fatalf("Restore: %v; rx-gro-hw must stay on", err)
		}
	})
	t.Run("other driver", func(t *testing.T) {
		d := newFakeDevice()
		d.changeable[FeatureGROHW] = true
		if _, err := apply(d, "eth0", []uint32{6}); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(strings.Join(d.takeLog(), "\n"), FeatureGROHW) {
			t.Fatal("rx-gro-hw toggled on a driver that does not need it")
		}
	})
	t.Run("fixed off", func(t *testing.T) {
		d := newMLX5Device()
		delete(d.changeable, FeatureGROHW)
		initial := d.snapshot()
		_, err := apply(d, "eth0", []uint32{6})
		var oe *OpError
		if !errors.Is(err, syscall.EINVAL) || !errors.As(err, &oe) || oe.Op != "rings-set" || !strings.Contains(oe.Message, mlx5GROHWExtack) {
			t.Fatalf("apply = %v, want mlx5's rings-set refusal with its extack", err)
		}
		if diff := cmp.Diff(initial, d.snapshot()); diff != "" {
			t.Fatalf("device not restored (-want +got):\n%s", diff)
		}
	})
	t.Run("driver name unreadable", func(t *testing.T) {
		d := newMLX5Device()
		d.fail = func(op string, _ int) error {
			if op == "drvinfo" {
				return opErr("ETHTOOL_GDRVINFO", syscall.EOPNOTSUPP, "")
			}
			return nil
		}
		s, err := apply(d, "eth0", []uint32{6})
		if err != nil {
			t.Fatalf("apply: %v", err)
		}
		if d.calls["set-rings"] != 2 {
			t.Fatalf("%d rings-set requests, want the refused one and the retry", d.calls["set-rings"])
		}
		if diff := cmp.Diff([]string{
			"set-feature rx-ntuple-filter on",
			"set-feature rx-gro-hw on",
			"set-rings tcp-data-split on",
			"set-rss equal over queues [0, 6)",
		}, d.takeLog()); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
		if err := s.Restore(); err != nil || d.snapshot().Features[FeatureGROHW] {
			t.Fatalf("Restore: %v; rx-gro-hw must be off again", err)
		}
	})
	t.Run("undo after a later failure", func(t *testing.T) {
		d := newMLX5Device()
		initial := d.snapshot()
		injected := opErr("ETHTOOL_SRXFHINDIR", syscall.EOPNOTSUPP, "injected")
		d.fail = failAt("set-rss", 1, injected)
		if _, err := apply(d, "eth0", []uint32{6}); !errors.Is(err, injected) {
			t.Fatalf("apply = %v", err)
		}
		if diff := cmp.Diff(initial, d.snapshot()); diff != "" {
			t.Fatalf("device not restored (-want +got):\n%s", diff)
		}
	})
}
