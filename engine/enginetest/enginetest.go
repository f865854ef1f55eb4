// Package enginetest holds test helpers for packages that fetch through
// the engine: a loopback blockd engine serving a random volume, and a
// whole-volume fetch into a provider checked byte for byte.
package enginetest

import (
	"bytes"
	"context"
	"net"
	"os"
	"testing"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// key is the pre-shared key of the servers and clients made here.
var key = []byte("enginetest-key-enginetest-key-32")

// FetchAll serves a random volume of size bytes (1 MiB extents) from an
// engine server over TCP on loopback, fetches all of it into a buffer of
// p through a session with two data connections that requires every
// extent checked, reads the buffer back and fails t unless the bytes are
// the volume's and every extent was verified. The buffer is freed and the
// server closed before it returns the read's result.
func FetchAll(t testing.TB, p memory.Provider, size int64) engine.Result {
	t.Helper()
	ctx := context.Background()
	store, err := catalog.OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	v, err := store.Create(ctx, "vol", size, 1<<20, catalog.FillRandom)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(v.Backing)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := engine.NewServer(engine.ServerConfig{Key: key, Volumes: store, Transport: &tcp.Transport{}})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()

	s, err := engine.Dial(ctx, l.Addr().String(), engine.Config{Key: key, Provider: p, Transport: &tcp.Transport{},
		DataConns: 2, Verify: engine.VerifyRequire})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	buf, err := p.Alloc(ctx, size, false)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Free(ctx, buf.ID)
	res, err := s.Read(ctx, "vol", []engine.Range{{Offset: 0, Length: size}}, buf)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].UnverifiedExtents != 0 || res[0].VerifiedExtents == 0 {
		t.Errorf("fetch into %s not verified: %+v", p.Name(), res[0])
	}
	got := make([]byte, size)
	if err := p.ReadBack(ctx, buf.ID, 0, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the bytes in %s's buffer differ from the volume", p.Name())
	}
	return res[0]
}
