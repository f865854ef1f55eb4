package doctor

import (
	"context"
	"os"
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
