package doctor

import (
	"context"
	"os"
	"strings"
	"testing"
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
		if !c.OK && c.Fix == "" && c.Scope != "provider" {
			t.Errorf("failing check %s/%s has no fix: %s", c.Scope, c.Name, c.Detail)
		}
		switch c.Kind {
		case KindInfo:
			got["info/"+c.Scope+"/"+c.Name] = c
		case "":
			got[c.Scope+"/"+c.Name] = c
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
	// The header comes first, then one verdict per checked interface and
	// role.
	if cs[0].Kind != KindInfo || cs[0].Scope != "kernel" || !strings.HasPrefix(cs[0].Detail, "kernel 6.") {
		t.Errorf("first entry %+v, want the kernel release", cs[0])
	}
	for _, c := range cs {
		if c.Kind != KindVerdict {
			continue
		}
		label := map[string]string{"devmem-rx": "RX", "devmem-tx": "TX"}[c.Name]
		if !strings.HasPrefix(c.Detail, "devmem "+label+" on "+c.Scope+": ") {
			t.Errorf("verdict %+v", c)
		}
		if _, ok := got["info/"+c.Scope+"/nic"]; !ok && c.Scope != "lo" {
			t.Errorf("verdict for %s without its NIC line", c.Scope)
		}
	}
}
