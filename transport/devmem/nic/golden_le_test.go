//go:build 386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm

package nic

import (
	"net"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
)

// Golden request bytes, written out by hand from the netlink attribute
// layout (struct nlattr: __u16 nla_len, __u16 nla_type, payload padded to 4
// bytes; nested attributes carry NLA_F_NESTED, 0x8000, in nla_type) and
// include/uapi/linux/ethtool_netlink_generated.h. Little-endian hosts only:
// netlink integers are in host byte order.

// hdrEth0 is the request header nest for "eth0" without flags:
// nla_len 16, type ETHTOOL_A_*_HEADER (1) | NLA_F_NESTED, containing
// ETHTOOL_A_HEADER_DEV_NAME (2) = "eth0\0" (len 4+5 = 9, 3 bytes padding).
var hdrEth0 = []byte{
	0x10, 0x00, 0x01, 0x80,
	0x09, 0x00, 0x02, 0x00, 'e', 't', 'h', '0', 0x00, 0x00, 0x00, 0x00,
}

func TestGoldenRequests(t *testing.T) {
	zero, thresh := uint32(0), uint32(0x100)
	tests := []struct {
		name string
		enc  func() ([]byte, error)
		want []byte
	}{
		{
			name: "rings-get",
			enc:  func() ([]byte, error) { return encodeRingsGet("eth0") },
			want: hdrEth0,
		},
		{
			name: "rings-set devmem: tcp-data-split on, hds-thresh 0",
			enc:  func() ([]byte, error) { return encodeRingsSet("eth0", TCPDataSplitEnabled, &zero) },
			want: cat(hdrEth0,
				// ETHTOOL_A_RINGS_TCP_DATA_SPLIT (11), u8 2, 3 bytes pad.
				[]byte{0x05, 0x00, 0x0b, 0x00, 0x02, 0x00, 0x00, 0x00},
				// ETHTOOL_A_RINGS_HDS_THRESH (17), u32 0.
				[]byte{0x08, 0x00, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00}),
		},
		{
			name: "rings-set restore: tcp-data-split auto, hds-thresh 256",
			enc:  func() ([]byte, error) { return encodeRingsSet("eth0", TCPDataSplitUnknown, &thresh) },
			want: cat(hdrEth0,
				[]byte{0x05, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00},
				[]byte{0x08, 0x00, 0x11, 0x00, 0x00, 0x01, 0x00, 0x00}),
		},
		{
			name: "rings-set off without hds-thresh",
			enc:  func() ([]byte, error) { return encodeRingsSet("eth0", TCPDataSplitDisabled, nil) },
			want: cat(hdrEth0, []byte{0x05, 0x00, 0x0b, 0x00, 0x01, 0x00, 0x00, 0x00}),
		},
		{
			name: "channels-get",
			enc:  func() ([]byte, error) { return encodeChannelsGet("eth0") },
			want: hdrEth0,
		},
		{
			name: "features-get (verbose: no flags)",
			enc:  func() ([]byte, error) { return encodeFeaturesGet("eth0") },
			want: hdrEth0,
		},
		{
			name: "features-set ntuple on",
			enc:  func() ([]byte, error) { return encodeFeaturesSet("eth0", FeatureNtuple, true) },
			want: []byte{
				// Header nest, len 24: DEV_NAME, then
				// ETHTOOL_A_HEADER_FLAGS (3) = ETHTOOL_FLAG_OMIT_REPLY (2).
				0x18, 0x00, 0x01, 0x80,
				0x09, 0x00, 0x02, 0x00, 'e', 't', 'h', '0', 0x00, 0x00, 0x00, 0x00,
				0x08, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00,
				// ETHTOOL_A_FEATURES_WANTED (3) nest, len 40.
				0x28, 0x00, 0x03, 0x80,
				// ETHTOOL_A_BITSET_BITS (3) nest, len 36.
				0x24, 0x00, 0x03, 0x80,
				// ETHTOOL_A_BITSET_BITS_BIT (1) nest, len 32.
				0x20, 0x00, 0x01, 0x80,
				// ETHTOOL_A_BITSET_BIT_NAME (2), "rx-ntuple-filter\0",
				// len 4+17 = 21, 3 bytes pad.
				0x15, 0x00, 0x02, 0x00,
				'r', 'x', '-', 'n', 't', 'u', 'p', 'l', 'e', '-', 'f', 'i', 'l', 't', 'e', 'r', 0x00,
				0x00, 0x00, 0x00,
				// ETHTOOL_A_BITSET_BIT_VALUE (3), flag.
				0x04, 0x00, 0x03, 0x00,
			},
		},
		{
			name: "features-set ntuple off (no VALUE flag)",
			enc:  func() ([]byte, error) { return encodeFeaturesSet("eth0", FeatureNtuple, false) },
			want: []byte{
				0x18, 0x00, 0x01, 0x80,
				0x09, 0x00, 0x02, 0x00, 'e', 't', 'h', '0', 0x00, 0x00, 0x00, 0x00,
				0x08, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00,
				0x24, 0x00, 0x03, 0x80,
				0x20, 0x00, 0x03, 0x80,
				0x1c, 0x00, 0x01, 0x80,
				0x15, 0x00, 0x02, 0x00,
				'r', 'x', '-', 'n', 't', 'u', 'p', 'l', 'e', '-', 'f', 'i', 'l', 't', 'e', 'r', 0x00,
				0x00, 0x00, 0x00,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.enc()
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("unexpected request bytes (-want +got):\n%s", diff)
			}
		})
	}
}

// rxnfcBytes returns the memory of an ethtoolRxnfc as the kernel reads it.
func rxnfcBytes(nfc *ethtoolRxnfc) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(nfc)), unsafe.Sizeof(*nfc))
}

// TestGoldenRuleInsert checks the ETHTOOL_SRXCLSRLINS request byte for
// byte against the 64-bit struct ethtool_rxnfc layout: cmd @0, flow_type @4,
// data @8, fs @16 { flow_type @16, h_u @20 (52), h_ext @72 (20), m_u @92
// (52), m_ext @144 (20), pad, ring_cookie @168, location @176, pad },
// rule_cnt @184; sizeof 192.
func TestGoldenRuleInsert(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("golden layout is the 64-bit one; TestStructLayout covers 386")
	}
	base := func(flowType byte, queue byte) []byte {
		b := make([]byte, 192)
		b[0] = 0x32                                      // ETHTOOL_SRXCLSRLINS
		b[16] = flowType                                 // fs.flow_type
		b[168] = queue                                   // fs.ring_cookie (LE u64)
		copy(b[176:180], []byte{0xff, 0xff, 0xff, 0xff}) // fs.location = RX_CLS_LOC_ANY
		return b
	}
	tests := []struct {
		name string
		rule FlowRule
		want func() []byte
	}{
		{
			name: "tcp4 5-tuple",
			rule: FlowRule{SrcIP: net.IPv4(10, 0, 0, 1), DstIP: net.IPv4(10, 0, 0, 2), SrcPort: 1000, DstPort: 5201, Queue: 3},
			want: func() []byte {
				b := base(0x01, 3)
				// h_u.tcp_ip4_spec: ip4src, ip4dst, psrc, pdst (network order).
				copy(b[20:], []byte{10, 0, 0, 1, 10, 0, 0, 2, 0x03, 0xe8, 0x14, 0x51})
				// m_u: every matched field all ones.
				copy(b[92:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
				return b
			},
		},
		{
			name: "tcp4 3-tuple",
			rule: FlowRule{DstIP: net.IPv4(192, 168, 1, 2), DstPort: 5201, Queue: 8},
			want: func() []byte {
				b := base(0x01, 8)
				copy(b[24:], []byte{192, 168, 1, 2, 0x00, 0x00, 0x14, 0x51})
				copy(b[96:], []byte{0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0xff, 0xff})
				return b
			},
		},
		{
			name: "v4-mapped IPv6 is tcp4",
			rule: FlowRule{DstIP: net.ParseIP("::ffff:192.168.1.2"), DstPort: 5201, Queue: 8},
			want: func() []byte {
				b := base(0x01, 8)
				copy(b[24:], []byte{192, 168, 1, 2, 0x00, 0x00, 0x14, 0x51})
				copy(b[96:], []byte{0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0xff, 0xff})
				return b
			},
		},
		{
			name: "tcp6 5-tuple",
			rule: FlowRule{SrcIP: net.ParseIP("2001:db8::1"), DstIP: net.ParseIP("2001:db8::2"), SrcPort: 1000, DstPort: 5201, Queue: 5},
			want: func() []byte {
				b := base(0x05, 5)
				// h_u.tcp_ip6_spec: ip6src @20, ip6dst @36, psrc @52, pdst @54.
				copy(b[20:], net.ParseIP("2001:db8::1").To16())
				copy(b[36:], net.ParseIP("2001:db8::2").To16())
				copy(b[52:], []byte{0x03, 0xe8, 0x14, 0x51})
				for i := 92; i < 92+36; i++ {
					b[i] = 0xff
				}
				return b
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nfc, err := ruleInsert(tt.rule, rxClsLocAny)
			if err != nil {
				t.Fatalf("ruleInsert: %v", err)
			}
			if diff := cmp.Diff(tt.want(), rxnfcBytes(&nfc)); diff != "" {
				t.Fatalf("unexpected ethtool_rxnfc bytes (-want +got):\n%s", diff)
			}
		})
	}
}
