package nic

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// A Change is one modification a Setup made to a device.
type Change struct {
	// What describes the change, old value to new value.
	What string
	// Undo is the ethtool command that reverts the change by hand, for an
	// operator cleaning up after a process that could not run Restore
	// (kill -9, power loss). It is empty when no single command restores
	// the exact old state (a custom RSS table); What then has the details.
	Undo string
}

// A Setup is the devmem configuration applied to one interface by
// Client.Apply. It records every change it made, in order, so Restore can
// undo exactly those changes and nothing else.
//
// A Setup is safe for concurrent use. Its Client must stay open until
// Restore has returned.
//
// # Shutdown and signals
//
// Restore takes no context on purpose: it is meant to run after the
// program's context was cancelled, for example by signal.NotifyContext on
// SIGTERM, typically from a deferred call in main. It serialises with
// AddConnRule and RemoveConnRule (a rule being added either completes and
// is removed by Restore, or fails with ErrRestored), is idempotent, and
// waits for nothing but the kernel's answers to its requests, so it is safe
// on a shutdown path that runs while other goroutines still use the Setup. Go has no asynchronous signal
// handlers; call Restore from the goroutine that observes the signal, not
// from a finalizer. Nothing restores the device if the process is killed
// with SIGKILL or os.Exit runs first: Changes lists the commands to do it by
// hand.
//
// Close every dmabuf binding on the device before Restore: while a queue is
// bound the kernel refuses to disable tcp-data-split or raise hds-thresh
// (EINVAL, "can't disable tcp-data-split while device has memory provider
// enabled"). Restore then keeps that step, and a later Restore retries it.
type Setup struct {
	dev      device
	ifname   string
	rxQueues []uint32

	mu       sync.Mutex
	steps    []step // changes in effect, in the order they were made
	restored bool
}

// step is one recorded change and how to undo it.
type step struct {
	change Change
	undo   func(device) error
	// rule is true for a flow rule at loc (AddConnRule).
	rule bool
	loc  uint32
}

// Apply prepares ifname for devmem TCP on the RX queues rxQueues and
// returns the Setup that records what it changed. In order, like ncdevmem:
//
//  1. checks that every queue in rxQueues exists (CHANNELS_GET);
//  2. turns ntuple flow steering on if it is off (FEATURES_SET);
//  3. for drivers that refuse header split without hardware GRO (mlx5,
//     see DriverNeedsGROHW, named by ETHTOOL_GDRVINFO), turns rx-gro-hw on
//     if it is off and changeable (FEATURES_SET). A driver whose name could
//     not be read but that refuses step 4 the way mlx5 does (EINVAL, "...
//     GRO HW is disabled") gets rx-gro-hw turned on and the request
//     retried once;
//  4. sets tcp-data-split on and, for drivers that have it, hds-thresh 0
//     (RINGS_SET), always explicitly: bind-rx checks the configured value,
//     and a reported "on" may be the driver's automatic choice;
//  5. spreads RSS over queues [0, q), q the lowest queue in rxQueues
//     (ETHTOOL_SRXFHINDIR, "ethtool -X equal q"), so that no RSS traffic
//     reaches the devmem queues. Queue 0 therefore cannot be a devmem
//     queue. The old table is kept: Restore resets a table that was the
//     driver's default (an equal spread over all RX queues) to the
//     default, and writes any other table back as it was.
//
// Flow rules are added per data connection with AddConnRule. Unlike
// ncdevmem, Apply does not toggle ntuple off and on or delete rules it did not
// add: other rules on the NIC are left alone.
//
// If a step fails, Apply undoes the steps already done, in reverse order,
// and returns the error (joined with any error from undoing).
func (c *Client) Apply(ifname string, rxQueues []uint32) (*Setup, error) {
	if err := checkIfname(ifname); err != nil {
		return nil, err
	}
	return apply(c.dev, ifname, rxQueues)
}

func apply(d device, ifname string, rxQueues []uint32) (*Setup, error) {
	qs := slices.Clone(rxQueues)
	slices.Sort(qs)
	qs = slices.Compact(qs)
	if len(qs) == 0 {
		return nil, fmt.Errorf("nic: setup %s: no devmem RX queues given", ifname)
	}
	if qs[0] == 0 {
		return nil, fmt.Errorf("nic: setup %s: queue 0 cannot be a devmem queue: RSS needs queues below the devmem queues for all other traffic", ifname)
	}
	s := &Setup{dev: d, ifname: ifname, rxQueues: qs}
	if err := s.apply(); err != nil {
		if rerr := s.Restore(); rerr != nil {
			return nil, errors.Join(err, fmt.Errorf("nic: undoing the partial setup of %s: %w", ifname, rerr))
		}
		return nil, err
	}
	return s, nil
}

// apply makes the changes, recording each as soon as it is made.
func (s *Setup) apply() error {
	d, ifname := s.dev, s.ifname
	first, last := s.rxQueues[0], s.rxQueues[len(s.rxQueues)-1]

	ch, err := d.channels(ifname)
	if err != nil {
		return err
	}
	nq := ch.RXQueues()
	if last >= nq {
		return fmt.Errorf("nic: setup %s: devmem queue %d does not exist: the device has %d RX queues (raise with: ethtool -L %s combined %d)", ifname, last, nq, ifname, last+1)
	}

	f, err := d.features(ifname)
	if err != nil {
		return err
	}
	if !f.Ntuple() {
		if err := setFeature(d, ifname, FeatureNtuple, true); err != nil {
			return err
		}
		s.record(step{
			change: Change{
				What: "ntuple (" + FeatureNtuple + ") off -> on",
				Undo: "ethtool -K " + ifname + " ntuple off",
			},
			undo: func(d device) error { return setFeature(d, ifname, FeatureNtuple, false) },
		})
	}

	// mlx5 refuses header split while hardware GRO is off: turn it on
	// first when the driver is known to need it.
	groHWOn := false
	if !f.IsActive(FeatureGROHW) && f.IsChangeable(FeatureGROHW) {
		if info, err := d.driverInfo(ifname); err == nil && DriverNeedsGROHW(info.Driver) {
			if err := s.enableGROHW(info.Driver + " splits headers only with hardware GRO"); err != nil {
				return err
			}
			groHWOn = true
		}
	}

	rc, err := d.rings(ifname)
	if err != nil {
		return err
	}
	var zero *uint32
	if rc.HasHDSThresh {
		zero = new(uint32)
	}
	err = d.setRings(ifname, TCPDataSplitEnabled, zero)
	if err != nil && !groHWOn && groHWRefusal(err) {
		// A driver not known by name (its name could not be read) gave
		// mlx5's refusal: turn rx-gro-hw on if it can be, and retry.
		if f, ferr := d.features(ifname); ferr == nil && !f.IsActive(FeatureGROHW) && f.IsChangeable(FeatureGROHW) {
			if gerr := s.enableGROHW("the driver refused tcp-data-split without hardware GRO"); gerr != nil {
				return errors.Join(err, gerr)
			}
			err = d.setRings(ifname, TCPDataSplitEnabled, zero)
		}
	}
	if err != nil {
		return err
	}
	if rc.TCPDataSplit != TCPDataSplitEnabled || rc.HDSThresh != 0 {
		old := rc
		what := "tcp-data-split " + old.TCPDataSplit.String() + " -> on"
		undo := "ethtool -G " + ifname + " tcp-data-split " + old.TCPDataSplit.String()
		var oldHDS *uint32
		if old.HasHDSThresh {
			oldHDS = &old.HDSThresh
			what += ", hds-thresh " + strconv.FormatUint(uint64(old.HDSThresh), 10) + " -> 0"
			undo += " hds-thresh " + strconv.FormatUint(uint64(old.HDSThresh), 10)
		}
		s.record(step{
			change: Change{What: what, Undo: undo},
			undo:   func(d device) error { return d.setRings(ifname, old.TCPDataSplit, oldHDS) },
		})
	}

	old, err := d.rssTable(ifname)
	if err != nil {
		return err
	}
	want := equalTable(len(old), first)
	if !slices.Equal(old, want) {
		if err := d.setRSSTable(ifname, want); err != nil {
			return err
		}
		s.record(rssStep(ifname, old, nq, first))
	}
	return nil
}

// enableGROHW turns rx-gro-hw on, verifies it and records the change; why
// says what needs it.
func (s *Setup) enableGROHW(why string) error {
	ifname := s.ifname
	if err := setFeature(s.dev, ifname, FeatureGROHW, true); err != nil {
		return err
	}
	s.record(step{
		change: Change{
			What: FeatureGROHW + " off -> on (" + why + ")",
			Undo: "ethtool -K " + ifname + " " + FeatureGROHW + " off",
		},
		undo: func(d device) error { return setFeature(d, ifname, FeatureGROHW, false) },
	})
	return nil
}

// groHWRefusal reports whether err is the driver refusing tcp-data-split
// because hardware GRO is off: EINVAL with mlx5's extack, "TCP-data-split
// is not supported when GRO HW is disabled".
func groHWRefusal(err error) bool {
	var oe *OpError
	return errors.Is(err, syscall.EINVAL) && errors.As(err, &oe) && strings.Contains(oe.Message, "GRO HW")
}

// rssStep records the replacement of the RSS table old by an equal spread
// over [0, first). A table that was the driver's default (an equal spread
// over all nq RX queues) is restored by resetting to the default, as
// "ethtool -X default" and ncdevmem do; any other table is written back.
func rssStep(ifname string, old []uint32, nq, first uint32) step {
	n := equalOver(old)
	what := fmt.Sprintf("RSS indirection table (%d entries) %s -> equal over queues [0, %d)", len(old), describeTable(old), first)
	if n == nq {
		return step{
			change: Change{What: what, Undo: "ethtool -X " + ifname + " default"},
			undo:   func(d device) error { return d.setRSSTable(ifname, nil) },
		}
	}
	undo := ""
	if n != 0 {
		undo = "ethtool -X " + ifname + " equal " + strconv.FormatUint(uint64(n), 10)
	}
	return step{
		change: Change{What: what, Undo: undo},
		undo:   func(d device) error { return d.setRSSTable(ifname, old) },
	}
}

// describeTable summarises an indirection table for Change.What.
func describeTable(t []uint32) string {
	if n := equalOver(t); n != 0 {
		return fmt.Sprintf("equal over queues [0, %d)", n)
	}
	parts := make([]string, len(t))
	for i, q := range t {
		parts[i] = strconv.FormatUint(uint64(q), 10)
	}
	return "custom [" + strings.Join(parts, " ") + "]"
}

// record appends a change. It takes the lock: Apply runs before the Setup is
// shared, but the rule is the same for every writer of steps.
func (s *Setup) record(st step) {
	s.mu.Lock()
	s.steps = append(s.steps, st)
	s.mu.Unlock()
}

// Ifname returns the interface the Setup configured.
func (s *Setup) Ifname() string { return s.ifname }

// RXQueues returns the devmem RX queues, sorted.
func (s *Setup) RXQueues() []uint32 { return slices.Clone(s.rxQueues) }

// Changes returns the changes currently in effect, in the order they were
// made. After a complete Restore it is empty.
func (s *Setup) Changes() []Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Change, len(s.steps))
	for i, st := range s.steps {
		out[i] = st.change
	}
	return out
}

// AddConnRule steers one data connection to a devmem queue with an ntuple
// rule (5-tuple, falling back to the 3-tuple like Client.InsertFlowRule) and
// records it. r.Queue must be one of the Setup's RX queues. It returns the
// rule's location, for RemoveConnRule. After Restore it fails with
// ErrRestored.
func (s *Setup) AddConnRule(r FlowRule) (uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.restored {
		return 0, ErrRestored
	}
	if !slices.Contains(s.rxQueues, r.Queue) {
		return 0, fmt.Errorf("nic: flow rule %v: queue %d is not a devmem queue of %s (%v)", r, r.Queue, s.ifname, s.rxQueues)
	}
	loc, err := insertFlowRule(s.dev, s.ifname, r)
	if err != nil {
		return 0, err
	}
	ifname := s.ifname
	s.steps = append(s.steps, step{
		change: Change{
			What: fmt.Sprintf("flow rule %d: %v", loc, r),
			Undo: "ethtool -N " + ifname + " delete " + strconv.FormatUint(uint64(loc), 10),
		},
		undo: func(d device) error { return d.deleteRule(ifname, loc) },
		rule: true,
		loc:  loc,
	})
	return loc, nil
}

// RemoveConnRule deletes a rule added by AddConnRule, when its connection
// ends. A rule the kernel no longer has (ENOENT) counts as removed. After
// Restore, which removed every rule, it does nothing.
func (s *Setup) RemoveConnRule(loc uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.steps, func(st step) bool { return st.rule && st.loc == loc })
	if i < 0 {
		if s.restored {
			return nil
		}
		return fmt.Errorf("nic: flow rule %d on %s was not added by this setup", loc, s.ifname)
	}
	if err := s.dev.deleteRule(s.ifname, loc); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s.steps = slices.Delete(s.steps, i, i+1)
	return nil
}

// Restore undoes every recorded change in reverse order: flow rules, then
// the RSS table, then tcp-data-split/hds-thresh, then rx-gro-hw, then
// ntuple. It continues past failures and returns them joined; failed steps
// stay recorded, and a later Restore retries only those. A change whose
// device or rule is gone (ENODEV, ENOENT) counts as undone. Once every
// change is undone, further calls return nil. See the Setup documentation for use on shutdown.
func (s *Setup) Restore() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restored = true
	var (
		errs   []error
		failed []step
	)
	for i := len(s.steps) - 1; i >= 0; i-- {
		st := s.steps[i]
		if err := st.undo(s.dev); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("nic: undo %q: %w", st.change.What, err))
			failed = append(failed, st)
		}
	}
	slices.Reverse(failed)
	s.steps = failed
	return errors.Join(errs...)
}
