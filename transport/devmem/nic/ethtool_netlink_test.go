package nic

import (
	"encoding/binary"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
)

// Reply bytes for the decode tests are built with these helpers, written
// independently of the package's encoders: nla lays out one struct nlattr
// (host-order length and type, payload padded to 4 bytes).

func nla(typ uint16, payload ...[]byte) []byte {
	var p []byte
	for _, b := range payload {
		p = append(p, b...)
	}
	b := make([]byte, 4, 4+len(p)+3)
	binary.NativeEndian.PutUint16(b[0:2], uint16(4+len(p)))
	binary.NativeEndian.PutUint16(b[2:4], typ)
	b = append(b, p...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// cat concatenates byte slices.
func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func nest(typ uint16, payload ...[]byte) []byte { return nla(typ|0x8000, payload...) }

func u8(v uint8) []byte { return []byte{v} }

func u32(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}

func strz(s string) []byte { return append([]byte(s), 0) }

// replyHeader is the header nest the kernel puts first in every reply.
func replyHeader(ifindex uint32, name string) []byte {
	return nest(1, nla(ethtoolAHeaderDevIndex, u32(ifindex)), nla(ethtoolAHeaderDevName, strz(name)))
}

func TestDecodeRings(t *testing.T) {
	tests := []struct {
		name    string
		b       []byte
		want    RingConfig
		wantErr bool
	}{
		{
			name: "header split on, hds-thresh reported (bnxt-like)",
			b: cat(
				replyHeader(2, "eth0"),
				nla(ethtoolARingsRXMax, u32(8192)),
				nla(3, u32(0)), // RX_MINI_MAX: not used
				nla(ethtoolARingsTXMax, u32(2048)),
				nla(ethtoolARingsRX, u32(1024)),
				nla(ethtoolARingsTX, u32(512)),
				nla(ethtoolARingsRXBufLen, u32(4096)),
				nla(ethtoolARingsTCPDataSplit, u8(2)),
				nla(ethtoolARingsHDSThresh, u32(0)),
				nla(ethtoolARingsHDSThreshMax, u32(1023)),
				nla(99, u32(7)), // attribute from a newer kernel: skipped
			),
			want: RingConfig{RX: 1024, RXMax: 8192, TX: 512, TXMax: 2048, RXBufLen: 4096,
				TCPDataSplit: TCPDataSplitEnabled, HasHDSThresh: true, HDSThresh: 0, HDSThreshMax: 1023},
		},
		{
			name: "no header split support: attributes left out",
			b:    cat(replyHeader(3, "eth1"), nla(ethtoolARingsRXMax, u32(4096)), nla(ethtoolARingsRX, u32(256))),
			want: RingConfig{RX: 256, RXMax: 4096},
		},
		{
			name: "header split off, threshold 256",
			b:    cat(nla(ethtoolARingsTCPDataSplit, u8(1)), nla(ethtoolARingsHDSThresh, u32(256)), nla(ethtoolARingsHDSThreshMax, u32(1024))),
			want: RingConfig{TCPDataSplit: TCPDataSplitDisabled, HasHDSThresh: true, HDSThresh: 256, HDSThreshMax: 1024},
		},
		{name: "empty reply", b: nil, want: RingConfig{}},
		{name: "u32 attribute with one byte", b: nla(ethtoolARingsRX, u8(1)), wantErr: true},
		{name: "u8 attribute with four bytes", b: nla(ethtoolARingsTCPDataSplit, u32(2)), wantErr: true},
		{name: "truncated attribute", b: nla(ethtoolARingsRX, u32(1))[:6], wantErr: true},
		{name: "length beyond the buffer", b: []byte{0x40, 0x00, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeRings(tt.b)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("unexpected RingConfig (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeChannels(t *testing.T) {
	b := cat(
		replyHeader(2, "eth0"),
		nla(ethtoolAChannelsRXMax, u32(0)),
		nla(ethtoolAChannelsTXMax, u32(0)),
		nla(ethtoolAChannelsOtherMax, u32(1)),
		nla(ethtoolAChannelsCombinedMax, u32(74)),
		nla(ethtoolAChannelsOtherCount, u32(1)),
		nla(ethtoolAChannelsCombinedCount, u32(16)),
	)
	got, err := decodeChannels(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Channels{OtherCount: 1, CombinedCount: 16, OtherMax: 1, CombinedMax: 74}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("unexpected Channels (-want +got):\n%s", diff)
	}
	if got.RXQueues() != 16 {
		t.Fatalf("RXQueues = %d, want 16", got.RXQueues())
	}
	if _, err := decodeChannels(nla(ethtoolAChannelsRXCount, u8(1))); err == nil {
		t.Fatal("decodeChannels accepted a 1-byte u32")
	}
}

// bit is one ETHTOOL_A_BITSET_BITS_BIT entry.
func bit(index uint32, name string, value bool) []byte {
	attrs := cat(nla(ethtoolABitsetBitIndex, u32(index)), nla(ethtoolABitsetBitName, strz(name)))
	if value {
		attrs = cat(attrs, nla(ethtoolABitsetBitValue))
	}
	return nest(ethtoolABitsetBitsBit, attrs)
}

func TestDecodeFeatures(t *testing.T) {
	// As FEATURES_GET sends it (seen on 6.18): every bit of the 64-bit
	// set listed with its name, VALUE on the bits that are set, unused
	// bits with an empty name; NOCHANGE as well. Trimmed to a few bits.
	b := cat(
		replyHeader(2, "eth0"),
		nest(ethtoolAFeaturesHW, nla(ethtoolABitsetSize, u32(64)), nest(ethtoolABitsetBits,
			bit(0, "tx-scatter-gather", true),
			bit(2, "", true),
			bit(14, "rx-gro", true),
			bit(36, FeatureNtuple, true),
			bit(40, "loopback", false),
		)),
		nest(ethtoolAFeaturesWanted, nla(ethtoolABitsetSize, u32(64)), nest(ethtoolABitsetBits,
			bit(0, "tx-scatter-gather", true),
			bit(36, FeatureNtuple, false),
		)),
		nest(ethtoolAFeaturesActive, nla(ethtoolABitsetSize, u32(64)), nest(ethtoolABitsetBits,
			bit(0, "tx-scatter-gather", true),
			bit(14, "rx-gro", true),
			bit(36, FeatureNtuple, false),
			bit(40, "loopback", false),
		)),
		nest(ethtoolAFeaturesNochange, nla(ethtoolABitsetSize, u32(64)), nest(ethtoolABitsetBits,
			bit(14, "rx-gro", true),
		)),
	)
	got, err := decodeFeatures(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Features{
		Active:     []string{"tx-scatter-gather", "rx-gro"},
		Changeable: []string{"tx-scatter-gather", FeatureNtuple},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("unexpected Features (-want +got):\n%s", diff)
	}
	if got.Ntuple() || !got.IsChangeable(FeatureNtuple) || got.IsChangeable("rx-gro") {
		t.Fatalf("ntuple=%v changeable=%v rx-gro changeable=%v", got.Ntuple(), got.IsChangeable(FeatureNtuple), got.IsChangeable("rx-gro"))
	}
}

func TestDecodeBitsetForms(t *testing.T) {
	decode := func(b []byte) ([]string, error) {
		ad, err := netlink.NewAttributeDecoder(b)
		if err != nil {
			return nil, err
		}
		return decodeBitset(ad)
	}
	// List form (NOMASK): every listed bit is set, VALUE or not.
	got, err := decode(cat(nla(ethtoolABitsetNomask), nla(ethtoolABitsetSize, u32(64)),
		nest(ethtoolABitsetBits, bit(36, FeatureNtuple, false), bit(40, "loopback", true))))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{FeatureNtuple, "loopback"}, got); diff != "" {
		t.Fatalf("list form (-want +got):\n%s", diff)
	}
	// Compact form carries no names: refused.
	if _, err := decode(cat(nla(ethtoolABitsetSize, u32(64)), nla(ethtoolABitsetValue, u32(1), u32(0)), nla(ethtoolABitsetMask, u32(1), u32(0)))); err == nil {
		t.Fatal("compact bitset accepted")
	}
	// A flag with a payload is malformed.
	if _, err := decode(nest(ethtoolABitsetBits, nest(ethtoolABitsetBitsBit, nla(ethtoolABitsetBitName, strz("x")), nla(ethtoolABitsetBitValue, u8(1))))); err == nil {
		t.Fatal("VALUE flag with payload accepted")
	}
}

func TestTCPDataSplitString(t *testing.T) {
	for v, want := range map[TCPDataSplit]string{0: "auto", 1: "off", 2: "on", 7: "tcp-data-split(7)"} {
		if got := v.String(); got != want {
			t.Errorf("TCPDataSplit(%d).String() = %q, want %q", v, got, want)
		}
	}
}
