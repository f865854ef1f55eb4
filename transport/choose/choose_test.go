package choose_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/choose"
	"github.com/blockxfer/blockxfer/transport/devmem"
)

var key = []byte("choose-test-key-choose-test-key!")

// serve starts a server whose send side is chosen by opts and returns its
// address and a random volume's bytes.
func serve(t *testing.T, opts choose.ServerOptions, size, extent int64) (string, []byte) {
	t.Helper()
	store, err := catalog.OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	v, err := store.Create(context.Background(), "vol", size, extent, catalog.FillRandom)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(v.Backing)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Listen = l.Addr().String()
	sp, err := choose.Server(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := engine.NewServer(engine.ServerConfig{Key: key, Volumes: store, Transport: sp.Transport})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		if err := sp.Close(); err != nil {
			t.Errorf("server path close: %v", err)
		}
	})
	return l.Addr().String(), want
}

// fetch reads the whole volume through a client path chosen by opts.
func fetch(t *testing.T, addr string, opts choose.ClientOptions, n int64) ([]byte, engine.Result) {
	t.Helper()
	p := hostmem.New()
	defer p.Close()
	opts.Server, opts.Provider = addr, p
	cp, err := choose.Client(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cp.Close(); err != nil {
			t.Errorf("client path close: %v", err)
		}
	}()
	s, err := engine.Dial(context.Background(), addr, engine.Config{Key: key, Provider: p, Transport: cp.Transport,
		FallbackReason: cp.FallbackReason, DataConns: opts.DataConns, Verify: engine.VerifyRequire})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		// Closing the receivers returns every devmem token; one still
		// held is a leak and fails here.
		if err := s.Close(); err != nil {
			t.Errorf("session close: %v", err)
		}
	}()
	buf, err := p.Alloc(context.Background(), n, false)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Read(context.Background(), "vol", []engine.Range{{Offset: 0, Length: n}}, buf)
	if err != nil {
		t.Fatal(err)
	}
	mem, _ := p.Bytes(buf.ID)
	return append([]byte(nil), mem...), res[0]
}

func TestEmulatedDevmemEndToEnd(t *testing.T) {
	cases := []struct {
		name string
		rx   devmem.SoftNICConfig
		// arena smaller than the data in flight forces back-pressure
		arena int64
		// linear: some bytes arrive in host memory and are counted on
		// the result
		linear bool
	}{
		{"plain", devmem.SoftNICConfig{}, 0, false},
		{"linear frags mixed in", devmem.SoftNICConfig{LinearEvery: 3, LinearBytes: 1448}, 0, true},
		// Packets the NIC did not header-split come as plain bytes: the
		// session copies them in, verifies them and counts them.
		{"packets not header-split", devmem.SoftNICConfig{UnsplitEvery: 5}, 0, true},
		{"arena smaller than the volume", devmem.SoftNICConfig{}, 1 << 20, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, want := serve(t, choose.ServerOptions{Mode: choose.Emulate, PoolSize: 4 << 20, EmulationPool: hostPool(t)}, 24<<20+4096, 1<<20)
			got, r := fetch(t, addr, choose.ClientOptions{Mode: choose.Emulate, DataConns: 3, Emulation: tc.rx, ArenaSize: tc.arena}, int64(len(want)))
			if !bytes.Equal(got, want) {
				t.Fatal("bytes fetched through the software NIC differ from the volume")
			}
			if r.Transport != transport.DevmemEmulated || r.ServerSend != transport.DevmemEmulated || r.FallbackReason != "" {
				t.Fatalf("result transport %q, server %q, reason %q", r.Transport, r.ServerSend, r.FallbackReason)
			}
			if (r.LinearBytes > 0) != tc.linear || (r.LinearFrags > 0) != tc.linear || r.LinearBytes >= r.Bytes {
				t.Errorf("result counts %d linear bytes in %d frags of %d; want linear bytes %v", r.LinearBytes, r.LinearFrags, r.Bytes, tc.linear)
			}
			if r.UnverifiedExtents != 0 || r.VerifiedExtents == 0 {
				t.Errorf("%d extents verified, %d not", r.VerifiedExtents, r.UnverifiedExtents)
			}
			t.Logf("%d of %d bytes linear, in %d frags", r.LinearBytes, r.Bytes, r.LinearFrags)
		})
	}
}

func TestAutoFallsBackWithReason(t *testing.T) {
	// A server that cannot do devmem starts no TX pool provider.
	addr, want := serve(t, choose.ServerOptions{Mode: choose.Auto, OpenProvider: func() (memory.Provider, error) {
		t.Error("the TX pool provider was opened for a loopback server")
		return nil, errors.New("not expected")
	}}, 2<<20, 1<<20)
	got, r := fetch(t, addr, choose.ClientOptions{Mode: choose.Auto, DataConns: 2}, int64(len(want)))
	if !bytes.Equal(got, want) {
		t.Fatal("bytes differ")
	}
	// Loopback cannot carry devmem: the reason says so.
	if r.Transport != transport.TCP || !strings.HasPrefix(r.FallbackReason, "loopback:") || r.ServerSend != transport.TCP {
		t.Fatalf("transport %q server %q reason %q", r.Transport, r.ServerSend, r.FallbackReason)
	}
}

func TestRequireFails(t *testing.T) {
	p := hostmem.New()
	defer p.Close()
	_, err := choose.Client(context.Background(), choose.ClientOptions{Mode: choose.Require, Server: "127.0.0.1:9", Provider: p})
	if !errors.Is(err, choose.ErrUnavailable) || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("require on loopback: %v", err)
	}
	_, err = choose.Server(context.Background(), choose.ServerOptions{Mode: choose.Require, Listen: "0.0.0.0:7070"})
	if !errors.Is(err, choose.ErrUnavailable) || !strings.Contains(err.Error(), "--devmem-if") {
		t.Fatalf("require without an interface: %v", err)
	}
}

func TestHostProviderCannotExport(t *testing.T) {
	// A route through a non-loopback interface, if the machine has one,
	// reaches the provider check.
	ifs, _ := net.Interfaces()
	var target string
	for _, ifc := range ifs {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && ifc.Flags&net.FlagLoopback == 0 && n.IP.To4() != nil && ifc.Flags&net.FlagUp != 0 {
				target = net.JoinHostPort(n.IP.String(), "9")
			}
		}
	}
	if target == "" {
		t.Skip("no non-loopback IPv4 interface is up")
	}
	p := hostmem.New()
	defer p.Close()
	cp, err := choose.Client(context.Background(), choose.ClientOptions{Mode: choose.Auto, Server: target, Provider: p})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	// Routing to a local address goes through lo; either reason is honest.
	if !strings.HasPrefix(cp.FallbackReason, "provider-cannot-export:") && !strings.HasPrefix(cp.FallbackReason, "loopback:") {
		t.Fatalf("reason %q", cp.FallbackReason)
	}
}

// hostPool is host memory for an emulated server's TX pool, closed with t.
func hostPool(t *testing.T) *hostmem.Provider {
	t.Helper()
	p := hostmem.New()
	t.Cleanup(func() { p.Close() })
	return p
}
