package doctor

import (
	"context"
	"os"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func TestKernelVersion(t *testing.T) {
	for _, tc := range []struct {
		in           string
		major, minor int
		ok           bool
	}{
		{"6.18.44-fc-v657", 6, 18, true},
		{"6.12.0", 6, 12, true},
		{"5.4-rc1", 5, 4, true},
		{"garbage", 0, 0, false},
	} {
		major, minor, ok := kernelVersion(tc.in)
		if major != tc.major || minor != tc.minor || ok != tc.ok {
			t.Errorf("%q: got %d.%d %v", tc.in, major, minor, ok)
		}
	}
}

// TestRealKernel runs the checks against the running kernel: this one has
// the netdev family with bind-rx and bind-tx, and no udmabuf.
func TestRealKernel(t *testing.T) {
	cs := Run(context.Background(), Options{PluginDir: t.TempDir()})
	got := map[string]Check{}
	for _, c := range cs {
		got[c.Scope+"/"+c.Name] = c
		if !c.OK && c.Fix == "" && c.Scope != "provider" {
			t.Errorf("failing check %s/%s has no fix: %s", c.Scope, c.Name, c.Detail)
		}
	}
	if c := got["netdev/family"]; !c.OK {
		t.Fatalf("netdev family: %+v", c)
	}
	if c := got["netdev/bind-rx"]; !c.OK {
		t.Errorf("bind-rx op not found: %+v", c)
	}
	_, statErr := os.Stat("/dev/udmabuf")
	if c := got["udmabuf/device"]; c.OK != (statErr == nil) {
		t.Errorf("udmabuf check %+v disagrees with stat: %v", c, statErr)
	}
	if c := got["provider/dmabuf-exporter"]; c.OK {
		t.Errorf("an empty plugin directory has a dmabuf exporter: %+v", c)
	}
}

func FuzzDecodeOps(f *testing.F) {
	ae := netlink.NewAttributeEncoder()
	ae.Nested(unix.CTRL_ATTR_OPS, func(nae *netlink.AttributeEncoder) error {
		nae.Nested(1, func(op *netlink.AttributeEncoder) error {
			op.Uint32(unix.CTRL_ATTR_OP_ID, 13)
			op.Uint32(unix.CTRL_ATTR_OP_FLAGS, 1)
			return nil
		})
		return nil
	})
	seed, _ := ae.Encode()
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		ops := map[uint32]uint32{}
		if err := decodeOps(b, ops); err != nil {
			return
		}
		if _, zero := ops[0]; zero {
			t.Fatal("op id 0 recorded")
		}
	})
}

func TestDecodeOps(t *testing.T) {
	ae := netlink.NewAttributeEncoder()
	ae.Uint16(unix.CTRL_ATTR_FAMILY_ID, 20)
	ae.Nested(unix.CTRL_ATTR_OPS, func(nae *netlink.AttributeEncoder) error {
		for i, op := range [][2]uint32{{13, unix.GENL_ADMIN_PERM}, {15, 0}} {
			nae.Nested(uint16(i+1), func(e *netlink.AttributeEncoder) error {
				e.Uint32(unix.CTRL_ATTR_OP_ID, op[0])
				e.Uint32(unix.CTRL_ATTR_OP_FLAGS, op[1])
				return nil
			})
		}
		return nil
	})
	b, _ := ae.Encode()
	ops := map[uint32]uint32{}
	if err := decodeOps(b, ops); err != nil {
		t.Fatal(err)
	}
	if len(ops) != 2 || ops[13] != unix.GENL_ADMIN_PERM || ops[15] != 0 {
		t.Fatalf("ops %v", ops)
	}
}
