//go:build linux

package nic

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/blockxfer/blockxfer/internal/fdcount"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// checkFDs fails the test if it ends with more open file descriptors than
// it started with. Call it first, so its cleanup runs after the others.
func checkFDs(t *testing.T) {
	t.Helper()
	before := fdcount.Open(t)
	t.Cleanup(func() {
		if after := fdcount.Open(t); after != before {
			t.Errorf("file descriptor leak: %d open before the test, %d after", before, after)
		}
	})
}

// requireRoot skips when the test cannot create network namespaces.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN for a network namespace, CAP_NET_ADMIN for veth)")
	}
}

// vethNS creates a fresh network namespace holding a veth pair a<->b with
// rxQueues RX and TX queues each, and returns a Client dialed inside it.
// The namespace lives as long as the Client's socket: closing the Client
// (done in cleanup) destroys the namespace and the veth pair with it.
func vethNS(t *testing.T, a, b string, rxQueues uint32) *Client {
	t.Helper()
	type result struct {
		c   *Client
		err error
	}
	res := make(chan result, 1)
	go func() {
		// The goroutine ends without UnlockOSThread, so the runtime
		// terminates the thread instead of reusing it in the namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			res <- result{err: fmt.Errorf("unshare(CLONE_NEWNET): %w", err)}
			return
		}
		if err := createVeth(a, b, rxQueues); err != nil {
			res <- result{err: err}
			return
		}
		c, err := Dial()
		res <- result{c: c, err: err}
	}()
	r := <-res
	if r.err != nil {
		t.Fatalf("set up veth in a new network namespace: %v", r.err)
	}
	t.Cleanup(func() {
		if err := r.c.Close(); err != nil {
			t.Errorf("close client: %v", err)
		}
	})
	return r.c
}

// createVeth creates a veth pair with RTM_NEWLINK in the calling thread's
// network namespace.
func createVeth(a, b string, queues uint32) error {
	conn, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Strict: true})
	if err != nil {
		return fmt.Errorf("dial rtnetlink: %w", err)
	}
	defer conn.Close()

	linkAttrs := func(ae *netlink.AttributeEncoder, name string) {
		ae.String(unix.IFLA_IFNAME, name)
		ae.Uint32(unix.IFLA_NUM_RX_QUEUES, queues)
		ae.Uint32(unix.IFLA_NUM_TX_QUEUES, queues)
	}
	ae := netlink.NewAttributeEncoder()
	linkAttrs(ae, a)
	ae.Nested(unix.IFLA_LINKINFO, func(li *netlink.AttributeEncoder) error {
		li.String(unix.IFLA_INFO_KIND, "veth")
		li.Nested(unix.IFLA_INFO_DATA, func(data *netlink.AttributeEncoder) error {
			// VETH_INFO_PEER (1): struct ifinfomsg, then the peer's
			// link attributes.
			data.Do(1, func() ([]byte, error) {
				pae := netlink.NewAttributeEncoder()
				linkAttrs(pae, b)
				attrs, err := pae.Encode()
				return append(make([]byte, unix.SizeofIfInfomsg), attrs...), err
			})
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	_, err = conn.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  unix.RTM_NEWLINK,
			Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl,
		},
		Data: append(make([]byte, unix.SizeofIfInfomsg), attrs...),
	})
	if err != nil {
		return fmt.Errorf("RTM_NEWLINK veth %s/%s: %w", a, b, err)
	}
	return nil
}

// errnoOf returns the errno inside err, or 0.
func errnoOf(err error) unix.Errno {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return 0
}
