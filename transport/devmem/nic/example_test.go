package nic_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os/signal"
	"syscall"

	"github.com/blockxfer/blockxfer/transport/devmem/nic"
)

// The preflight of "blockd doctor": every finding with its fix.
func ExampleCheck() {
	for _, f := range nic.Check("eth0") {
		fmt.Println(f)
	}
}

// Preparing a NIC for devmem on queues 8 and 9, steering one data
// connection, and putting everything back on SIGTERM.
func ExampleClient_Apply() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	c, err := nic.Dial()
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	setup, err := c.Apply("eth0", []uint32{8, 9})
	if errors.Is(err, nic.ErrNotSupported) {
		log.Printf("devmem unavailable, using plain TCP: %v", err)
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	// Runs after ctx is cancelled; dmabuf bindings must be closed first.
	defer func() {
		if err := setup.Restore(); err != nil {
			log.Printf("restore eth0: %v", err)
			for _, ch := range setup.Changes() {
				log.Printf("still changed: %s (undo by hand: %s)", ch.What, ch.Undo)
			}
		}
	}()

	loc, err := setup.AddConnRule(nic.FlowRule{
		SrcIP: net.ParseIP("192.0.2.10"), SrcPort: 40312,
		DstIP: net.ParseIP("192.0.2.1"), DstPort: 7070,
		Queue: 8,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer setup.RemoveConnRule(loc)

	<-ctx.Done()
}
