// Package selftest is `blockcat selftest SERVER`: a hardware self-test of
// the devmem path between this host and a blockd, modelled on the kernel's
// devmem selftest (tools/testing/selftests/drivers/net/hw/devmem.py: RX of
// a known pattern, TX, TX in small chunks, header split at small payload
// sizes) and extended with what blockxfer depends on: frag-token
// exhaustion and recovery, and the loss of the RX binding mid-transfer.
//
// Every check names what it exercised and ends PASS, FAIL (with the
// kernel's errno and extended ack when a kernel call failed) or SKIP (with
// the reason). Where the NIC cannot do devmem RX (loopback, a driver
// without header split, no dmabuf provider), the RX checks run over the
// software NIC (transport/devmem.SoftNIC) and say so, and the checks only
// hardware can answer are skipped with the reason. The TX checks test the
// transport blockd announced.
//
// The checks read a pattern volume that the selftest uploads first, with
// the upload path `blockcat upload` uses (replacing the volume of that
// name: the protocol has no delete, so it stays on the server, and the
// next run replaces it again). Its bytes are a function of their offset
// (Pattern), so every byte read is compared with the byte that belongs
// there, on top of the extent CRCs the engine checks.
package selftest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/choose"
	"github.com/blockxfer/blockxfer/transport/devmem"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// Status is how a check ended.
type Status string

// Check outcomes.
const (
	Pass Status = "pass"
	Fail Status = "fail"
	Skip Status = "skip"
)

// Check is one check of the selftest.
type Check struct {
	// Name identifies the check, such as "rx-pattern".
	Name string `json:"name"`
	// Exercises says what the check exercised.
	Exercises string `json:"exercises"`
	Status    Status `json:"status"`
	// Transport is the path the check moved payload over: the client's
	// receive transport for rx checks, blockd's send transport for tx
	// checks (devmem, devmem-emulated or tcp); nil when it moved none.
	Transport *string `json:"transport"`
	// Detail is what was measured (pass), what went wrong (fail) or why
	// the check did not run (skip).
	Detail string `json:"detail"`
	// KernelOp, Errno, ErrnoValue and Extack describe the kernel call
	// that failed, when one did: the operation ("netdev bind-rx"), the
	// errno's name and number, and the kernel's extended ack message.
	KernelOp   *string `json:"kernel_op"`
	Errno      *string `json:"errno"`
	ErrnoValue *int    `json:"errno_value"`
	Extack     *string `json:"extack"`
	Seconds    float64 `json:"seconds"`
	// VerifiedBytes counts the payload bytes the check read and compared
	// with the pattern, byte for byte; LinearBytes how many of them
	// arrived in host memory rather than in the dmabuf.
	VerifiedBytes int64 `json:"verified_bytes"`
	LinearBytes   int64 `json:"linear_bytes"`
}

// Report is the outcome of a selftest.
type Report struct {
	Server      string  `json:"server"`
	ServerName  *string `json:"server_name"` // as blockd named itself; nil: not connected
	Volume      string  `json:"volume"`
	VolumeBytes int64   `json:"volume_bytes"`
	Mode        string  `json:"devmem_mode"`
	// Transport is the receive path of the rx checks: devmem (the NIC)
	// or devmem-emulated (the software NIC); nil when they did not run.
	Transport *string `json:"transport"`
	// FallbackReason says why the rx checks did not run on the NIC.
	FallbackReason *string `json:"fallback_reason"`
	// ServerSend is blockd's send transport; nil: not connected.
	ServerSend    *string `json:"server_transport"`
	Passed        bool    `json:"passed"`
	PassedChecks  int     `json:"passed_checks"`
	FailedChecks  int     `json:"failed_checks"`
	SkippedChecks int     `json:"skipped_checks"`
	Checks        []Check `json:"checks"`
}

// Options configure a selftest.
type Options struct {
	Server string // HOST:PORT of the blockd
	Key    []byte
	// Provider is the memory the rx checks fetch into (the caller opens
	// and closes it). The tx checks fetch into host memory.
	Provider memory.Provider
	// Mode is the --devmem mode: Auto (the NIC when it can, else the
	// software NIC), Require (the NIC, or the rx checks fail) or Emulate
	// (the software NIC only).
	Mode choose.Mode
	// Volume is the pattern volume's name (default
	// "blockxfer-selftest"); Size its size (default 16 MiB, at least
	// 1 MiB).
	Volume string
	Size   int64
	// DataConns is the data connections of each session (default 4).
	DataConns int
	// CheckTimeout bounds each check (default 60s).
	CheckTimeout time.Duration
	Logger       *slog.Logger
	// Progress, if set, is called with each check as it ends.
	Progress func(Check)
}

// DefaultVolume is the pattern volume's default name.
const DefaultVolume = "blockxfer-selftest"

const (
	defaultSize  = 16 << 20
	minSize      = 1 << 20
	extentSize   = 1 << 20
	smallBudget  = 8  // frag budget of rx-token-exhaustion
	lossReads    = 16 // whole-volume reads in flight when the binding goes
	chunkReads   = 256
	chunkBytes   = 3 // ncdevmem's -z 3
	unsplitSkbs  = 8
	checkTimeout = 60 * time.Second
)

// hdsSizes are the payload sizes of rx-hds-sizes, as devmem.py sweeps them.
var hdsSizes = []int64{1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192}

// Run runs the selftest against o.Server and returns its report.
func Run(ctx context.Context, o Options) *Report {
	if o.Volume == "" {
		o.Volume = DefaultVolume
	}
	if o.Size == 0 {
		o.Size = defaultSize
	}
	o.Size = max(o.Size, minSize)
	if o.DataConns <= 0 {
		o.DataConns = 4
	}
	if o.CheckTimeout <= 0 {
		o.CheckTimeout = checkTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Mode == "" || o.Mode == choose.Off {
		o.Mode = choose.Auto
	}
	r := &runner{o: o, rep: &Report{Server: o.Server, Volume: o.Volume, VolumeBytes: o.Size, Mode: string(o.Mode), Checks: []Check{}}}
	defer r.close()
	r.run(ctx)
	for _, c := range r.rep.Checks {
		switch c.Status {
		case Pass:
			r.rep.PassedChecks++
		case Fail:
			r.rep.FailedChecks++
		default:
			r.rep.SkippedChecks++
		}
	}
	r.rep.Passed = r.rep.FailedChecks == 0
	return r.rep
}

// runner holds what the checks share.
type runner struct {
	o   Options
	rep *Report

	ctlP memory.Provider    // host memory of the tx checks
	ctl  *engine.Session    // plain TCP receive: connect, upload, tx checks
	path *choose.ClientPath // the rx checks' path, nil when they cannot run
	hw   bool               // path is the NIC, not the software NIC
	// noSession, noVolume, noRX and noTX are why checks that need the
	// session, the pattern volume, an rx path or devmem TX on blockd do
	// not run; empty when they can.
	noSession, noVolume, noRX, noTX string
}

func (r *runner) close() {
	if r.ctl != nil {
		_ = r.ctl.Close()
	}
	if r.ctlP != nil {
		_ = r.ctlP.Close()
	}
	if r.path != nil {
		_ = r.path.Close()
	}
}

// check runs f as the check named name, timing it and reporting it.
func (r *runner) check(ctx context.Context, name, exercises string, f func(ctx context.Context, c *Check) error) {
	c := Check{Name: name, Exercises: exercises, Status: Pass}
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, r.o.CheckTimeout)
	err := f(cctx, &c)
	timedOut := cctx.Err() != nil && ctx.Err() == nil
	cancel()
	if err != nil {
		failWith(&c, err)
		if c.Status == Fail && timedOut {
			c.Detail += fmt.Sprintf(" (the check ran past %s)", r.o.CheckTimeout)
		}
	}
	c.Seconds = time.Since(start).Seconds()
	r.rep.Checks = append(r.rep.Checks, c)
	if r.o.Progress != nil {
		r.o.Progress(c)
	}
}

// skip records a check that does not run, and why.
func (r *runner) skip(name, exercises, reason string) {
	c := Check{Name: name, Exercises: exercises, Status: Skip, Detail: reason}
	r.rep.Checks = append(r.rep.Checks, c)
	if r.o.Progress != nil {
		r.o.Progress(c)
	}
}

// skipped is a check outcome decided inside f: SKIP with the reason.
type skipped struct{ reason string }

func (s *skipped) Error() string { return s.reason }

// failWith ends c as err says: SKIP for a *skipped, else FAIL with err and
// the kernel's errno and extack when a kernel call failed.
func failWith(c *Check, err error) {
	var sk *skipped
	if errors.As(err, &sk) {
		c.Status, c.Detail = Skip, sk.reason
		return
	}
	c.Status, c.Detail = Fail, err.Error()
	kernelError(c, err)
}

// kernelError fills c's kernel fields from err: the failed operation and
// extended ack of a *devmem.OpError, and the errno of any error that
// carries one.
func kernelError(c *Check, err error) {
	var op *devmem.OpError
	if errors.As(err, &op) {
		name := strings.TrimSpace(op.Subsystem + " " + op.Op)
		c.KernelOp = &name
		if op.Message != "" {
			msg := op.Message
			c.Extack = &msg
		}
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		name := errnoName(errno)
		v := int(errno)
		c.Errno, c.ErrnoValue = &name, &v
	}
}

// errnoName names an errno as the kernel's headers do ("EOPNOTSUPP").
func errnoName(e syscall.Errno) string {
	switch e {
	case 525:
		return "ETOOSMALL" // kernel-internal, leaks out of devmem recvmsg
	case syscall.EOPNOTSUPP:
		return "EOPNOTSUPP" // the kernel's name; libc's table says ENOTSUP
	}
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return fmt.Sprintf("errno %d", int(e))
}

func ptr[T any](v T) *T { return &v }

// Check names and what they exercise.
const (
	exConnect      = "control connection, authentication and the data connections to blockd, over plain TCP"
	exVolume       = "upload of the known pattern as a volume, by the path `blockcat upload` uses (replacing the volume of that name)"
	exRXBind       = "devmem RX set-up on the NIC that routes to SERVER: header split, ntuple flow steering, RSS kept off the devmem queue, bind-rx of a dmabuf exported by the provider"
	exTXBind       = "devmem TX on blockd: the send transport it announced (bind-tx of its TX pool's dmabuf)"
	exRXPattern    = "devmem RX of the whole pattern volume: frags gathered from the bound dmabuf, tokens returned with SO_DEVMEM_DONTNEED, every byte compared with the pattern"
	exTXPattern    = "devmem TX of the whole pattern volume by blockd (sendmsg with SCM_DEVMEM_DMABUF from its TX pool, MSG_ZEROCOPY completions), received over plain TCP and compared with the pattern"
	exTXChunks     = "devmem TX in 3-byte chunks: 3-byte reads at unaligned offsets and across every extent boundary, each sent on its own, received over plain TCP"
	exHDS          = "header split at payload sizes of 1 B to 8 KiB (1, 8, 16, ... 8192): one read per size, compared with the pattern; a byte that arrives in host memory means the NIC did not split that packet"
	exUnsplit      = "packets that fail header split, arriving as plain bytes without devmem cmsgs: copied into the destination, verified and counted as linear bytes on the result"
	exTokens       = "frag-token exhaustion and recovery: a budget of 8 tokens per connection runs out again and again; the receiver returns its tokens with SO_DEVMEM_DONTNEED before it takes more, and every token comes back"
	exBindingLoss  = "binding loss mid-transfer: the RX binding is closed (unbound) while reads are in flight; they fail with \"binding closed\" (no hang, no wrong byte, no token left held), and a new binding then reads the pattern again"
	hwOnlyUnsplit  = "a NIC cannot be made to fail header split on demand: rx-hds-sizes reports any packet it did not split"
	noVolumeReason = "no pattern volume to read: "
)

func (r *runner) run(ctx context.Context) {
	r.check(ctx, "connect", exConnect, r.connect)
	if r.noSession != "" {
		for _, c := range []struct{ name, ex string }{
			{"pattern-volume", exVolume}, {"rx-bind", exRXBind}, {"tx-bind", exTXBind},
			{"rx-pattern", exRXPattern}, {"tx-pattern", exTXPattern}, {"tx-small-chunks", exTXChunks},
			{"rx-hds-sizes", exHDS}, {"rx-unsplit-packets", exUnsplit}, {"rx-token-exhaustion", exTokens},
			{"rx-binding-loss", exBindingLoss},
		} {
			r.skip(c.name, c.ex, "no session with "+r.o.Server+": "+r.noSession)
		}
		return
	}
	r.check(ctx, "pattern-volume", exVolume, r.upload)
	r.check(ctx, "rx-bind", exRXBind, r.rxBind)
	r.check(ctx, "tx-bind", exTXBind, r.txBind)
	r.check(ctx, "rx-pattern", exRXPattern, r.rxPattern)
	r.check(ctx, "tx-pattern", exTXPattern, r.txPattern)
	r.check(ctx, "tx-small-chunks", exTXChunks, r.txChunks)
	r.check(ctx, "rx-hds-sizes", exHDS, r.rxHDS)
	r.check(ctx, "rx-unsplit-packets", exUnsplit, r.rxUnsplit)
	r.check(ctx, "rx-token-exhaustion", exTokens, r.rxTokens)
	r.check(ctx, "rx-binding-loss", exBindingLoss, r.rxBindingLoss)
}

// connect opens the plain TCP session the upload and the tx checks use.
func (r *runner) connect(ctx context.Context, c *Check) error {
	r.ctlP = hostmem.New()
	s, err := engine.Dial(ctx, r.o.Server, engine.Config{Key: r.o.Key, Provider: r.ctlP, Transport: &tcp.Transport{},
		DataConns: r.o.DataConns, Name: "blockcat selftest", Logger: r.o.Logger})
	if err != nil {
		r.noSession = err.Error()
		return err
	}
	r.ctl = s
	r.rep.ServerName, r.rep.ServerSend = ptr(s.Server()), ptr(s.ServerTransport())
	c.Detail = fmt.Sprintf("blockd %q at %s, %d data connections; it sends with %s", s.Server(), r.o.Server, r.o.DataConns, s.ServerTransport())
	switch s.ServerTransport() {
	case transport.TCP:
		r.noTX = "blockd sends with tcp, not devmem (its log and its blockd_transport_info metric say why; blockd serve --devmem require fails with the reason)"
	}
	return nil
}

// upload stores the pattern volume.
func (r *runner) upload(ctx context.Context, c *Check) error {
	st, err := r.ctl.Put(ctx, r.o.Volume, r.o.Size, extentSize, &patternReader{size: r.o.Size}, true)
	if err != nil {
		r.noVolume = noVolumeReason + err.Error()
		return err
	}
	if int64(st.Size) != r.o.Size {
		r.noVolume = noVolumeReason + "wrong size"
		return fmt.Errorf("uploaded %d bytes, the server says the volume has %d", r.o.Size, st.Size)
	}
	c.Detail = fmt.Sprintf("%s: %d bytes in %d-byte extents, generation %d (replaced by every selftest; the protocol has no delete)",
		st.Name, st.Size, extentSize, st.Generation)
	return nil
}

// rxBind sets up the rx checks' path: the NIC if it can, else (except
// under --devmem require) the software NIC.
func (r *runner) rxBind(ctx context.Context, c *Check) error {
	var err error
	if r.o.Mode != choose.Emulate {
		err = r.openHardware(ctx, c)
		if r.hw {
			return nil
		}
	} else {
		err = &skipped{"--devmem emulate: the NIC was not tried"}
	}
	if r.o.Mode == choose.Require {
		r.noRX = "devmem RX could not be set up (see rx-bind) and --devmem require rules out the software NIC"
		if sk := (*skipped)(nil); errors.As(err, &sk) {
			return errors.New(sk.reason) // under require, unavailable is a failure
		}
		return err
	}
	if eerr := r.openEmulated(ctx); eerr != nil {
		r.noRX = "devmem RX through the software NIC could not be set up: " + eerr.Error()
	}
	return err
}

// openHardware tries devmem RX on the NIC and fills c: PASS with the
// binding, SKIP when this machine cannot (loopback, no header split, a
// provider without dmabufs, a driver that answers EOPNOTSUPP), FAIL when
// the kernel refused for another reason.
func (r *runner) openHardware(ctx context.Context, c *Check) error {
	// The check reports a fallback; choose's warning about it would only
	// repeat it.
	path, err := choose.Client(ctx, choose.ClientOptions{Mode: choose.Auto, Server: r.o.Server, Provider: r.o.Provider,
		DataConns: r.o.DataConns, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	if path.FallbackReason == "" {
		r.path, r.hw = path, true
		r.rep.Transport = ptr(path.Transport.Name())
		c.Transport = ptr(path.Transport.Name())
		c.Detail = fmt.Sprintf("%s, arena from provider %s", path.Binding, r.o.Provider.Name())
		return nil
	}
	r.rep.FallbackReason = ptr(path.FallbackReason)
	reason, ferr := path.FallbackReason, path.FallbackErr
	_ = path.Close()
	return fallbackOutcome(c, reason, ferr)
}

// fallbackOutcome is what rx-bind says about a fallback to TCP (reason,
// caused by ferr): FAIL when the kernel refused with an errno other than
// EOPNOTSUPP (a permission, a busy queue, a bad argument: something to
// fix), SKIP otherwise (loopback, a provider without dmabufs, a driver that
// does not support it). Both carry the kernel's errno and extack.
func fallbackOutcome(c *Check, reason string, ferr error) error {
	if ferr != nil {
		kernelError(c, ferr)
	}
	var errno syscall.Errno
	if ferr != nil && errors.As(ferr, &errno) && !errors.Is(ferr, devmem.ErrNotSupported) {
		return errors.New(reason)
	}
	return &skipped{reason}
}

// openEmulated sets up devmem RX through the software NIC.
func (r *runner) openEmulated(ctx context.Context) error {
	path, err := choose.Client(ctx, choose.ClientOptions{Mode: choose.Emulate, Server: r.o.Server, Provider: r.o.Provider,
		DataConns: r.o.DataConns, Logger: r.o.Logger})
	if err != nil {
		return err
	}
	r.path, r.hw = path, false
	r.rep.Transport = ptr(path.Transport.Name())
	return nil
}

// txBind reports blockd's send transport.
func (r *runner) txBind(_ context.Context, c *Check) error {
	send := r.ctl.ServerTransport()
	c.Transport = ptr(send)
	switch send {
	case transport.Devmem:
		c.Detail = "blockd sends with devmem from a bound TX dmabuf"
		return nil
	case transport.DevmemEmulated:
		return &skipped{"blockd runs with --devmem emulate: it sends through its software NIC, not a NIC (the tx checks test that path)"}
	}
	return &skipped{r.noTX}
}

// needRX returns why the rx checks cannot run, or "".
func (r *runner) needRX() string {
	switch {
	case r.noVolume != "":
		return r.noVolume
	case r.noRX != "":
		return r.noRX
	case r.path == nil:
		return "no devmem RX path"
	}
	return ""
}

// startRX begins an RX check: it skips it where there is no devmem RX
// path here, and names the path's transport on c.
func (r *runner) startRX(c *Check) error {
	if why := r.needRX(); why != "" {
		return &skipped{why}
	}
	c.Transport = ptr(r.path.Transport.Name())
	return nil
}

// openRX begins an RX check as startRX does and opens a session receiving
// through the rx path, which the caller closes.
func (r *runner) openRX(ctx context.Context, c *Check) (*engine.Session, error) {
	if err := r.startRX(c); err != nil {
		return nil, err
	}
	return r.rxSession(ctx, nil)
}

// rxSession opens a session receiving through rt (the rx path's transport
// when nil).
func (r *runner) rxSession(ctx context.Context, rt transport.RecvTransport) (*engine.Session, error) {
	if rt == nil {
		rt = r.path.Transport
	}
	return engine.Dial(ctx, r.o.Server, engine.Config{Key: r.o.Key, Provider: r.o.Provider, Transport: rt,
		DataConns: r.o.DataConns, Name: "blockcat selftest", Logger: r.o.Logger})
}

// readRanges reads ranges of the pattern volume through s into p, compares
// every byte with the pattern, and adds to c what it read.
func (r *runner) readRanges(ctx context.Context, s *engine.Session, p memory.Provider, ranges []engine.Range, c *Check) ([]engine.Result, error) {
	var total int64
	for _, rg := range ranges {
		total += rg.Length
	}
	buf, err := p.Alloc(ctx, total, false)
	if err != nil {
		return nil, fmt.Errorf("allocate %d bytes of %s memory: %w", total, p.Name(), err)
	}
	defer p.Free(context.Background(), buf.ID)
	res, err := s.Read(ctx, r.o.Volume, ranges, buf)
	if err != nil {
		return res, err
	}
	got, err := hostBytes(ctx, p, buf, total)
	if err != nil {
		return res, err
	}
	var off int64
	for i, rg := range ranges {
		if err := comparePattern(got[off:off+rg.Length], rg.Offset); err != nil {
			return res, fmt.Errorf("read [%d,+%d): %w", rg.Offset, rg.Length, err)
		}
		off += rg.Length
		c.VerifiedBytes += rg.Length
		c.LinearBytes += res[i].LinearBytes
	}
	return res, nil
}

// hostBytes returns n bytes of buf readable here.
func hostBytes(ctx context.Context, p memory.Provider, buf memory.Buffer, n int64) ([]byte, error) {
	if m, ok := p.(memory.Mapper); ok && p.Capabilities().CPUMappable {
		if b, err := m.Bytes(buf.ID); err == nil && int64(len(b)) >= n {
			return b[:n], nil
		}
	}
	b := make([]byte, n)
	if err := p.ReadBack(ctx, buf.ID, 0, b); err != nil {
		return nil, fmt.Errorf("read back %s memory: %w", p.Name(), err)
	}
	return b, nil
}

// extentsNote says how many extents the engine checked against their CRC.
func extentsNote(res []engine.Result) string {
	var v, u int
	for _, x := range res {
		v += x.VerifiedExtents
		u += x.UnverifiedExtents
	}
	if u == 0 {
		return fmt.Sprintf("%d extents crc32c-verified", v)
	}
	return fmt.Sprintf("%d extents crc32c-verified, %d not (the provider cannot checksum)", v, u)
}

func (r *runner) rxPattern(ctx context.Context, c *Check) error {
	s, err := r.openRX(ctx, c)
	if err != nil {
		return err
	}
	res, err := r.readRanges(ctx, s, r.o.Provider, []engine.Range{{Offset: 0, Length: r.o.Size}}, c)
	if cerr := s.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("session close (tokens still held?): %w", cerr)
	}
	if err != nil {
		return err
	}
	c.Detail = fmt.Sprintf("%d bytes byte-exact, %s; %d bytes arrived in host memory (linear)", c.VerifiedBytes, extentsNote(res), c.LinearBytes)
	return nil
}

// needTX returns why the tx checks cannot run, or "".
func (r *runner) needTX() string {
	switch {
	case r.noVolume != "":
		return r.noVolume
	case r.noTX != "":
		return r.noTX
	}
	return ""
}

func (r *runner) txPattern(ctx context.Context, c *Check) error {
	if why := r.needTX(); why != "" {
		return &skipped{why}
	}
	c.Transport = ptr(r.ctl.ServerTransport())
	res, err := r.readRanges(ctx, r.ctl, r.ctlP, []engine.Range{{Offset: 0, Length: r.o.Size}}, c)
	if err != nil {
		return err
	}
	c.Detail = fmt.Sprintf("%d bytes sent by blockd with %s arrived byte-exact, %s", c.VerifiedBytes, r.ctl.ServerTransport(), extentsNote(res))
	return nil
}

func (r *runner) txChunks(ctx context.Context, c *Check) error {
	if why := r.needTX(); why != "" {
		return &skipped{why}
	}
	c.Transport = ptr(r.ctl.ServerTransport())
	var ranges []engine.Range
	for i := range int64(chunkReads) {
		off := (i*4099 + i%7) % (r.o.Size - chunkBytes)
		ranges = append(ranges, engine.Range{Offset: off, Length: chunkBytes})
	}
	// Across each extent boundary: two sends of 1 and 2 bytes.
	for b := int64(extentSize); b < r.o.Size; b += extentSize {
		ranges = append(ranges, engine.Range{Offset: b - 1, Length: chunkBytes})
	}
	res, err := r.readRanges(ctx, r.ctl, r.ctlP, ranges, c)
	if err != nil {
		return err
	}
	var extents int
	for _, x := range res {
		extents += len(x.Extents)
	}
	c.Detail = fmt.Sprintf("%d reads of %d bytes (%d sends) arrived byte-exact", len(ranges), chunkBytes, extents)
	return nil
}

func (r *runner) rxHDS(ctx context.Context, c *Check) error {
	s, err := r.openRX(ctx, c)
	if err != nil {
		return err
	}
	defer s.Close()
	var unsplit []string
	for i, size := range hdsSizes {
		// One read at a time, at an unaligned offset, so that each is
		// a packet of its own.
		off := (int64(i)*(64<<10) + 4093) % (r.o.Size - size)
		res, err := r.readRanges(ctx, s, r.o.Provider, []engine.Range{{Offset: off, Length: size}}, c)
		if err != nil {
			return fmt.Errorf("payload of %d bytes: %w", size, err)
		}
		if res[0].LinearBytes > 0 {
			unsplit = append(unsplit, fmt.Sprintf("%d B (%d bytes in host memory)", size, res[0].LinearBytes))
		}
	}
	if err := s.Close(); err != nil {
		return fmt.Errorf("session close (tokens still held?): %w", err)
	}
	if len(unsplit) > 0 {
		return fmt.Errorf("header split failed for payloads of %s: the bytes were right (copied in as linear bytes), but a NIC that does not split them costs a copy; ncdevmem -L fails the same way",
			strings.Join(unsplit, ", "))
	}
	c.Detail = fmt.Sprintf("%d payload sizes from 1 to 8192 bytes arrived byte-exact, all in the dmabuf", len(hdsSizes))
	if !r.hw {
		c.Detail += " (the software NIC always splits; this says nothing about a NIC)"
	}
	return nil
}

func (r *runner) rxUnsplit(ctx context.Context, c *Check) error {
	if err := r.startRX(c); err != nil {
		return err
	}
	if r.hw || r.path.SoftNIC == nil {
		return &skipped{hwOnlyUnsplit}
	}
	s, err := r.rxSession(ctx, nil)
	if err != nil {
		return err
	}
	nic := r.path.SoftNIC
	before := nic.Stats()
	nic.FailHeaderSplit(unsplitSkbs)
	defer nic.FailHeaderSplit(0)
	res, err := r.readRanges(ctx, s, r.o.Provider, []engine.Range{{Offset: 0, Length: r.o.Size}}, c)
	if cerr := s.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("session close (tokens still held?): %w", cerr)
	}
	if err != nil {
		return err
	}
	after := nic.Stats()
	skbs, bytes := after.UnsplitSkbs-before.UnsplitSkbs, after.UnsplitBytes-before.UnsplitBytes
	switch {
	case skbs == 0:
		return errors.New("the software NIC left no packet unsplit")
	case c.LinearBytes < bytes:
		return fmt.Errorf("the software NIC left %d bytes unsplit, the results count %d linear bytes", bytes, c.LinearBytes)
	}
	c.Detail = fmt.Sprintf("%d packets (%d bytes) not header-split: the read went on, %d bytes byte-exact, %s, %d bytes counted linear",
		skbs, bytes, c.VerifiedBytes, extentsNote(res), c.LinearBytes)
	return nil
}

// tap is a devmem receive transport that keeps its receivers, to read
// their counters after the session.
type tap struct {
	*devmem.RecvTransport
	mu    sync.Mutex
	recvs []*devmem.Receiver
}

func (t *tap) NewReceiver(conn net.Conn, p memory.Provider) (transport.Receiver, error) {
	rc, err := t.RecvTransport.NewReceiver(conn, p)
	if err != nil {
		return nil, err
	}
	if dr, ok := rc.(*devmem.Receiver); ok {
		t.mu.Lock()
		t.recvs = append(t.recvs, dr)
		t.mu.Unlock()
	}
	return rc, nil
}

func (r *runner) rxTokens(ctx context.Context, c *Check) error {
	if err := r.startRX(c); err != nil {
		return err
	}
	rt, ok := r.path.Transport.(*devmem.RecvTransport)
	if !ok {
		return fmt.Errorf("the rx path is %s, not devmem", r.path.Transport.Name())
	}
	small := *rt
	small.Config.FragBudget = smallBudget
	t := &tap{RecvTransport: &small}
	s, err := r.rxSession(ctx, t)
	if err != nil {
		return err
	}
	_, err = r.readRanges(ctx, s, r.o.Provider, []engine.Range{{Offset: 0, Length: r.o.Size}}, c)
	cerr := s.Close() // every receiver closed: their books are final
	if err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("tokens not all returned: %w", cerr)
	}
	var full, received, freed int64
	held := 0
	for _, rc := range t.recvs {
		st := rc.Stats()
		full += st.BudgetFull
		held = max(held, st.MaxHeld)
		received += st.Tokens.Received
		freed += st.Tokens.Freed
	}
	switch {
	case full == 0:
		return fmt.Errorf("the budget of %d tokens never ran out (%d tokens received)", smallBudget, received)
	case held > smallBudget:
		return fmt.Errorf("a receiver held %d tokens, over its budget of %d", held, smallBudget)
	case freed != received:
		return fmt.Errorf("%d tokens received, the kernel freed %d", received, freed)
	}
	// Recovery: the same binding serves a read at the normal budget.
	s2, err := r.rxSession(ctx, nil)
	if err != nil {
		return fmt.Errorf("after exhaustion: %w", err)
	}
	var after Check
	_, err = r.readRanges(ctx, s2, r.o.Provider, []engine.Range{{Offset: 0, Length: min(r.o.Size, 4<<20)}}, &after)
	if cerr := s2.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("read after exhaustion: %w", err)
	}
	c.VerifiedBytes += after.VerifiedBytes
	c.LinearBytes += after.LinearBytes
	c.Detail = fmt.Sprintf("budget of %d tokens per connection ran out %d times (most held %d); %d tokens received, all returned and freed; the next read at the full budget was byte-exact",
		smallBudget, full, held, received)
	if r.path.SoftNIC != nil {
		c.Detail += fmt.Sprintf("; the software NIC has %d tokens out", r.path.SoftNIC.Stats().Tokens)
	}
	return nil
}

func (r *runner) rxBindingLoss(ctx context.Context, c *Check) error {
	s, err := r.openRX(ctx, c)
	if err != nil {
		return err
	}
	defer s.Close()
	p := r.o.Provider
	buf, err := p.Alloc(ctx, r.o.Size, false)
	if err != nil {
		return fmt.Errorf("allocate %d bytes of %s memory: %w", r.o.Size, p.Name(), err)
	}
	defer p.Free(context.Background(), buf.ID)
	// Every read lands on the same buffer: the same pattern bytes.
	reqs := make([]engine.Request, lossReads)
	for i := range reqs {
		reqs[i] = engine.Request{Volume: r.o.Volume, Offset: 0, Length: r.o.Size, Dst: buf}
	}
	hs := s.Submit(ctx, reqs)
	for moving := false; !moving; {
		for _, h := range hs {
			moving = moving || h.Progress() > 0
		}
		if ctx.Err() != nil {
			return fmt.Errorf("no read made progress: %w", ctx.Err())
		}
		time.Sleep(100 * time.Microsecond)
	}
	lost := time.Now()
	if err := r.path.Binding.Close(); err != nil {
		return fmt.Errorf("close the binding: %w", err)
	}
	const hang = 30 * time.Second
	timer := time.NewTimer(hang)
	defer timer.Stop()
	for _, h := range hs {
		select {
		case <-h.Done():
		case <-timer.C:
			return fmt.Errorf("reads still running %s after the binding was closed", hang)
		}
	}
	var done, failed int
	for _, h := range hs {
		res := h.Result()
		switch {
		case res.Err == nil:
			done++
		case errors.Is(res.Err, devmem.ErrBindingClosed):
			failed++
		default:
			return fmt.Errorf("a read failed otherwise than with the binding closed: %w", res.Err)
		}
	}
	if done > 0 {
		got, err := hostBytes(ctx, p, buf, r.o.Size)
		if err != nil {
			return err
		}
		if err := comparePattern(got, 0); err != nil {
			return fmt.Errorf("reads that completed across the binding loss: %w", err)
		}
	}
	if failed == 0 {
		// Every read had landed: the next one must notice.
		_, err := s.Read(ctx, r.o.Volume, []engine.Range{{Offset: 0, Length: r.o.Size}}, buf)
		if !errors.Is(err, devmem.ErrBindingClosed) {
			return fmt.Errorf("a read after the binding was closed: %v, want it to fail with %q", err, devmem.ErrBindingClosed)
		}
	}
	noticed := time.Since(lost)
	if err := s.Close(); err != nil {
		return fmt.Errorf("after the binding loss, the receivers did not return every token: %w", err)
	}
	// Recovery: a new binding (and on a NIC, its set-up again).
	hw, nic := r.hw, r.path.SoftNIC
	perr := r.path.Close()
	r.path = nil
	if perr != nil {
		return fmt.Errorf("release the lost binding's path: %w", perr)
	}
	if nic != nil {
		// Every socket, token and binding of the lost one is gone.
		if err := nic.Check(); err != nil {
			return fmt.Errorf("after the binding loss: %w", err)
		}
	}
	var rc Check
	if hw {
		if err := r.openHardware(ctx, &rc); !r.hw {
			r.noRX = "devmem RX could not be set up again after the binding loss"
			return fmt.Errorf("recovery: devmem RX could not be set up again: %w", err)
		}
	} else if err := r.openEmulated(ctx); err != nil {
		r.noRX = "devmem RX through the software NIC could not be set up again"
		return fmt.Errorf("recovery: %w", err)
	}
	s2, err := r.rxSession(ctx, nil)
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	_, err = r.readRanges(ctx, s2, p, []engine.Range{{Offset: 0, Length: r.o.Size}}, c)
	if cerr := s2.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("recovery on a new binding: %w", err)
	}
	c.Detail = fmt.Sprintf("binding closed under %d whole-volume reads: %d failed with %q within %s, %d had landed byte-exact, every token returned; a new binding read %d bytes byte-exact",
		lossReads, failed, devmem.ErrBindingClosed, noticed.Round(time.Millisecond), done, r.o.Size)
	return nil
}
