package choose_test

import (
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/transport/choose"
)

// BenchmarkFetchPaths fetches the same 256 MiB volume over loopback through
// plain TCP and through the software NIC (devmem RX and TX emulated), in the
// same run, into host memory.
func BenchmarkFetchPaths(b *testing.B) {
	const size = 256 << 20
	store, err := catalog.OpenStore(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	if _, err := store.Create(context.Background(), "vol", size, 0, catalog.FillRandom); err != nil {
		b.Fatal(err)
	}
	for _, mode := range []choose.Mode{choose.Off, choose.Emulate} {
		for _, conns := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/conns=%d", map[choose.Mode]string{choose.Off: "tcp", choose.Emulate: "devmem-emulated"}[mode], conns), func(b *testing.B) {
				benchPath(b, store, mode, conns, size)
			})
		}
	}
}

func benchPath(b *testing.B, store *catalog.Store, mode choose.Mode, conns int, size int64) {
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	pool := hostmem.New()
	defer pool.Close()
	sp, err := choose.Server(ctx, choose.ServerOptions{Mode: mode, Listen: l.Addr().String(), EmulationPool: pool})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	srv, err := engine.NewServer(engine.ServerConfig{Key: key, Volumes: store, Transport: sp.Transport})
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	p := hostmem.New()
	defer p.Close()
	cp, err := choose.Client(ctx, choose.ClientOptions{Mode: mode, Server: l.Addr().String(), Provider: p, DataConns: conns})
	if err != nil {
		b.Fatal(err)
	}
	defer cp.Close()
	s, err := engine.Dial(ctx, l.Addr().String(), engine.Config{Key: key, Provider: p, Transport: cp.Transport, DataConns: conns})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	buf, err := p.Alloc(ctx, size, false)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Read(ctx, "vol", []engine.Range{{Offset: 0, Length: size}}, buf); err != nil {
			b.Fatal(err)
		}
	}
}
