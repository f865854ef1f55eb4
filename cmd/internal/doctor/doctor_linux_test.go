//go:build linux

package doctor

import (
	"testing"

	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev/netdevtest"
)

// TestNetdevFamilyFake runs the netdev checks against fake kernels: one
// with bind-rx but without bind-tx (6.12 to 6.15), one without the family.
func TestNetdevFamilyFake(t *testing.T) {
	f := &netdevtest.Family{Ops: netdevtest.DefaultOps()}
	delete(f.Ops, 15) // bind-tx
	got := map[string]Check{}
	for _, c := range netdevFamily(func() (*netdev.Client, error) { return netdev.NewClient(f.Dial) }) {
		got[c.Name] = c
	}
	if c := got["family"]; !c.OK {
		t.Errorf("family check %+v", c)
	}
	if c := got["bind-rx"]; !c.OK {
		t.Errorf("bind-rx check %+v", c)
	}
	if c := got["bind-tx"]; c.OK || c.Fix != "run Linux 6.16 or newer" || c.Detail != "op 15 missing" {
		t.Errorf("bind-tx check %+v, want a failure with a fix", c)
	}

	absent := &netdevtest.Family{Absent: true}
	cs := netdevFamily(func() (*netdev.Client, error) { return netdev.NewClient(absent.Dial) })
	if len(cs) != 1 || cs[0].Name != "family" || cs[0].OK || cs[0].Fix == "" {
		t.Errorf("checks without the family: %+v", cs)
	}
}
