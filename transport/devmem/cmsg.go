package devmem

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

// A Frag is one fragment of stream payload reported by
// recvmsg(MSG_SOCK_DEVMEM), in stream order.
type Frag struct {
	// Offset is, for a dmabuf frag, the byte offset inside the dmabuf
	// where the frag's bytes are; for a linear frag, the offset inside the
	// iovec where the kernel copied its bytes (linear frags of one recvmsg
	// are packed into the iovec in order, so this is the sum of the sizes
	// of the linear frags before it).
	Offset uint64
	// Size is the number of payload bytes.
	Size uint32
	// Token is the token to return with SO_DEVMEM_DONTNEED once the bytes
	// were consumed (>= 1). Zero for linear frags.
	Token uint32
	// DmabufID is the id of the binding whose dmabuf holds the bytes.
	// Zero for linear frags.
	DmabufID uint32
	// Linear is set for SCM_DEVMEM_LINEAR: the bytes are in host memory,
	// in the iovec, because the NIC did not split them out (header split
	// failed or the bytes were in the skb's linear part).
	Linear bool
}

// ParseCmsgs appends to dst the devmem frags that the control buffer oob (the
// msg_control bytes recvmsg filled, msg_controllen of them) describes, and
// returns the extended slice. It does not allocate when dst has room.
//
// SCM_DEVMEM_DMABUF and SCM_DEVMEM_LINEAR messages of level SOL_SOCKET must
// carry a 24-byte struct dmabuf_cmsg, as every kernel since 6.12 sends (for a
// linear frag only frag_size is meaningful). Other control messages (for
// example timestamps) are skipped. A buffer that is not a well-formed
// sequence of control messages, a devmem message of another size, a frag of
// size zero, or a dmabuf frag with token or dmabuf id zero is rejected with an
// error wrapping ErrMalformed; dst is then returned with the frags parsed so
// far, so their tokens can still be returned to the kernel.
func ParseCmsgs(dst []Frag, oob []byte) ([]Frag, error) {
	dst, _, err := parseCmsgs(dst, oob, 0)
	return dst, err
}

// fragSums sums up the frags parseCmsgs appended.
type fragSums struct {
	devmem, linear int64  // payload bytes of dmabuf frags, of linear frags
	tokens         int    // dmabuf frags
	foreign        uint32 // the dmabuf id of a frag of another binding, or 0
}

// parseCmsgs is ParseCmsgs, summing up the frags as it appends them (in the
// same pass, which is cheaper than a second one over the frags): a dmabuf
// frag whose dmabuf id is not id is foreign.
func parseCmsgs(dst []Frag, oob []byte, id uint32) ([]Frag, fragSums, error) {
	var sums fragSums
	for off := 0; off < len(oob); {
		b := oob[off:]
		if len(b) < uapi.SizeofCmsghdr {
			return dst, sums, malformedCmsg(off, b, 0)
		}
		n := readWord(b)
		level := int32(binary.NativeEndian.Uint32(b[wordSize:]))
		typ := int32(binary.NativeEndian.Uint32(b[wordSize+4:]))
		if n < uint64(uapi.SizeofCmsghdr) || n > uint64(len(b)) {
			return dst, sums, malformedCmsg(off, b, n)
		}
		if level == uapi.SOL_SOCKET && (typ == uapi.SCM_DEVMEM_DMABUF || typ == uapi.SCM_DEVMEM_LINEAR) {
			if n != devmemCmsgLen {
				return dst, sums, malformedCmsg(off, b, n)
			}
			p := (*[uapi.SizeofDmabufCmsg]byte)(b[uapi.SizeofCmsghdr:devmemCmsgLen])
			// Checked in registers and written in place: a Frag built
			// aside and copied in (or read back right after its fields
			// were stored) stalls on store forwarding, which cost more
			// than the parse itself.
			size := binary.NativeEndian.Uint32(p[uapi.OffsetofFragSize:])
			if typ == uapi.SCM_DEVMEM_LINEAR {
				if size == 0 {
					return dst, sums, malformedFrag(off, Frag{Linear: true})
				}
				var f *Frag
				dst, f = grow(dst)
				*f = Frag{Offset: uint64(sums.linear), Size: size, Linear: true}
				sums.linear += int64(size)
			} else {
				offset := binary.NativeEndian.Uint64(p[uapi.OffsetofFragOffset:])
				token := binary.NativeEndian.Uint32(p[uapi.OffsetofFragToken:])
				dmabuf := binary.NativeEndian.Uint32(p[uapi.OffsetofDmabufID:])
				if size == 0 || token == 0 || dmabuf == 0 {
					return dst, sums, malformedFrag(off, Frag{Size: size, Token: token, DmabufID: dmabuf})
				}
				var f *Frag
				dst, f = grow(dst)
				*f = Frag{Offset: offset, Size: size, Token: token, DmabufID: dmabuf}
				sums.devmem += int64(size)
				sums.tokens++
				if dmabuf != id {
					sums.foreign = dmabuf
				}
			}
		}
		next := uapi.CmsgAlign(int(n))
		if next >= len(b) {
			break
		}
		off += next
	}
	return dst, sums, nil
}

// grow extends dst by one frag and returns it with the new element, which
// the caller must set whole.
func grow(dst []Frag) ([]Frag, *Frag) {
	if len(dst) < cap(dst) {
		dst = dst[:len(dst)+1]
	} else {
		dst = append(dst, Frag{})
	}
	return dst, &dst[len(dst)-1]
}

// devmemCmsgLen is the cmsg_len of a devmem control message.
const devmemCmsgLen = uint64(uapi.SizeofCmsghdr + uapi.SizeofDmabufCmsg)

// malformedCmsg describes the control message at off, of length n, that
// ParseCmsgs rejects; b is the buffer from off on.
func malformedCmsg(off int, b []byte, n uint64) error {
	switch {
	case len(b) < uapi.SizeofCmsghdr:
		return fmt.Errorf("%w: %d trailing bytes after control messages", ErrMalformed, len(b))
	case n < uint64(uapi.SizeofCmsghdr) || n > uint64(len(b)):
		return fmt.Errorf("%w: control message at %d has length %d, %d bytes left", ErrMalformed, off, n, len(b))
	}
	return fmt.Errorf("%w: devmem control message at %d has %d payload bytes, want %d", ErrMalformed, off, n-uint64(uapi.SizeofCmsghdr), uapi.SizeofDmabufCmsg)
}

// malformedFrag describes the devmem frag at off that ParseCmsgs rejects.
func malformedFrag(off int, f Frag) error {
	if f.Size == 0 {
		return fmt.Errorf("%w: devmem frag of size 0 at %d", ErrMalformed, off)
	}
	return fmt.Errorf("%w: dmabuf frag at %d has token %d, dmabuf id %d (both must be >= 1)", ErrMalformed, off, f.Token, f.DmabufID)
}

const wordSize = int(unsafe.Sizeof(uintptr(0)))

func readWord(b []byte) uint64 {
	if wordSize == 8 {
		return binary.NativeEndian.Uint64(b)
	}
	return uint64(binary.NativeEndian.Uint32(b))
}

func putWord(b []byte, v uint64) {
	if wordSize == 8 {
		binary.NativeEndian.PutUint64(b, v)
	} else {
		binary.NativeEndian.PutUint32(b, uint32(v))
	}
}

// appendCmsg appends one control message with the given payload length and
// returns the buffer and the payload slice to fill. Padding is zeroed.
func appendCmsg(b []byte, level, typ int32, payload int) ([]byte, []byte) {
	start := len(b)
	space := uapi.CmsgSpace(payload)
	for i := 0; i < space; i++ {
		b = append(b, 0)
	}
	m := b[start:]
	putWord(m, uint64(uapi.CmsgLen(payload)))
	binary.NativeEndian.PutUint32(m[wordSize:], uint32(level))
	binary.NativeEndian.PutUint32(m[wordSize+4:], uint32(typ))
	return b, m[uapi.SizeofCmsghdr : uapi.SizeofCmsghdr+payload]
}

// appendDevmemCmsg appends the control message the kernel emits for f
// (tcp_recvmsg_dmabuf, net/ipv4/tcp.c): SCM_DEVMEM_LINEAR with only frag_size
// set, or SCM_DEVMEM_DMABUF with all fields.
func appendDevmemCmsg(b []byte, f Frag) []byte {
	typ := int32(uapi.SCM_DEVMEM_DMABUF)
	if f.Linear {
		typ = uapi.SCM_DEVMEM_LINEAR
	}
	b, p := appendCmsg(b, uapi.SOL_SOCKET, typ, uapi.SizeofDmabufCmsg)
	binary.NativeEndian.PutUint32(p[uapi.OffsetofFragSize:], f.Size)
	if !f.Linear {
		binary.NativeEndian.PutUint64(p[uapi.OffsetofFragOffset:], f.Offset)
		binary.NativeEndian.PutUint32(p[uapi.OffsetofFragToken:], f.Token)
		binary.NativeEndian.PutUint32(p[uapi.OffsetofDmabufID:], f.DmabufID)
	}
	return b
}

// appendDmabufIDCmsg appends the SCM_DEVMEM_DMABUF control message of a
// devmem TX sendmsg: a u32 binding id, cmsg_len exactly CMSG_LEN(4).
func appendDmabufIDCmsg(b []byte, id uint32) []byte {
	b, p := appendCmsg(b, uapi.SOL_SOCKET, uapi.SCM_DEVMEM_DMABUF, 4)
	binary.NativeEndian.PutUint32(p, id)
	return b
}

// devmemCmsgSpace is the control-buffer room one devmem frag takes (40 bytes
// on 64-bit systems).
var devmemCmsgSpace = uapi.CmsgSpace(uapi.SizeofDmabufCmsg)
