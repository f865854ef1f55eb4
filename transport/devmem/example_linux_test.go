//go:build linux

package devmem_test

import (
	"context"
	"errors"
	"log"
	"net"

	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport/devmem"
)

// The client side: bind a provider buffer to the RX queues the data
// connections are steered to, and hand the engine a RecvTransport. If the
// device cannot do devmem, fall back to TCP and say why.
func ExampleRecvTransport() {
	ctx := context.Background()
	var p memory.Provider // the provider plugin, e.g. udmabuf or gpu
	var conn net.Conn     // an established data connection, steered to queue 8
	const ifindex = 2
	k := devmem.Host() // or devmem.NewSoftNIC for --devmem=emulate

	arena, err := p.Alloc(ctx, 64<<20, true)
	if err != nil {
		log.Fatal(err)
	}
	bind, err := k.BindRX(ifindex, arena.DmabufFD, []uint32{8})
	if errors.Is(err, devmem.ErrNotSupported) {
		log.Printf("devmem unavailable, using tcp: %v", err) // reason on the result
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	defer bind.Close() // unbinds

	rt := &devmem.RecvTransport{Kernel: k, Binding: bind, Arena: arena.ID,
		Config: devmem.RXConfig{FragBudget: 64 << 20 / 4096 / 8}} // 8 connections
	r, err := rt.NewReceiver(conn, p)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	var dst memory.BufferID // from the request
	if err := r.Receive(ctx, dst, 0, 1<<20); err != nil {
		log.Fatal(err)
	}
}

// The server side: bind a dmabuf for TX and send extents from pool buffers
// inside it; buffers are reused only after their completions.
func ExampleSendTransport() {
	var txFD int      // a dmabuf fd, e.g. from UDMABUF_CREATE
	var txMem []byte  // its CPU mapping
	var conn net.Conn // an accepted data connection
	const ifindex = 2
	k := devmem.Host()

	bind, err := k.BindTX(ifindex, txFD)
	if err != nil {
		log.Fatal(err)
	}
	defer bind.Close()
	pool, err := devmem.NewBufferPool(0, int64(len(txMem)), 256<<10)
	if err != nil {
		log.Fatal(err)
	}
	st := &devmem.SendTransport{Kernel: k, Binding: bind, Pool: pool, Mem: txMem}
	s, err := st.NewSender(conn)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close() // waits for the last completions
}
