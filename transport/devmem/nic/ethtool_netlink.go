package nic

import (
	"errors"
	"fmt"
	"slices"

	"github.com/mdlayher/netlink"
)

// ethtool generic netlink ABI (include/uapi/linux/ethtool_netlink.h and
// ethtool_netlink_generated.h). Defined here, not taken from x/sys/unix, so
// that the encoders and decoders are portable and fuzzable on any OS; a Linux
// test pins every value to golang.org/x/sys/unix.
const (
	ethtoolGenlName    = "ethtool"
	ethtoolGenlVersion = 1

	// Commands, user to kernel.
	ethtoolMsgFeaturesGet = 11
	ethtoolMsgFeaturesSet = 12
	ethtoolMsgRingsGet    = 15
	ethtoolMsgRingsSet    = 16
	ethtoolMsgChannelsGet = 17

	// Request header (nested in attribute 1 of every message).
	ethtoolAHeaderDevIndex = 1
	ethtoolAHeaderDevName  = 2
	ethtoolAHeaderFlags    = 3

	// ETHTOOL_FLAG_OMIT_REPLY: do not send a reply message to a set
	// request, only the acknowledgement.
	ethtoolFlagOmitReply = 2

	// ETHTOOL_A_RINGS_*.
	ethtoolARingsHeader       = 1
	ethtoolARingsRXMax        = 2
	ethtoolARingsTXMax        = 5
	ethtoolARingsRX           = 6
	ethtoolARingsTX           = 9
	ethtoolARingsRXBufLen     = 10
	ethtoolARingsTCPDataSplit = 11
	ethtoolARingsHDSThresh    = 17
	ethtoolARingsHDSThreshMax = 18

	// ETHTOOL_A_FEATURES_*.
	ethtoolAFeaturesHeader   = 1
	ethtoolAFeaturesHW       = 2
	ethtoolAFeaturesWanted   = 3
	ethtoolAFeaturesActive   = 4
	ethtoolAFeaturesNochange = 5

	// ETHTOOL_A_BITSET_* (a bitset attribute's nest).
	ethtoolABitsetNomask = 1
	ethtoolABitsetSize   = 2
	ethtoolABitsetBits   = 3
	ethtoolABitsetValue  = 4
	ethtoolABitsetMask   = 5

	// ETHTOOL_A_BITSET_BITS_BIT: one bit of a verbose bitset.
	ethtoolABitsetBitsBit = 1

	// ETHTOOL_A_BITSET_BIT_*.
	ethtoolABitsetBitIndex = 1
	ethtoolABitsetBitName  = 2
	ethtoolABitsetBitValue = 3

	// ETHTOOL_A_CHANNELS_*.
	ethtoolAChannelsHeader        = 1
	ethtoolAChannelsRXMax         = 2
	ethtoolAChannelsTXMax         = 3
	ethtoolAChannelsOtherMax      = 4
	ethtoolAChannelsCombinedMax   = 5
	ethtoolAChannelsRXCount       = 6
	ethtoolAChannelsTXCount       = 7
	ethtoolAChannelsOtherCount    = 8
	ethtoolAChannelsCombinedCount = 9
)

// encodeHeader adds the request header naming the device and, when flags is
// not zero, ETHTOOL_A_HEADER_FLAGS. Get requests send no flags, so bitsets
// come back verbose (with names).
func encodeHeader(ae *netlink.AttributeEncoder, typ uint16, ifname string, flags uint32) {
	ae.Nested(typ, func(nae *netlink.AttributeEncoder) error {
		nae.String(ethtoolAHeaderDevName, ifname)
		if flags != 0 {
			nae.Uint32(ethtoolAHeaderFlags, flags)
		}
		return nil
	})
}

// encodeRingsGet builds the attributes of ETHTOOL_MSG_RINGS_GET.
func encodeRingsGet(ifname string) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	encodeHeader(ae, ethtoolARingsHeader, ifname, 0)
	return ae.Encode()
}

// encodeRingsSet builds the attributes of ETHTOOL_MSG_RINGS_SET: the header,
// tcp-data-split (u8) and, when hds is not nil, hds-thresh (u32).
func encodeRingsSet(ifname string, tds TCPDataSplit, hds *uint32) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	encodeHeader(ae, ethtoolARingsHeader, ifname, 0)
	ae.Uint8(ethtoolARingsTCPDataSplit, uint8(tds))
	if hds != nil {
		ae.Uint32(ethtoolARingsHDSThresh, *hds)
	}
	return ae.Encode()
}

// decodeRings decodes the attributes of ETHTOOL_MSG_RINGS_GET_REPLY.
// Attributes the package does not use are skipped. On error the result is
// the zero RingConfig.
func decodeRings(b []byte) (RingConfig, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return RingConfig{}, fmt.Errorf("nic: malformed rings reply: %w", err)
	}
	var rc RingConfig
	for ad.Next() {
		switch ad.Type() {
		case ethtoolARingsRXMax:
			rc.RXMax = ad.Uint32()
		case ethtoolARingsTXMax:
			rc.TXMax = ad.Uint32()
		case ethtoolARingsRX:
			rc.RX = ad.Uint32()
		case ethtoolARingsTX:
			rc.TX = ad.Uint32()
		case ethtoolARingsRXBufLen:
			rc.RXBufLen = ad.Uint32()
		case ethtoolARingsTCPDataSplit:
			rc.TCPDataSplit = TCPDataSplit(ad.Uint8())
		case ethtoolARingsHDSThresh:
			rc.HDSThresh = ad.Uint32()
			rc.HasHDSThresh = true
		case ethtoolARingsHDSThreshMax:
			rc.HDSThreshMax = ad.Uint32()
		}
	}
	if err := ad.Err(); err != nil {
		return RingConfig{}, fmt.Errorf("nic: malformed rings reply: %w", err)
	}
	return rc, nil
}

// encodeChannelsGet builds the attributes of ETHTOOL_MSG_CHANNELS_GET.
func encodeChannelsGet(ifname string) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	encodeHeader(ae, ethtoolAChannelsHeader, ifname, 0)
	return ae.Encode()
}

// decodeChannels decodes the attributes of ETHTOOL_MSG_CHANNELS_GET_REPLY.
func decodeChannels(b []byte) (Channels, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return Channels{}, fmt.Errorf("nic: malformed channels reply: %w", err)
	}
	var c Channels
	for ad.Next() {
		switch ad.Type() {
		case ethtoolAChannelsRXMax:
			c.RXMax = ad.Uint32()
		case ethtoolAChannelsTXMax:
			c.TXMax = ad.Uint32()
		case ethtoolAChannelsOtherMax:
			c.OtherMax = ad.Uint32()
		case ethtoolAChannelsCombinedMax:
			c.CombinedMax = ad.Uint32()
		case ethtoolAChannelsRXCount:
			c.RXCount = ad.Uint32()
		case ethtoolAChannelsTXCount:
			c.TXCount = ad.Uint32()
		case ethtoolAChannelsOtherCount:
			c.OtherCount = ad.Uint32()
		case ethtoolAChannelsCombinedCount:
			c.CombinedCount = ad.Uint32()
		}
	}
	if err := ad.Err(); err != nil {
		return Channels{}, fmt.Errorf("nic: malformed channels reply: %w", err)
	}
	return c, nil
}

// encodeFeaturesGet builds the attributes of ETHTOOL_MSG_FEATURES_GET.
// Without ETHTOOL_FLAG_COMPACT_BITSETS the kernel answers with verbose
// bitsets that carry each bit's name, so no string-set lookup is needed.
func encodeFeaturesGet(ifname string) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	encodeHeader(ae, ethtoolAFeaturesHeader, ifname, 0)
	return ae.Encode()
}

// encodeFeaturesSet builds the attributes of ETHTOOL_MSG_FEATURES_SET that
// change one feature: a verbose WANTED bitset without NOMASK listing only
// that bit by name, with the VALUE flag when it is to be on. Bits not listed
// are left alone (this is how "ethtool -K <if> ntuple on" is sent). The
// header asks for ETHTOOL_FLAG_OMIT_REPLY: otherwise the kernel sends a
// FEATURES_SET_REPLY before the acknowledgement, and the caller reads the
// result back with FEATURES_GET anyway.
func encodeFeaturesSet(ifname, name string, on bool) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	encodeHeader(ae, ethtoolAFeaturesHeader, ifname, ethtoolFlagOmitReply)
	ae.Nested(ethtoolAFeaturesWanted, func(bs *netlink.AttributeEncoder) error {
		bs.Nested(ethtoolABitsetBits, func(bits *netlink.AttributeEncoder) error {
			bits.Nested(ethtoolABitsetBitsBit, func(bit *netlink.AttributeEncoder) error {
				bit.String(ethtoolABitsetBitName, name)
				bit.Flag(ethtoolABitsetBitValue, on)
				return nil
			})
			return nil
		})
		return nil
	})
	return ae.Encode()
}

// decodeFeatures decodes the attributes of ETHTOOL_MSG_FEATURES_GET_REPLY
// sent with verbose bitsets.
func decodeFeatures(b []byte) (Features, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return Features{}, fmt.Errorf("nic: malformed features reply: %w", err)
	}
	var hw, active, nochange []string
	bitset := func(dst *[]string) {
		ad.Nested(func(nad *netlink.AttributeDecoder) error {
			var err error
			*dst, err = decodeBitset(nad)
			return err
		})
	}
	for ad.Next() {
		switch ad.Type() {
		case ethtoolAFeaturesHW:
			bitset(&hw)
		case ethtoolAFeaturesActive:
			bitset(&active)
		case ethtoolAFeaturesNochange:
			bitset(&nochange)
		}
	}
	if err := ad.Err(); err != nil {
		return Features{}, fmt.Errorf("nic: malformed features reply: %w", err)
	}
	f := Features{Active: active}
	for _, n := range hw {
		if !slices.Contains(nochange, n) {
			f.Changeable = append(f.Changeable, n)
		}
	}
	return f, nil
}

// decodeBitset returns the names of the bits set in a verbose bitset. In
// list form (NOMASK) every listed bit is set; otherwise (what FEATURES_GET
// sends: every bit of the set listed, 64 on 6.18) a listed bit is set when
// it carries the VALUE flag. Bits without a name are skipped. A compact
// bitset (VALUE/MASK arrays without names) is an error: the request asked
// for the verbose form.
func decodeBitset(ad *netlink.AttributeDecoder) ([]string, error) {
	type bit struct {
		name  string
		value bool
	}
	var (
		nomask, compact bool
		bits            []bit
	)
	for ad.Next() {
		switch ad.Type() {
		case ethtoolABitsetNomask:
			nomask = ad.Flag()
		case ethtoolABitsetValue, ethtoolABitsetMask:
			compact = true
		case ethtoolABitsetBits:
			ad.Nested(func(bad *netlink.AttributeDecoder) error {
				for bad.Next() {
					if bad.Type() != ethtoolABitsetBitsBit {
						continue
					}
					var b bit
					bad.Nested(func(nad *netlink.AttributeDecoder) error {
						for nad.Next() {
							switch nad.Type() {
							case ethtoolABitsetBitName:
								b.name = nad.String()
							case ethtoolABitsetBitValue:
								b.value = nad.Flag()
							}
						}
						return nil
					})
					// The kernel lists unused feature bits with
					// an empty name; they cannot be asked for.
					if b.name != "" {
						bits = append(bits, b)
					}
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return nil, err
	}
	if compact && len(bits) == 0 {
		return nil, errors.New("compact bitset where a verbose one was requested")
	}
	var names []string
	for _, b := range bits {
		if nomask || b.value {
			names = append(names, b.name)
		}
	}
	return names, nil
}
