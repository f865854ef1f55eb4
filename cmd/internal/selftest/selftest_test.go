package selftest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/transport/choose"
	"github.com/blockxfer/blockxfer/transport/devmem"
)

var testKey = []byte("selftest-key-selftest-key-selft!")

// serve starts an in-process blockd whose send side is chosen by mode and
// returns its address.
func serve(t *testing.T, mode choose.Mode) string {
	t.Helper()
	store, err := catalog.OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := hostmem.New()
	sp, err := choose.Server(context.Background(), choose.ServerOptions{Mode: mode, Listen: "127.0.0.1:0", PoolSize: 4 << 20, EmulationPool: pool})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := engine.NewServer(engine.ServerConfig{Key: testKey, Volumes: store, Transport: sp.Transport, Name: "selftest"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
		if err := sp.Close(); err != nil {
			t.Errorf("server path: %v", err)
		}
		pool.Close()
		store.Close()
	})
	return l.Addr().String()
}

// run runs the selftest against addr in mode and returns its report with
// the checks by name.
func run(t *testing.T, addr string, mode choose.Mode) (*Report, map[string]Check) {
	t.Helper()
	p := hostmem.New()
	defer p.Close()
	var streamed []string
	rep := Run(context.Background(), Options{Server: addr, Key: testKey, Provider: p, Mode: mode, Size: 4 << 20,
		Progress: func(c Check) { streamed = append(streamed, c.Name) }})
	var text bytes.Buffer
	for _, c := range rep.Checks {
		PrintCheck(&text, c)
	}
	PrintSummary(&text, rep)
	t.Logf("report:\n%s", text.String())
	checks := map[string]Check{}
	for _, c := range rep.Checks {
		checks[c.Name] = c
		if c.Exercises == "" {
			t.Errorf("%s does not say what it exercised", c.Name)
		}
		if c.Status == Skip && c.Detail == "" {
			t.Errorf("%s skipped without a reason", c.Name)
		}
	}
	if len(streamed) != len(rep.Checks) || len(rep.Checks) != 11 {
		t.Errorf("%d checks reported, %d streamed; want 11", len(rep.Checks), len(streamed))
	}
	if rep.PassedChecks+rep.FailedChecks+rep.SkippedChecks != len(rep.Checks) || rep.Passed != (rep.FailedChecks == 0) {
		t.Errorf("counts %+v", rep)
	}
	return rep, checks
}

func wantStatus(t *testing.T, checks map[string]Check, st Status, names ...string) {
	t.Helper()
	for _, n := range names {
		if c := checks[n]; c.Status != st {
			t.Errorf("%s: %s (%s), want %s", n, c.Status, c.Detail, st)
		}
	}
}

// TestEmulated is the selftest as it runs here: loopback, blockd with
// --devmem emulate. The rx checks run over the software NIC; the NIC's
// binding and blockd's NIC TX are skipped with the reason.
func TestEmulated(t *testing.T) {
	addr := serve(t, choose.Emulate)
	rep, checks := run(t, addr, choose.Auto)
	if !rep.Passed || rep.Transport == nil || *rep.Transport != "devmem-emulated" || rep.FallbackReason == nil ||
		!strings.HasPrefix(*rep.FallbackReason, "loopback:") || *rep.ServerSend != "devmem-emulated" {
		t.Fatalf("report %+v", rep)
	}
	wantStatus(t, checks, Pass, "connect", "pattern-volume", "rx-pattern", "tx-pattern", "tx-small-chunks", "rx-hds-sizes",
		"rx-unsplit-packets", "rx-token-exhaustion", "rx-binding-loss")
	wantStatus(t, checks, Skip, "rx-bind", "tx-bind")
	if !strings.HasPrefix(checks["rx-bind"].Detail, "loopback:") {
		t.Errorf("rx-bind: %s", checks["rx-bind"].Detail)
	}
	if c := checks["rx-unsplit-packets"]; c.LinearBytes == 0 || c.VerifiedBytes != 4<<20 {
		t.Errorf("rx-unsplit-packets: %d linear of %d verified bytes", c.LinearBytes, c.VerifiedBytes)
	}
	if c := checks["rx-pattern"]; c.LinearBytes != 0 || c.VerifiedBytes != 4<<20 || *c.Transport != "devmem-emulated" {
		t.Errorf("rx-pattern: %+v", c)
	}
	if c := checks["rx-binding-loss"]; !strings.Contains(c.Detail, "binding closed") {
		t.Errorf("rx-binding-loss: %s", c.Detail)
	}
}

// TestServerSendsTCP: the tx checks are skipped, saying why; under
// --devmem emulate the NIC is not tried.
func TestServerSendsTCP(t *testing.T) {
	addr := serve(t, choose.Off)
	rep, checks := run(t, addr, choose.Emulate)
	if !rep.Passed || rep.FallbackReason != nil || *rep.ServerSend != "tcp" {
		t.Fatalf("report %+v", rep)
	}
	wantStatus(t, checks, Skip, "rx-bind", "tx-bind", "tx-pattern", "tx-small-chunks")
	wantStatus(t, checks, Pass, "rx-pattern", "rx-hds-sizes", "rx-unsplit-packets", "rx-token-exhaustion", "rx-binding-loss")
	if !strings.Contains(checks["tx-pattern"].Detail, "blockd sends with tcp") || !strings.Contains(checks["rx-bind"].Detail, "--devmem emulate") {
		t.Errorf("reasons: %q, %q", checks["tx-pattern"].Detail, checks["rx-bind"].Detail)
	}
}

// TestRequire: with --devmem require on loopback, rx-bind fails and the rx
// checks do not fall back to the software NIC.
func TestRequire(t *testing.T) {
	addr := serve(t, choose.Emulate)
	rep, checks := run(t, addr, choose.Require)
	if rep.Passed || rep.FailedChecks != 1 || rep.Transport != nil {
		t.Fatalf("report %+v", rep)
	}
	wantStatus(t, checks, Fail, "rx-bind")
	wantStatus(t, checks, Skip, "rx-pattern", "rx-hds-sizes", "rx-unsplit-packets", "rx-token-exhaustion", "rx-binding-loss")
	wantStatus(t, checks, Pass, "tx-pattern", "tx-small-chunks")
	if !strings.Contains(checks["rx-pattern"].Detail, "--devmem require") {
		t.Errorf("rx-pattern: %s", checks["rx-pattern"].Detail)
	}
}

// TestNoServer: without a session every other check is skipped.
func TestNoServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	rep, checks := run(t, addr, choose.Auto)
	if rep.Passed || rep.FailedChecks != 1 || rep.ServerSend != nil {
		t.Fatalf("report %+v", rep)
	}
	wantStatus(t, checks, Fail, "connect")
	if c := checks["connect"]; c.Errno == nil || *c.Errno != "ECONNREFUSED" {
		t.Errorf("connect: errno %v (%s)", c.Errno, c.Detail)
	}
	for name, c := range checks {
		if name != "connect" && (c.Status != Skip || !strings.HasPrefix(c.Detail, "no session with")) {
			t.Errorf("%s: %s %s", name, c.Status, c.Detail)
		}
	}
}

// TestFallbackOutcome: rx-bind skips what this machine cannot do and fails
// what the kernel refused, carrying its errno and extack either way.
func TestFallbackOutcome(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status Status
		errno  string
		extack string
	}{
		{"loopback", nil, Skip, "", ""},
		{"driver without devmem", &devmem.OpError{Subsystem: "netdev", Op: "bind-rx", Err: syscall.EOPNOTSUPP}, Skip, "EOPNOTSUPP", ""},
		{"no permission", &devmem.OpError{Subsystem: "netdev", Op: "bind-rx", Err: syscall.EPERM}, Fail, "EPERM", ""},
		{"queue taken", &devmem.OpError{Subsystem: "netdev", Op: "bind-rx", Err: syscall.EEXIST,
			Message: "designated queue already memory provider bound"}, Fail, "EEXIST", "designated queue already memory provider bound"},
		{"other error", errors.New("no route"), Skip, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Check
			err := fallbackOutcome(&c, "code: "+tc.name, tc.err)
			failWith(&c, err)
			if c.Status != tc.status || c.Detail != "code: "+tc.name {
				t.Errorf("%s %q, want %s", c.Status, c.Detail, tc.status)
			}
			if got := deref(c.Errno); got != tc.errno {
				t.Errorf("errno %q, want %q", got, tc.errno)
			}
			if got := deref(c.Extack); got != tc.extack {
				t.Errorf("extack %q, want %q", got, tc.extack)
			}
			if tc.errno != "" && (deref(c.KernelOp) != "netdev bind-rx" || c.ErrnoValue == nil) {
				t.Errorf("kernel op %q, errno value %v", deref(c.KernelOp), c.ErrnoValue)
			}
		})
	}
	if n := errnoName(525); n != "ETOOSMALL" {
		t.Errorf("errno 525 is %q", n)
	}
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// TestPattern: the pattern at any offset is the same bytes, and a copy
// shifted by any amount does not pass for it.
func TestPattern(t *testing.T) {
	whole := make([]byte, 1<<16)
	Pattern(whole, 0)
	for _, off := range []int64{0, 1, 7, 8, 9, 4093, 40000} {
		part := make([]byte, 1000)
		Pattern(part, off)
		if !bytes.Equal(part, whole[off:off+1000]) {
			t.Fatalf("pattern at %d differs from the whole", off)
		}
		if err := comparePattern(part, off); err != nil {
			t.Fatal(err)
		}
	}
	for _, shift := range []int64{1, 6, 8, 4096} {
		if err := comparePattern(whole[shift:shift+5000], 0); err == nil {
			t.Errorf("a copy shifted by %d bytes passed", shift)
		}
	}
	got, _ := io.ReadAll(&patternReader{size: 1 << 16})
	if !bytes.Equal(got, whole) {
		t.Error("patternReader differs from Pattern")
	}
}
