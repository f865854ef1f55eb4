package nic

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
)

// The reply encoders below exist for the fuzz round trips: a decoded value
// re-encoded as the kernel would send it must decode to the same value.

func encodeRingsReply(rc RingConfig) []byte {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(ethtoolARingsRXMax, rc.RXMax)
	ae.Uint32(ethtoolARingsTXMax, rc.TXMax)
	ae.Uint32(ethtoolARingsRX, rc.RX)
	ae.Uint32(ethtoolARingsTX, rc.TX)
	ae.Uint32(ethtoolARingsRXBufLen, rc.RXBufLen)
	ae.Uint8(ethtoolARingsTCPDataSplit, uint8(rc.TCPDataSplit))
	if rc.HasHDSThresh {
		ae.Uint32(ethtoolARingsHDSThresh, rc.HDSThresh)
	}
	ae.Uint32(ethtoolARingsHDSThreshMax, rc.HDSThreshMax)
	b, err := ae.Encode()
	if err != nil {
		panic(err)
	}
	return b
}

func encodeChannelsReply(c Channels) []byte {
	ae := netlink.NewAttributeEncoder()
	for typ, v := range map[uint16]uint32{
		ethtoolAChannelsRXMax: c.RXMax, ethtoolAChannelsTXMax: c.TXMax,
		ethtoolAChannelsOtherMax: c.OtherMax, ethtoolAChannelsCombinedMax: c.CombinedMax,
		ethtoolAChannelsRXCount: c.RXCount, ethtoolAChannelsTXCount: c.TXCount,
		ethtoolAChannelsOtherCount: c.OtherCount, ethtoolAChannelsCombinedCount: c.CombinedCount,
	} {
		ae.Uint32(typ, v)
	}
	b, err := ae.Encode()
	if err != nil {
		panic(err)
	}
	return b
}

// encodeFeaturesReply encodes f in list form: HW = Changeable, no NOCHANGE.
func encodeFeaturesReply(f Features) []byte {
	list := func(ae *netlink.AttributeEncoder, typ uint16, names []string) {
		ae.Nested(typ, func(bs *netlink.AttributeEncoder) error {
			bs.Flag(ethtoolABitsetNomask, true)
			bs.Nested(ethtoolABitsetBits, func(bits *netlink.AttributeEncoder) error {
				for i, n := range names {
					bits.Nested(ethtoolABitsetBitsBit, func(b *netlink.AttributeEncoder) error {
						b.Uint32(ethtoolABitsetBitIndex, uint32(i))
						b.String(ethtoolABitsetBitName, n)
						return nil
					})
				}
				return nil
			})
			return nil
		})
	}
	ae := netlink.NewAttributeEncoder()
	list(ae, ethtoolAFeaturesHW, f.Changeable)
	list(ae, ethtoolAFeaturesActive, f.Active)
	b, err := ae.Encode()
	if err != nil {
		panic(err)
	}
	return b
}

func FuzzDecodeRings(f *testing.F) {
	f.Add(cat(replyHeader(2, "eth0"), nla(ethtoolARingsRX, u32(1024)), nla(ethtoolARingsTCPDataSplit, u8(2)),
		nla(ethtoolARingsHDSThresh, u32(0)), nla(ethtoolARingsHDSThreshMax, u32(1023))))
	f.Add(nla(ethtoolARingsRX, u8(1)))
	f.Add([]byte{0xff, 0xff, 0x06, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		rc, err := decodeRings(b)
		if err != nil {
			if rc != (RingConfig{}) {
				t.Fatalf("error %v with non-zero result %+v", err, rc)
			}
			return
		}
		_ = rc.TCPDataSplit.String()
		again, err := decodeRings(encodeRingsReply(rc))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if diff := cmp.Diff(rc, again); diff != "" {
			t.Fatalf("round trip changed the value (-first +second):\n%s", diff)
		}
	})
}

func FuzzDecodeChannels(f *testing.F) {
	f.Add(cat(replyHeader(2, "eth0"), nla(ethtoolAChannelsCombinedCount, u32(16)), nla(ethtoolAChannelsCombinedMax, u32(74))))
	f.Add(nla(ethtoolAChannelsRXCount, u8(1)))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeChannels(b)
		if err != nil {
			if c != (Channels{}) {
				t.Fatalf("error %v with non-zero result %+v", err, c)
			}
			return
		}
		again, err := decodeChannels(encodeChannelsReply(c))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if c != again {
			t.Fatalf("round trip: %+v became %+v", c, again)
		}
	})
}

func FuzzDecodeFeatures(f *testing.F) {
	f.Add(cat(replyHeader(2, "eth0"),
		nest(ethtoolAFeaturesHW, nla(ethtoolABitsetSize, u32(64)), nest(ethtoolABitsetBits, bit(36, FeatureNtuple, true), bit(2, "", true))),
		nest(ethtoolAFeaturesActive, nla(ethtoolABitsetNomask), nest(ethtoolABitsetBits, bit(36, FeatureNtuple, false))),
		nest(ethtoolAFeaturesNochange, nest(ethtoolABitsetBits, bit(14, "rx-gro", true)))))
	f.Add(nest(ethtoolAFeaturesActive, nla(ethtoolABitsetValue, u32(1))))
	f.Fuzz(func(t *testing.T, b []byte) {
		feat, err := decodeFeatures(b)
		if err != nil {
			if feat.Active != nil || feat.Changeable != nil {
				t.Fatalf("error %v with non-zero result %+v", err, feat)
			}
			return
		}
		_ = feat.Ntuple()
		again, err := decodeFeatures(encodeFeaturesReply(feat))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if diff := cmp.Diff(feat, again); diff != "" {
			t.Fatalf("round trip changed the value (-first +second):\n%s", diff)
		}
	})
}
