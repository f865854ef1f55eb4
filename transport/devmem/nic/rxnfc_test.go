package nic

import (
	"net"
	"runtime"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
)

// TestStructLayout pins the ioctl structures to the uapi layout
// (include/uapi/linux/ethtool.h): sizes and the offsets the kernel reads.
func TestStructLayout(t *testing.T) {
	type layout struct {
		tcp4, tcp6, ext, spec, nfc, indir       uintptr
		fs, cookie, location, ruleCnt, ruleLocs uintptr
	}
	got := layout{
		tcp4: unsafe.Sizeof(ethtoolTCPIP4Spec{}), tcp6: unsafe.Sizeof(ethtoolTCPIP6Spec{}),
		ext: unsafe.Sizeof(ethtoolFlowExt{}), spec: unsafe.Sizeof(ethtoolRxFlowSpec{}),
		nfc: unsafe.Sizeof(ethtoolRxnfc{}), indir: unsafe.Sizeof(ethtoolRxfhIndir{}),
		fs: unsafe.Offsetof(ethtoolRxnfc{}.FS), cookie: unsafe.Offsetof(ethtoolRxFlowSpec{}.RingCookie),
		location: unsafe.Offsetof(ethtoolRxFlowSpec{}.Location), ruleCnt: unsafe.Offsetof(ethtoolRxnfc{}.RuleCnt),
		ruleLocs: rxnfcRuleLocsOffset,
	}
	var want layout
	switch {
	case unsafe.Sizeof(uintptr(0)) == 8:
		// LP64: __u64 ring_cookie aligned to 8.
		want = layout{16, 40, 20, 168, 192, 8, 16, 152, 160, 184, 188}
	case runtime.GOARCH == "386":
		// i386 (and the kernel's compat_ethtool_rxnfc): __u64 aligned to 4.
		want = layout{16, 40, 20, 160, 180, 8, 16, 148, 156, 176, 180}
	default:
		if rxnfcLayoutOK() == nil {
			t.Fatalf("rxnfcLayoutOK accepts GOARCH=%s", runtime.GOARCH)
		}
		return
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(layout{})); diff != "" {
		t.Fatalf("struct layout differs from the uapi (-want +got):\n%s", diff)
	}
	if err := rxnfcLayoutOK(); err != nil {
		t.Fatal(err)
	}
	// The unions are hdata[52]; both TCP specs fit.
	if got.tcp6 > 52 || got.tcp4 > 52 {
		t.Fatal("TCP spec larger than union ethtool_flow_union")
	}
}

func TestRuleInsertFields(t *testing.T) {
	nfc, err := ruleInsert(FlowRule{SrcIP: net.IPv4(10, 0, 0, 1), DstIP: net.IPv4(10, 0, 0, 2), SrcPort: 1, DstPort: 2, Queue: 9}, 17)
	if err != nil {
		t.Fatal(err)
	}
	if nfc.Cmd != ethtoolSRXCLSRLINS || nfc.FS.FlowType != tcpV4Flow || nfc.FS.RingCookie != 9 || nfc.FS.Location != 17 {
		t.Fatalf("unexpected request %+v", nfc)
	}
	for _, bad := range []FlowRule{
		{DstPort: 1},                   // no destination
		{DstIP: net.IPv4(10, 0, 0, 2)}, // no port
		{DstIP: net.IPv6unspecified, DstPort: 1},
		{SrcIP: net.ParseIP("2001:db8::1"), DstIP: net.IPv4(10, 0, 0, 2), DstPort: 1}, // mixed families
		{DstIP: net.IP{1, 2, 3}, DstPort: 1},
	} {
		if _, err := ruleInsert(bad, rxClsLocAny); err == nil {
			t.Errorf("ruleInsert(%+v) succeeded", bad)
		}
	}
}

func TestPickLocation(t *testing.T) {
	tests := []struct {
		size   uint32
		used   []uint32
		want   uint32
		wantOK bool
	}{
		{size: 128, want: 127, wantOK: true},
		{size: 128, used: []uint32{127, 126, 3}, want: 125, wantOK: true},
		{size: 2, used: []uint32{0, 1}},
		{size: 0},
		{size: 4, used: []uint32{3, 9}, want: 2, wantOK: true},
	}
	for _, tt := range tests {
		got, ok := pickLocation(tt.size, tt.used)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("pickLocation(%d, %v) = %d, %v; want %d, %v", tt.size, tt.used, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestEqualTable(t *testing.T) {
	if diff := cmp.Diff([]uint32{0, 1, 2, 0, 1, 2, 0, 1}, equalTable(8, 3)); diff != "" {
		t.Fatalf("equalTable (-want +got):\n%s", diff)
	}
	for _, tt := range []struct {
		t    []uint32
		want uint32
	}{
		{equalTable(128, 8), 8},
		{equalTable(4, 1), 1},
		{[]uint32{0, 2, 1, 3}, 0},
		{[]uint32{1, 1}, 0},
		{nil, 0},
	} {
		if got := equalOver(tt.t); got != tt.want {
			t.Errorf("equalOver(%v) = %d, want %d", tt.t, got, tt.want)
		}
	}
}
