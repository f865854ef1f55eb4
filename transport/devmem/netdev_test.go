package devmem

import (
	"encoding/binary"
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

func TestAttrRoundTrips(t *testing.T) {
	d := Device{Ifindex: 4, XDPFeatures: 43, XDPZCMaxSegs: 1, XDPRXMetadataFeatures: 2, XSKFeatures: 1}
	b, err := encodeDevice(d)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeDevice(b); err != nil || got != d {
		t.Errorf("device round trip: %+v, %v", got, err)
	}
	q := Queue{ID: 3, Ifindex: 4, Type: QueueRX, NapiID: 257, DmabufID: 9, IOUring: true}
	b, _ = encodeQueue(q)
	if got, err := decodeQueue(b); err != nil || got != q {
		t.Errorf("queue round trip: %+v, %v", got, err)
	}
	p := PagePool{ID: 12, Ifindex: 4, NapiID: 257, Inflight: 100, InflightMem: 409600, DmabufID: 9}
	b, _ = encodePagePool(p)
	if got, err := decodePagePool(b); err != nil || got != p {
		t.Errorf("page pool round trip: %+v, %v", got, err)
	}
	s := QStats{Ifindex: 4, QueueType: QueueTX, QueueID: 1, TXPackets: 5, TXBytes: 500, TXStop: 1,
		Counters: map[uint16]uint64{uapi.NETDEV_A_QSTATS_TX_PACKETS: 5, uapi.NETDEV_A_QSTATS_TX_BYTES: 500, uapi.NETDEV_A_QSTATS_TX_STOP: 1}}
	b, _ = encodeQStats(s)
	if got, err := decodeQStats(b); err != nil {
		t.Error(err)
	} else if diff := cmp.Diff(s, got); diff != "" {
		t.Errorf("qstats round trip (-want +got):\n%s", diff)
	}
	b, _ = encodeBindReply(7)
	if id, err := decodeBindReply(b); err != nil || id != 7 {
		t.Errorf("bind reply: %d, %v", id, err)
	}
}

func TestUintAttr(t *testing.T) {
	// NLA_UINT: the kernel sends 4 bytes when the value fits.
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(uapi.NETDEV_A_PAGE_POOL_ID, 5)
	ae.Uint32(uapi.NETDEV_A_PAGE_POOL_INFLIGHT, 7)
	b, _ := ae.Encode()
	p, err := decodePagePool(b)
	if err != nil || p.ID != 5 || p.Inflight != 7 {
		t.Errorf("4-byte uint attributes: %+v, %v", p, err)
	}
	if _, err := uintAttr([]byte{1, 2, 3}); !errors.Is(err, ErrMalformed) {
		t.Errorf("3-byte uint: %v", err)
	}
}

func TestEncodeBindRX(t *testing.T) {
	b, err := encodeBindRX(4, 9, []uint32{8, 9})
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
	r, err := decodeBindRequest(b)
	want := bindRequest{Ifindex: 4, FD: 9, Queues: []uint32{8, 9}}
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	b, _ = encodeBindTX(4, 9)
	if r, err := decodeBindRequest(b); err != nil || r.Ifindex != 4 || r.FD != 9 || r.Queues != nil {
		t.Errorf("bind-tx request: %+v, %v", r, err)
	}
}

func TestDecodeErrors(t *testing.T) {
	short := []byte{8, 0, 1, 0, 1, 0} // attribute length beyond the buffer
	ae := netlink.NewAttributeEncoder()
	ae.Uint16(uapi.NETDEV_A_DEV_IFINDEX, 1) // wrong width
	wrongWidth, _ := ae.Encode()
	for name, fn := range map[string]func([]byte) error{
		"device":     func(b []byte) error { _, err := decodeDevice(b); return err },
		"queue":      func(b []byte) error { _, err := decodeQueue(b); return err },
		"page pool":  func(b []byte) error { _, err := decodePagePool(b); return err },
		"bind reply": func(b []byte) error { _, err := decodeBindReply(b); return err },
	} {
		for _, b := range [][]byte{short, wrongWidth, nil} {
			if err := fn(b); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s of %x: %v, want ErrMalformed", name, b, err)
			}
		}
	}
}

func TestOpError(t *testing.T) {
	e := &OpError{Subsystem: "devmem", Op: "bind-rx", Err: syscall.EOPNOTSUPP, Message: "tcp-data-split is disabled", Offset: 20}
	want := `devmem: bind-rx: operation not supported (errno 95): kernel says "tcp-data-split is disabled" (attribute at offset 20)`
	if e.Error() != want && syscall.EOPNOTSUPP == 95 {
		t.Errorf("Error() = %q", e.Error())
	}
	for _, tc := range []struct {
		errno  syscall.Errno
		target error
	}{
		{syscall.EPERM, os.ErrPermission},
		{syscall.ENODEV, os.ErrNotExist},
		{syscall.EOPNOTSUPP, ErrNotSupported},
		{syscall.ENOENT, os.ErrNotExist},
	} {
		err := error(&OpError{Op: "x", Err: tc.errno})
		if !errors.Is(err, tc.target) || !errors.Is(err, tc.errno) {
			t.Errorf("%v does not match %v and its errno", tc.errno, tc.target)
		}
	}
	if errors.Is(&OpError{Op: "x", Err: syscall.EINVAL}, ErrNotSupported) {
		t.Error("EINVAL matches ErrNotSupported")
	}
}

// FuzzNetdevAttrs feeds arbitrary attribute bytes to every netdev decoder:
// none may panic, an error is always ErrMalformed, and what decodes
// re-encodes to something that decodes the same.
func FuzzNetdevAttrs(f *testing.F) {
	seeds := [][]byte{}
	b, _ := encodeDevice(Device{Ifindex: 1, XDPFeatures: 3})
	seeds = append(seeds, b)
	b, _ = encodeQueue(Queue{ID: 1, Ifindex: 2, Type: QueueTX, DmabufID: 3, XSK: true})
	seeds = append(seeds, b)
	b, _ = encodePagePool(PagePool{ID: 1, Ifindex: 2, Inflight: 3})
	seeds = append(seeds, b)
	b, _ = encodeQStats(QStats{Ifindex: 1, Counters: map[uint16]uint64{9: 100}})
	seeds = append(seeds, b)
	b, _ = encodeBindRX(1, 2, []uint32{3})
	seeds = append(seeds, b)
	b, _ = encodeBindReply(5)
	seeds = append(seeds, b)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(err error) bool {
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return err == nil
		}
		if d, err := decodeDevice(b); check(err) {
			e, _ := encodeDevice(d)
			if d2, err := decodeDevice(e); err != nil || d2 != d {
				t.Fatalf("device round trip: %+v -> %+v, %v", d, d2, err)
			}
		}
		if q, err := decodeQueue(b); check(err) {
			e, _ := encodeQueue(q)
			if q2, err := decodeQueue(e); err != nil || q2 != q {
				t.Fatalf("queue round trip: %+v -> %+v, %v", q, q2, err)
			}
		}
		if p, err := decodePagePool(b); check(err) {
			e, _ := encodePagePool(p)
			if p2, err := decodePagePool(e); err != nil || p2 != p {
				t.Fatalf("page pool round trip: %+v -> %+v, %v", p, p2, err)
			}
		}
		if s, err := decodeQStats(b); check(err) {
			e, _ := encodeQStats(s)
			s2, err := decodeQStats(e)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(s, s2); diff != "" {
				t.Fatalf("qstats round trip (-first +again):\n%s", diff)
			}
		}
		if r, err := decodeBindRequest(b); check(err) {
			e, _ := encodeBindRX(r.Ifindex, r.FD, r.Queues)
			r2, err := decodeBindRequest(e)
			if err != nil || r2.Ifindex != r.Ifindex || r2.FD != r.FD || len(r2.Queues) != len(r.Queues) {
				t.Fatalf("bind request round trip: %+v -> %+v, %v", r, r2, err)
			}
		}
		if id, err := decodeBindReply(b); check(err) {
			e, _ := encodeBindReply(id)
			if id2, err := decodeBindReply(e); err != nil || id2 != id {
				t.Fatalf("bind reply round trip: %d -> %d, %v", id, id2, err)
			}
		}
	})
}
