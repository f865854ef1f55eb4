package netdev_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev/netdevtest"
)

func TestAttrRoundTrips(t *testing.T) {
	d := netdev.Device{Ifindex: 4, XDPFeatures: 43, XDPZCMaxSegs: 1, XDPRXMetadataFeatures: 2, XSKFeatures: 1}
	b, err := netdevtest.EncodeDevice(d)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := netdev.DecodeDevice(b); err != nil || got != d {
		t.Errorf("device round trip: %+v, %v", got, err)
	}
	q := netdev.Queue{ID: 3, Ifindex: 4, Type: netdev.QueueRX, NapiID: 257, DmabufID: 9, IOUring: true}
	b, _ = netdevtest.EncodeQueue(q)
	if got, err := netdev.DecodeQueue(b); err != nil || got != q {
		t.Errorf("queue round trip: %+v, %v", got, err)
	}
	p := netdev.PagePool{ID: 12, Ifindex: 4, NapiID: 257, Inflight: 100, InflightMem: 409600, DmabufID: 9}
	b, _ = netdevtest.EncodePagePool(p)
	if got, err := netdev.DecodePagePool(b); err != nil || got != p {
		t.Errorf("page pool round trip: %+v, %v", got, err)
	}
	s := netdev.QStats{Ifindex: 4, QueueType: netdev.QueueTX, QueueID: 1, TXPackets: 5, TXBytes: 500, TXStop: 1,
		Counters: map[uint16]uint64{uapi.NETDEV_A_QSTATS_TX_PACKETS: 5, uapi.NETDEV_A_QSTATS_TX_BYTES: 500, uapi.NETDEV_A_QSTATS_TX_STOP: 1}}
	b, _ = netdevtest.EncodeQStats(s)
	if got, err := netdev.DecodeQStats(b); err != nil {
		t.Error(err)
	} else if diff := cmp.Diff(s, got); diff != "" {
		t.Errorf("qstats round trip (-want +got):\n%s", diff)
	}
	b, _ = netdevtest.EncodeBindReply(7)
	if id, err := netdev.DecodeBindReply(b); err != nil || id != 7 {
		t.Errorf("bind reply: %d, %v", id, err)
	}
}

func TestEncodeBindRX(t *testing.T) {
	b, err := netdev.EncodeBindRX(4, 9, []uint32{8, 9})
	if err != nil {
		t.Fatal(err)
	}
	// Every NETDEV_A_DMABUF_QUEUES carries NLA_F_NESTED: strict
	// validation rejects nests without it.
	var nests int
	for off := 0; off < len(b); {
		l := int(binary.NativeEndian.Uint16(b[off:]))
		typ := binary.NativeEndian.Uint16(b[off+2:])
		if typ&^netlink.Nested == uapi.NETDEV_A_DMABUF_QUEUES {
			nests++
			if typ&netlink.Nested == 0 {
				t.Error("queues attribute without NLA_F_NESTED")
			}
		}
		off += (l + 3) &^ 3
	}
	if nests != 2 {
		t.Errorf("%d queue nests, want 2", nests)
	}
	r, err := netdevtest.DecodeBindRequest(b)
	want := netdevtest.BindRequest{Ifindex: 4, FD: 9, Queues: []uint32{8, 9}}
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	b, _ = netdev.EncodeBindTX(4, 9)
	if r, err := netdevtest.DecodeBindRequest(b); err != nil || r.Ifindex != 4 || r.FD != 9 || r.Queues != nil {
		t.Errorf("bind-tx request: %+v, %v", r, err)
	}
}

// FuzzNetdevAttrs feeds arbitrary attribute bytes to every netdev decoder:
// none may panic, an error is always ErrMalformed, and what decodes
// re-encodes to something that decodes the same.
func FuzzNetdevAttrs(f *testing.F) {
	seeds := [][]byte{}
	b, _ := netdevtest.EncodeDevice(netdev.Device{Ifindex: 1, XDPFeatures: 3})
	seeds = append(seeds, b)
	b, _ = netdevtest.EncodeQueue(netdev.Queue{ID: 1, Ifindex: 2, Type: netdev.QueueTX, DmabufID: 3, XSK: true})
	seeds = append(seeds, b)
	b, _ = netdevtest.EncodePagePool(netdev.PagePool{ID: 1, Ifindex: 2, Inflight: 3})
	seeds = append(seeds, b)
	b, _ = netdevtest.EncodeQStats(netdev.QStats{Ifindex: 1, Counters: map[uint16]uint64{9: 100}})
	seeds = append(seeds, b)
	b, _ = netdev.EncodeBindRX(1, 2, []uint32{3})
	seeds = append(seeds, b)
	b, _ = netdevtest.EncodeBindReply(5)
	seeds = append(seeds, b)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(err error) bool {
			if err != nil && !errors.Is(err, netdev.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return err == nil
		}
		if d, err := netdev.DecodeDevice(b); check(err) {
			e, _ := netdevtest.EncodeDevice(d)
			if d2, err := netdev.DecodeDevice(e); err != nil || d2 != d {
				t.Fatalf("device round trip: %+v -> %+v, %v", d, d2, err)
			}
		}
		if q, err := netdev.DecodeQueue(b); check(err) {
			e, _ := netdevtest.EncodeQueue(q)
			if q2, err := netdev.DecodeQueue(e); err != nil || q2 != q {
				t.Fatalf("queue round trip: %+v -> %+v, %v", q, q2, err)
			}
		}
		if p, err := netdev.DecodePagePool(b); check(err) {
			e, _ := netdevtest.EncodePagePool(p)
			if p2, err := netdev.DecodePagePool(e); err != nil || p2 != p {
				t.Fatalf("page pool round trip: %+v -> %+v, %v", p, p2, err)
			}
		}
		if s, err := netdev.DecodeQStats(b); check(err) {
			e, _ := netdevtest.EncodeQStats(s)
			s2, err := netdev.DecodeQStats(e)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(s, s2); diff != "" {
				t.Fatalf("qstats round trip (-first +again):\n%s", diff)
			}
		}
		if r, err := netdevtest.DecodeBindRequest(b); check(err) {
			e, _ := netdev.EncodeBindRX(r.Ifindex, r.FD, r.Queues)
			r2, err := netdevtest.DecodeBindRequest(e)
			if err != nil || r2.Ifindex != r.Ifindex || r2.FD != r.FD || len(r2.Queues) != len(r.Queues) {
				t.Fatalf("bind request round trip: %+v -> %+v, %v", r, r2, err)
			}
		}
		if id, err := netdev.DecodeBindReply(b); check(err) {
			e, _ := netdevtest.EncodeBindReply(id)
			if id2, err := netdev.DecodeBindReply(e); err != nil || id2 != id {
				t.Fatalf("bind reply round trip: %d -> %d, %v", id, id2, err)
			}
		}
	})
}
