//go:build linux && cgo

package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"testing"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// TestFetchIntoGPU fetches a volume from a blockd engine into GPU memory
// through the plugin (over TCP: the bytes land in the plugin's pinned
// staging and are copied to the device; every extent's CRC-32C is checked
// on the GPU buffer), and reads it back. It runs against the stand-in
// driver and, where one is installed, the real libcuda.so.1
// (scripts/gpu-check.sh).
func TestFetchIntoGPU(t *testing.T) {
	eachDriver(t, func(t *testing.T, p *providers.Plugin, fake bool) {
		driver := map[bool]string{true: "fake", false: "real"}[fake]
		ctx := context.Background()
		key := []byte("gpu-fetch-test-key-gpu-fetch-te!")
		store, err := catalog.OpenStore(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		const size = 24<<20 + 4096
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
			t.Errorf("fetch into %s GPU memory not verified: %+v", driver, res[0])
		}
		got := make([]byte, size)
		if err := p.ReadBack(ctx, buf.ID, 0, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("the bytes in GPU memory differ from the volume")
		}
		t.Logf("%s driver: fetched %d bytes into %s (%s) over %s, verified", driver, size, p.Capabilities().Device, p.Version(), res[0].Transport)
	})
}
