package devmem

import (
	"encoding/binary"
	"fmt"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

// A Completion is one MSG_ZEROCOPY completion notification: the send calls
// numbered Lo through Hi (inclusive, modulo 2^32) are complete, so the
// buffers they used may be reused. Consecutive completions are coalesced by
// the kernel into one range.
type Completion struct {
	Lo, Hi uint32
	// Copied is set when the kernel reported SO_EE_CODE_ZEROCOPY_COPIED:
	// it copied the data instead of sending it in place (loopback always
	// does). The buffers are free either way.
	Copied bool
}

// Count returns the number of send calls the completion covers.
func (c Completion) Count() uint64 { return uint64(c.Hi-c.Lo) + 1 }

// ParseErrqueue decodes the control buffer of one recvmsg(MSG_ERRQUEUE)
// (msg_control, msg_controllen bytes) into a zerocopy completion. The
// notification is a struct sock_extended_err in an IP_RECVERR (SOL_IP) or
// IPV6_RECVERR (SOL_IPV6) message — IPv6 sockets carrying IPv4 traffic may
// use either — with ee_errno 0, ee_origin SO_EE_ORIGIN_ZEROCOPY, ee_info the
// first and ee_data the last send call of the range, and ee_code carrying
// SO_EE_CODE_ZEROCOPY_COPIED. Any other error-queue message (an ICMP error,
// a timestamp) and malformed bytes yield an error wrapping ErrMalformed that
// describes what was found. It does not allocate on success.
func ParseErrqueue(oob []byte) (Completion, error) {
	for off := 0; off < len(oob); {
		b := oob[off:]
		if len(b) < uapi.SizeofCmsghdr {
			return Completion{}, fmt.Errorf("%w: %d trailing bytes after control messages", ErrMalformed, len(b))
		}
		n := readWord(b)
		level := int32(binary.NativeEndian.Uint32(b[wordSize:]))
		typ := int32(binary.NativeEndian.Uint32(b[wordSize+4:]))
		if n < uint64(uapi.SizeofCmsghdr) || n > uint64(len(b)) {
			return Completion{}, fmt.Errorf("%w: control message at %d has length %d, %d bytes left", ErrMalformed, off, n, len(b))
		}
		if (level == uapi.SOL_IP && typ == uapi.IP_RECVERR) || (level == uapi.SOL_IPV6 && typ == uapi.IPV6_RECVERR) {
			p := b[uapi.SizeofCmsghdr:n]
			if len(p) < uapi.SizeofSockExtendedErr {
				return Completion{}, fmt.Errorf("%w: extended error of %d bytes, want at least %d", ErrMalformed, len(p), uapi.SizeofSockExtendedErr)
			}
			errno := binary.NativeEndian.Uint32(p[0:])
			origin, code := p[4], p[6]
			if errno != 0 || origin != uapi.SO_EE_ORIGIN_ZEROCOPY {
				return Completion{}, fmt.Errorf("%w: error queue holds errno %d origin %d type %d code %d, not a zerocopy completion", ErrMalformed, errno, origin, p[5], code)
			}
			return Completion{
				Lo:     binary.NativeEndian.Uint32(p[8:]),
				Hi:     binary.NativeEndian.Uint32(p[12:]),
				Copied: code&uapi.SO_EE_CODE_ZEROCOPY_COPIED != 0,
			}, nil
		}
		next := uapi.CmsgAlign(int(n))
		if next >= len(b) {
			break
		}
		off += next
	}
	return Completion{}, fmt.Errorf("%w: no IP_RECVERR/IPV6_RECVERR message in %d control bytes", ErrMalformed, len(oob))
}

// Sizes of the offender address the kernel appends to sock_extended_err:
// struct sockaddr_in for IP_RECVERR, struct sockaddr_in6 for IPV6_RECVERR.
const (
	sizeofSockaddrInet4 = 16
	sizeofSockaddrInet6 = 28
)

// appendZerocopyCmsg appends the error-queue message the kernel emits for a
// zerocopy completion on an IPv4 (v6 false) or IPv6 socket: the extended
// error followed by an all-zero offender address.
func appendZerocopyCmsg(b []byte, c Completion, v6 bool) []byte {
	level, typ, addr := int32(uapi.SOL_IP), int32(uapi.IP_RECVERR), sizeofSockaddrInet4
	if v6 {
		level, typ, addr = uapi.SOL_IPV6, uapi.IPV6_RECVERR, sizeofSockaddrInet6
	}
	b, p := appendCmsg(b, level, typ, uapi.SizeofSockExtendedErr+addr)
	p[4] = uapi.SO_EE_ORIGIN_ZEROCOPY
	if c.Copied {
		p[6] = uapi.SO_EE_CODE_ZEROCOPY_COPIED
	}
	binary.NativeEndian.PutUint32(p[8:], c.Lo)
	binary.NativeEndian.PutUint32(p[12:], c.Hi)
	return b
}
