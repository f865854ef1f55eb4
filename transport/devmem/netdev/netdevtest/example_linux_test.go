//go:build linux

package netdevtest_test

import (
	"errors"
	"fmt"
	"log"
	"syscall"

	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev/netdevtest"
)

// A fake kernel with one device that can bind RX queues but whose driver
// cannot send from a dmabuf.
func ExampleFamily() {
	f := &netdevtest.Family{
		Devices: []netdev.Device{{Ifindex: 2}},
		Queues:  []netdev.Queue{{ID: 0, Ifindex: 2, Type: netdev.QueueRX}},
		BindTX: func(netdevtest.BindRequest) error {
			return &netdevtest.Error{Errno: syscall.EOPNOTSUPP, Message: "Driver does not support netmem TX"}
		},
	}
	c, err := netdev.NewClient(f.Dial)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	b, err := c.BindRX(2, 7, []uint32{0})
	if err != nil {
		log.Fatal(err)
	}
	qs, err := c.Queues(2)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(b)
	fmt.Println("queue 0 reports binding", qs[0].DmabufID)
	b.Close()
	fmt.Println("live bindings:", len(f.Bindings()))

	_, err = c.BindTX(2, 7)
	var oe *netdev.OpError
	if errors.As(err, &oe) {
		fmt.Printf("%s: not supported %v: %q\n", oe.Op, errors.Is(err, netdev.ErrNotSupported), oe.Message)
	}
	// Output:
	// devmem rx binding 1 on ifindex 2 queues [0]
	// queue 0 reports binding 1
	// live bindings: 0
	// bind-tx: not supported true: "Driver does not support netmem TX"
}
