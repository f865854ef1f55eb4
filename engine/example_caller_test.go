package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"net"
	"os"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// Read a volume straight into memory the program owns: a []byte imported
// into the host-memory provider is the read's destination, and no copy is
// made. (The first half of the example serves a volume on loopback so that
// it runs on its own.)
func ExampleClient_Read_callerBuffer() {
	ctx := context.Background()
	key := []byte("an example key of at least 16 bytes")
	dir, err := os.MkdirTemp("", "blockxfer-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	store, err := catalog.OpenStore(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	vol, err := store.Create(ctx, "weights", 3<<20, 1<<20, catalog.FillRandom)
	if err != nil {
		log.Fatal(err)
	}
	srv, err := engine.NewServer(engine.ServerConfig{Key: key, Volumes: store, Transport: &tcp.Transport{}})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(l)

	// The client side: the caller's buffer becomes a provider buffer.
	p := hostmem.New()
	defer p.Close()
	mine := make([]byte, 1<<20)
	dst, err := p.ImportBytes(mine)
	if err != nil {
		log.Fatal(err)
	}
	c := engine.NewClient(l.Addr().String(), engine.Config{Key: key, Provider: p, Transport: &tcp.Transport{},
		Verify: engine.VerifyRequire}, engine.ResumeOptions{})
	defer c.Close()
	res, err := c.Read(ctx, "weights", []engine.Range{{Offset: 2 << 20, Length: 1 << 20}}, dst, nil)
	if err != nil {
		log.Fatal(err)
	}
	// Free forgets the buffer; the bytes stay in mine.
	if err := p.Free(ctx, dst.ID); err != nil {
		log.Fatal(err)
	}
	onDisk, err := os.ReadFile(vol.Backing)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("read %d bytes into the caller's slice, %d extent(s) verified: same as on disk: %t\n",
		res[0].Bytes, res[0].VerifiedExtents, bytes.Equal(mine, onDisk[2<<20:]))
	// Output: read 1048576 bytes into the caller's slice, 1 extent(s) verified: same as on disk: true
}
