package nic

import (
	"encoding/binary"
	"runtime"
	"unsafe"
)

// SIOCETHTOOL ABI (include/uapi/linux/sockios.h, include/uapi/linux/ethtool.h).
// A Linux test pins these to golang.org/x/sys/unix where it has them;
// RX_CLS_LOC_* are not in x/sys.
const (
	siocEthtool = 0x8946

	ethtoolGRXCLSRLCNT = 0x2e // rule count; data: table size | RX_CLS_LOC_SPECIAL
	ethtoolGRXCLSRLALL = 0x30 // rule locations
	ethtoolSRXCLSRLDEL = 0x31 // delete the rule at fs.location
	ethtoolSRXCLSRLINS = 0x32 // insert fs; fs.location may be special
	ethtoolGRXFHINDIR  = 0x38 // read the RSS indirection table
	ethtoolSRXFHINDIR  = 0x39 // write it (size 0: reset to default)

	tcpV4Flow = 0x01 // TCP_V4_FLOW
	tcpV6Flow = 0x05 // TCP_V6_FLOW

	rxClsLocSpecial = 0x80000000 // RX_CLS_LOC_SPECIAL: flag in GRXCLSRLCNT data
	rxClsLocAny     = 0xffffffff // RX_CLS_LOC_ANY: driver picks a location
)

// ethtoolTCPIP4Spec is struct ethtool_tcpip4_spec: addresses and ports in
// network byte order. The C struct is 4-byte aligned, hence the 3 bytes of
// tail padding (sizeof 16).
type ethtoolTCPIP4Spec struct {
	IP4Src [4]byte // __be32 ip4src
	IP4Dst [4]byte // __be32 ip4dst
	PSrc   [2]byte // __be16 psrc
	PDst   [2]byte // __be16 pdst
	TOS    uint8
	_      [3]byte
}

// ethtoolTCPIP6Spec is struct ethtool_tcpip6_spec (sizeof 40).
type ethtoolTCPIP6Spec struct {
	IP6Src [16]byte // __be32 ip6src[4]
	IP6Dst [16]byte // __be32 ip6dst[4]
	PSrc   [2]byte  // __be16 psrc
	PDst   [2]byte  // __be16 pdst
	TClass uint8
	_      [3]byte
}

// ethtoolFlowExt is struct ethtool_flow_ext (sizeof 20), unused by TCP rules
// (no FLOW_EXT) and kept zero.
type ethtoolFlowExt struct {
	Padding   [2]byte
	HDest     [6]byte
	VlanEtype [2]byte
	VlanTCI   [2]byte
	Data      [8]byte
}

// ethtoolRxFlowSpec is struct ethtool_rx_flow_spec. HU and MU are union
// ethtool_flow_union (hdata[52]): the match values and the mask (a set mask
// bit means "match this bit").
type ethtoolRxFlowSpec struct {
	FlowType   uint32
	HU         [52]byte
	HExt       ethtoolFlowExt
	MU         [52]byte
	MExt       ethtoolFlowExt
	RingCookie uint64 // RX queue, or RX_CLS_FLOW_DISC
	Location   uint32
}

// ethtoolRxnfc is struct ethtool_rxnfc without its trailing flexible array
// rule_locs[], which starts right after RuleCnt (at rxnfcRuleLocsOffset, 188
// on 64-bit, inside the struct's tail padding).
type ethtoolRxnfc struct {
	Cmd      uint32
	FlowType uint32
	Data     uint64
	FS       ethtoolRxFlowSpec
	RuleCnt  uint32 // union with rss_context
}

// ethtoolRxfhIndir is the fixed part of struct ethtool_rxfh_indir; the
// ring_index[size] array follows it.
type ethtoolRxfhIndir struct {
	Cmd  uint32
	Size uint32
}

// rxnfcRuleLocsOffset is offsetof(struct ethtool_rxnfc, rule_locs).
const rxnfcRuleLocsOffset = unsafe.Offsetof(ethtoolRxnfc{}.RuleCnt) + 4

// rxnfcLayoutOK reports whether the Go layout of ethtoolRxnfc is the
// kernel's for this architecture: 192 bytes on 64-bit platforms, 180 on 386
// (where the C ABI, like Go, aligns __u64 to 4 bytes). Other 32-bit
// platforms (arm, mips) align __u64 to 8 in C but not in Go, so the flow
// steering ioctls refuse to run there.
func rxnfcLayoutOK() error {
	size := unsafe.Sizeof(ethtoolRxnfc{})
	switch {
	case unsafe.Sizeof(uintptr(0)) == 8 && size == 192:
		return nil
	case runtime.GOARCH == "386" && size == 180:
		return nil
	}
	return notSupportedf("nic: struct ethtool_rxnfc layout not verified for GOARCH=%s (Go size %d)", runtime.GOARCH, size)
}

// ruleInsert builds the ETHTOOL_SRXCLSRLINS request for r at loc. Fields of
// r that are zero are not matched (zero mask): a rule without source fields
// is the 3-tuple (dst-ip, dst-port).
func ruleInsert(r FlowRule, loc uint32) (ethtoolRxnfc, error) {
	if err := r.validate(); err != nil {
		return ethtoolRxnfc{}, err
	}
	nfc := ethtoolRxnfc{Cmd: ethtoolSRXCLSRLINS}
	fs := &nfc.FS
	fs.RingCookie = uint64(r.Queue)
	fs.Location = loc
	src := r.SrcIP
	if src != nil && src.IsUnspecified() {
		src = nil
	}
	if dst4 := r.DstIP.To4(); dst4 != nil {
		fs.FlowType = tcpV4Flow
		var h, m ethtoolTCPIP4Spec
		copy(h.IP4Dst[:], dst4)
		m.IP4Dst = [4]byte{0xff, 0xff, 0xff, 0xff}
		binary.BigEndian.PutUint16(h.PDst[:], r.DstPort)
		m.PDst = [2]byte{0xff, 0xff}
		if src != nil {
			copy(h.IP4Src[:], src.To4())
			m.IP4Src = [4]byte{0xff, 0xff, 0xff, 0xff}
		}
		if r.SrcPort != 0 {
			binary.BigEndian.PutUint16(h.PSrc[:], r.SrcPort)
			m.PSrc = [2]byte{0xff, 0xff}
		}
		*(*ethtoolTCPIP4Spec)(unsafe.Pointer(&fs.HU)) = h
		*(*ethtoolTCPIP4Spec)(unsafe.Pointer(&fs.MU)) = m
		return nfc, nil
	}
	fs.FlowType = tcpV6Flow
	var h, m ethtoolTCPIP6Spec
	copy(h.IP6Dst[:], r.DstIP.To16())
	m.IP6Dst = allOnes16
	binary.BigEndian.PutUint16(h.PDst[:], r.DstPort)
	m.PDst = [2]byte{0xff, 0xff}
	if src != nil {
		copy(h.IP6Src[:], src.To16())
		m.IP6Src = allOnes16
	}
	if r.SrcPort != 0 {
		binary.BigEndian.PutUint16(h.PSrc[:], r.SrcPort)
		m.PSrc = [2]byte{0xff, 0xff}
	}
	*(*ethtoolTCPIP6Spec)(unsafe.Pointer(&fs.HU)) = h
	*(*ethtoolTCPIP6Spec)(unsafe.Pointer(&fs.MU)) = m
	return nfc, nil
}

var allOnes16 = [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// pickLocation chooses where to insert a rule on a driver without special
// locations, as the ethtool command does for RX_CLS_LOC_ANY: the last free
// slot of the table (the lowest priority). ok is false when the table is
// full.
func pickLocation(tableSize uint32, used []uint32) (loc uint32, ok bool) {
	taken := make(map[uint32]bool, len(used))
	for _, u := range used {
		taken[u] = true
	}
	for l := tableSize; l > 0; l-- {
		if !taken[l-1] {
			return l - 1, true
		}
	}
	return 0, false
}
