package netdev

import (
	"errors"
	"io"
	"testing"

	"github.com/mdlayher/netlink"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

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

func TestDecodeOps(t *testing.T) {
	ae := netlink.NewAttributeEncoder()
	ae.Uint16(uapi.CTRL_ATTR_FAMILY_ID, 20)
	ae.Nested(uapi.CTRL_ATTR_OPS, func(nae *netlink.AttributeEncoder) error {
		for i, op := range [][2]uint32{{13, uapi.GENL_ADMIN_PERM}, {15, 0}} {
			nae.Nested(uint16(i+1), func(e *netlink.AttributeEncoder) error {
				e.Uint32(uapi.CTRL_ATTR_OP_ID, op[0])
				e.Uint32(uapi.CTRL_ATTR_OP_FLAGS, op[1])
				return nil
			})
		}
		return nil
	})
	b, _ := ae.Encode()
	ops := map[uint32]uint32{}
	if err := decodeFamilyOps(b, ops); err != nil {
		t.Fatal(err)
	}
	if len(ops) != 2 || ops[13] != uapi.GENL_ADMIN_PERM || ops[15] != 0 {
		t.Fatalf("ops %v", ops)
	}
}

// FuzzDecodeOps feeds arbitrary attribute bytes to the decoder of a
// family's operation list: it may not panic, an error is always
// ErrMalformed, and an entry without an op id is never recorded.
func FuzzDecodeOps(f *testing.F) {
	ae := netlink.NewAttributeEncoder()
	ae.Nested(uapi.CTRL_ATTR_OPS, func(nae *netlink.AttributeEncoder) error {
		nae.Nested(1, func(op *netlink.AttributeEncoder) error {
			op.Uint32(uapi.CTRL_ATTR_OP_ID, 13)
			op.Uint32(uapi.CTRL_ATTR_OP_FLAGS, 1)
			return nil
		})
		return nil
	})
	seed, _ := ae.Encode()
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		ops := map[uint32]uint32{}
		if err := decodeFamilyOps(b, ops); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if _, zero := ops[0]; zero {
			t.Fatal("op id 0 recorded")
		}
	})
}

func TestBinding(t *testing.T) {
	closes := 0
	b := NewBinding(3, 2, BindingRX, []uint32{8, 9}, closerFunc(func() error { closes++; return io.ErrClosedPipe }))
	if b.ID() != 3 || b.Ifindex() != 2 || b.Kind() != BindingRX || len(b.Queues()) != 2 {
		t.Errorf("binding %v", b)
	}
	if got, want := b.String(), "devmem rx binding 3 on ifindex 2 queues [8 9]"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	b.Queues()[0] = 7
	if b.Queues()[0] != 8 {
		t.Error("Queues returns the binding's own slice")
	}
	select {
	case <-b.Done():
		t.Fatal("Done before Close")
	default:
	}
	if err := b.Close(); err != io.ErrClosedPipe {
		t.Errorf("Close = %v", err)
	}
	if err := b.Close(); err != io.ErrClosedPipe || closes != 1 {
		t.Errorf("second Close = %v after %d closes, want the first result and one close", err, closes)
	}
	<-b.Done()
	tx := NewBinding(4, 2, BindingTX, nil, closerFunc(func() error { return nil }))
	if got, want := tx.String(), "devmem tx binding 4 on ifindex 2"; got != want || tx.Queues() != nil {
		t.Errorf("String() = %q, want %q; queues %v", got, want, tx.Queues())
	}
	if got := BindingKind(9).String(); got != "binding-kind(9)" {
		t.Errorf("unknown kind = %q", got)
	}
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }
