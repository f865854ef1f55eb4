package blockproto

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	be "github.com/blockxfer/blockxfer/internal/wire"
)

// FrameHeaderLen is the length of a control frame's length prefix in bytes.
const FrameHeaderLen = 4

// volumeStatMinLen is the encoded size of a VolumeStat with a one-byte name:
// name length (2) + name (1) + Size (8) + ExtentSize (4) + Generation (8).
const volumeStatMinLen = 2 + 1 + 8 + 4 + 8

// putDataHeaderLen is the encoded size of a PutData without its payload:
// type (1) + ID (8) + Offset (8) + length (4).
const putDataHeaderLen = 1 + 8 + 8 + 4

// extentLen is the encoded size of an Extent without inline data: type (1)
// + ID (8) + DataConn (2) + StreamOffset (8) + VolumeOffset (8) + Length
// (4) + CRC32C (4).
const extentLen = 1 + 8 + 2 + 8 + 8 + 4 + 4

// Marshal encodes m as a frame body: the type byte followed by the payload,
// without the length prefix (see [AppendFrame] for a whole frame). It checks
// every field against the bounds the decoder enforces, so a message Marshal
// accepts is one [Unmarshal] accepts; otherwise it returns an error wrapping
// [ErrMalformed], [ErrUnknownType] or [ErrFrameTooLarge].
func Marshal(m Msg) ([]byte, error) {
	b, err := appendBody(make([]byte, 0, sizeHint(m)), m)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// AppendFrame appends the whole frame for m, length prefix included, to dst
// and returns the extended slice. It does not allocate when dst has room.
// On error it returns dst with its length and contents unchanged, and the
// error; the error cases are those of [Marshal].
func AppendFrame(dst []byte, m Msg) ([]byte, error) {
	start := len(dst)
	dst = slices.Grow(dst, FrameHeaderLen+sizeHint(m))
	b, err := appendBody(append(dst, 0, 0, 0, 0), m)
	if err != nil {
		return dst[:start], err
	}
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-FrameHeaderLen))
	return b, nil
}

// AppendExtentHeader appends the frame of an Extent whose Length bytes are
// written by the caller right after it, without passing through dst (a
// sendfile(2) from the volume file): the frame's length counts them, and
// e.Data must be nil. e must be valid as an inline extent (DataConn and
// StreamOffset 0, Length at most [MaxInlineData]); otherwise nothing is
// appended and the error wraps [ErrMalformed].
func AppendExtentHeader(dst []byte, e *Extent) ([]byte, error) {
	if e == nil || e.Data != nil {
		return dst, malformed("AppendExtentHeader wants an Extent without Data")
	}
	if err := validate(e); err != nil {
		return dst, err
	}
	if e.Length > MaxInlineData || e.DataConn != 0 || e.StreamOffset != 0 {
		return dst, malformedf("inline Extent of %d bytes on data connection %d at stream offset %d, want at most %d, 0 and 0",
			e.Length, e.DataConn, e.StreamOffset, MaxInlineData)
	}
	b := binary.BigEndian.AppendUint32(dst, uint32(extentLen)+e.Length)
	return appendBody(b, e)
}

// sizeHint returns the encoded body size of m, or a small default.
func sizeHint(m Msg) int {
	switch m := m.(type) {
	case *Welcome:
		if m != nil {
			return 1 + MACLen + 2 + len(m.Tokens)*TokenLen + 8
		}
	case *ListVolumes:
		if m != nil {
			return 1 + 2 + len(m.After)
		}
	case *VolumeList:
		if m != nil {
			n := 1 + 2 + 2 + len(m.Next)
			for i := range m.Volumes {
				n += volumeStatMinLen - 1 + len(m.Volumes[i].Name)
			}
			return n
		}
	case *Error:
		if m != nil {
			return 1 + 8 + 2 + 2 + len(m.Message)
		}
	case *Goodbye:
		if m != nil {
			return 1 + 2 + len(m.Reason)
		}
	case *PutData:
		if m != nil {
			return putDataHeaderLen + len(m.Data)
		}
	case *Extent:
		if m != nil {
			return extentLen + len(m.Data)
		}
	case *PutError:
		if m != nil {
			return 1 + 8 + 2 + 2 + len(m.Message)
		}
	}
	return 64
}

// appendBody validates m and appends its type byte and payload to dst. On
// error the returned slice must not be used.
func appendBody(dst []byte, m Msg) ([]byte, error) {
	if err := validate(m); err != nil {
		return dst, err
	}
	start := len(dst)
	be := binary.BigEndian
	switch m := m.(type) {
	case *Hello:
		dst = append(dst, byte(TypeHello))
		dst = be.AppendUint64(dst, uint64(m.Caps))
		dst = append(dst, m.Nonce[:]...)
		dst = appendString(dst, m.Client)
	case *Challenge:
		dst = append(dst, byte(TypeChallenge))
		dst = be.AppendUint64(dst, uint64(m.Caps))
		dst = append(dst, m.Nonce[:]...)
		dst = be.AppendUint64(dst, m.SessionID)
		dst = appendString(dst, m.Server)
	case *Auth:
		dst = append(dst, byte(TypeAuth))
		dst = append(dst, m.MAC[:]...)
	case *Welcome:
		dst = append(dst, byte(TypeWelcome))
		dst = append(dst, m.MAC[:]...)
		dst = be.AppendUint16(dst, uint16(len(m.Tokens)))
		for i := range m.Tokens {
			dst = append(dst, m.Tokens[i][:]...)
		}
		if m.SmallRead != 0 {
			dst = be.AppendUint64(dst, m.SmallRead)
		}
	case *DataAttached:
		dst = append(dst, byte(TypeDataAttached))
		dst = be.AppendUint16(dst, m.Index)
	case *ListVolumes:
		dst = append(dst, byte(TypeListVolumes))
		if m.After != "" {
			dst = appendString(dst, m.After)
		}
	case *VolumeList:
		dst = append(dst, byte(TypeVolumeList))
		dst = be.AppendUint16(dst, uint16(len(m.Volumes)))
		for i := range m.Volumes {
			dst = appendVolumeStat(dst, &m.Volumes[i])
		}
		if m.Next != "" {
			dst = appendString(dst, m.Next)
		}
	case *StatVolume:
		dst = append(dst, byte(TypeStatVolume))
		dst = appendString(dst, m.Name)
	case *VolumeInfo:
		dst = append(dst, byte(TypeVolumeInfo))
		dst = appendVolumeStat(dst, &m.Volume)
	case *Read:
		dst = append(dst, byte(TypeRead))
		dst = be.AppendUint64(dst, m.ID)
		dst = appendString(dst, m.Volume)
		dst = be.AppendUint64(dst, m.Offset)
		dst = be.AppendUint64(dst, m.Length)
		var ns int64
		if !m.Deadline.IsZero() {
			ns = m.Deadline.UnixNano()
		}
		dst = be.AppendUint64(dst, uint64(ns))
		if m.Generation != 0 || m.Flags != 0 {
			dst = be.AppendUint64(dst, m.Generation)
		}
		if m.Flags != 0 {
			dst = append(dst, byte(m.Flags))
		}
	case *Extent:
		dst = append(dst, byte(TypeExtent))
		dst = be.AppendUint64(dst, m.ID)
		dst = be.AppendUint16(dst, m.DataConn)
		dst = be.AppendUint64(dst, m.StreamOffset)
		dst = be.AppendUint64(dst, m.VolumeOffset)
		dst = be.AppendUint32(dst, m.Length)
		dst = be.AppendUint32(dst, m.CRC32C)
		dst = append(dst, m.Data...)
	case *ReadDone:
		dst = append(dst, byte(TypeReadDone))
		dst = be.AppendUint64(dst, m.ID)
		dst = be.AppendUint64(dst, m.Bytes)
	case *Error:
		dst = append(dst, byte(TypeError))
		dst = be.AppendUint64(dst, m.ID)
		dst = be.AppendUint16(dst, uint16(m.Code))
		dst = appendString(dst, m.Message)
	case *Cancel:
		dst = append(dst, byte(TypeCancel))
		dst = be.AppendUint64(dst, m.ID)
	case *Ping:
		dst = append(dst, byte(TypePing))
		dst = be.AppendUint64(dst, m.Seq)
	case *Pong:
		dst = append(dst, byte(TypePong))
		dst = be.AppendUint64(dst, m.Seq)
	case *Goodbye:
		dst = append(dst, byte(TypeGoodbye))
		dst = appendString(dst, m.Reason)
	case *PutVolume:
		dst = append(dst, byte(TypePutVolume))
		dst = be.AppendUint64(dst, m.ID)
		dst = appendString(dst, m.Name)
		dst = be.AppendUint64(dst, m.Size)
		dst = be.AppendUint32(dst, m.ExtentSize)
		var r byte
		if m.Replace {
			r = 1
		}
		dst = append(dst, r)
	case *PutAck:
		dst = append(dst, byte(TypePutAck))
		dst = be.AppendUint64(dst, m.ID)
		dst = be.AppendUint64(dst, m.Acked)
		dst = be.AppendUint32(dst, m.Window)
	case *PutData:
		dst = append(dst, byte(TypePutData))
		dst = be.AppendUint64(dst, m.ID)
		dst = be.AppendUint64(dst, m.Offset)
		dst = be.AppendUint32(dst, uint32(len(m.Data)))
		dst = append(dst, m.Data...)
	case *PutCommit:
		dst = append(dst, byte(TypePutCommit))
		dst = be.AppendUint64(dst, m.ID)
	case *PutAbort:
		dst = append(dst, byte(TypePutAbort))
		dst = be.AppendUint64(dst, m.ID)
	case *PutDone:
		dst = append(dst, byte(TypePutDone))
		dst = be.AppendUint64(dst, m.ID)
		dst = appendVolumeStat(dst, &m.Volume)
	case *PutError:
		dst = append(dst, byte(TypePutError))
		dst = be.AppendUint64(dst, m.ID)
		dst = be.AppendUint16(dst, uint16(m.Code))
		dst = appendString(dst, m.Message)
	}
	if n := len(dst) - start; n > MaxFrame {
		return dst, fmt.Errorf("blockproto: %v encodes to %d bytes, more than %d: %w", m.Type(), n, MaxFrame, ErrFrameTooLarge)
	}
	return dst, nil
}

// appendString appends s with its u16 length prefix. The caller has checked
// that len(s) fits.
func appendString(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

func appendVolumeStat(dst []byte, v *VolumeStat) []byte {
	dst = appendString(dst, v.Name)
	dst = binary.BigEndian.AppendUint64(dst, v.Size)
	dst = binary.BigEndian.AppendUint32(dst, v.ExtentSize)
	return binary.BigEndian.AppendUint64(dst, v.Generation)
}

// Unmarshal decodes a frame body (type byte and payload, no length prefix) as
// produced by [Marshal]. It returns an error wrapping [ErrUnknownType] for a
// type byte this version does not know, and one wrapping [ErrMalformed] for
// an empty or truncated body, trailing bytes, or any field out of bounds.
// Lengths and counts are checked before anything is allocated. The returned
// message does not alias body.
//
// A non-zero Read.Deadline is returned in UTC without a monotonic clock
// reading, and an empty VolumeList as a nil slice, so decoded messages compare
// equal with reflect.DeepEqual exactly when their encodings are equal.
func Unmarshal(body []byte) (Msg, error) { return unmarshal(body, false) }

// unmarshal is Unmarshal; with view set, an Extent's Data aliases body
// instead of being copied (Conn.ReadMsgView).
func unmarshal(body []byte, view bool) (Msg, error) {
	if len(body) == 0 {
		return nil, malformed("empty frame body")
	}
	t := Type(body[0])
	d := be.NewDecoder(body[1:], malformed)
	var m Msg
	switch t {
	case TypeHello:
		x := &Hello{}
		x.Caps = Caps(d.U64("Hello.Caps"))
		d.Array(x.Nonce[:], "Hello.Nonce")
		x.Client = d.String("Hello.Client", MaxName)
		m = x
	case TypeChallenge:
		x := &Challenge{}
		x.Caps = Caps(d.U64("Challenge.Caps"))
		d.Array(x.Nonce[:], "Challenge.Nonce")
		x.SessionID = d.U64("Challenge.SessionID")
		x.Server = d.String("Challenge.Server", MaxName)
		m = x
	case TypeAuth:
		x := &Auth{}
		d.Array(x.MAC[:], "Auth.MAC")
		m = x
	case TypeWelcome:
		x := &Welcome{}
		d.Array(x.MAC[:], "Welcome.MAC")
		n := int(d.U16("Welcome.Tokens count"))
		if d.Err() == nil {
			if n < 1 || n > MaxDataConns {
				return nil, malformedf("Welcome has %d tokens, want 1..%d", n, MaxDataConns)
			}
			if d.Need(n*TokenLen, "Welcome.Tokens") {
				x.Tokens = make([][TokenLen]byte, n)
				for i := range x.Tokens {
					d.Array(x.Tokens[i][:], "Welcome.Tokens")
				}
			}
		}
		if d.Err() == nil && d.Len() > 0 {
			if x.SmallRead = d.U64("Welcome.SmallRead"); d.Err() == nil && x.SmallRead == 0 {
				return nil, malformed("Welcome.SmallRead is 0: leave it out instead")
			}
		}
		m = x
	case TypeDataAttached:
		m = &DataAttached{Index: d.U16("DataAttached.Index")}
	case TypeListVolumes:
		x := &ListVolumes{}
		if d.Len() > 0 {
			x.After = optionalString(d, "ListVolumes.After")
		}
		m = x
	case TypeVolumeList:
		x := &VolumeList{}
		n := int(d.U16("VolumeList count"))
		if d.Err() == nil {
			if n > MaxVolumes {
				return nil, malformedf("VolumeList has %d volumes, more than %d", n, MaxVolumes)
			}
			if n > 0 && d.Need(n*volumeStatMinLen, "VolumeList.Volumes") {
				x.Volumes = make([]VolumeStat, n)
				for i := range x.Volumes {
					decodeVolumeStat(d, &x.Volumes[i], "VolumeList.Volumes")
				}
			}
		}
		if d.Err() == nil && d.Len() > 0 {
			x.Next = optionalString(d, "VolumeList.Next")
		}
		m = x
	case TypeStatVolume:
		m = &StatVolume{Name: d.String("StatVolume.Name", MaxName)}
	case TypeVolumeInfo:
		x := &VolumeInfo{}
		decodeVolumeStat(d, &x.Volume, "VolumeInfo.Volume")
		m = x
	case TypeRead:
		x := &Read{}
		x.ID = d.U64("Read.ID")
		x.Volume = d.String("Read.Volume", MaxName)
		x.Offset = d.U64("Read.Offset")
		x.Length = d.U64("Read.Length")
		ns := int64(d.U64("Read.Deadline"))
		if d.Err() == nil {
			if ns < 0 {
				return nil, malformedf("Read.Deadline %d is before the Unix epoch", ns)
			}
			if ns > 0 {
				x.Deadline = time.Unix(0, ns).UTC()
			}
		}
		if d.Err() == nil && d.Len() > 0 {
			x.Generation = d.U64("Read.Generation")
			if d.Err() == nil && d.Len() > 0 {
				if x.Flags = ReadFlags(d.U8("Read.Flags")); d.Err() == nil && x.Flags == 0 {
					return nil, malformed("Read.Flags is 0: leave it out instead")
				}
			} else if d.Err() == nil && x.Generation == 0 {
				return nil, malformed("Read.Generation is 0: leave it out instead")
			}
		}
		m = x
	case TypeExtent:
		x := &Extent{}
		x.ID = d.U64("Extent.ID")
		x.DataConn = d.U16("Extent.DataConn")
		x.StreamOffset = d.U64("Extent.StreamOffset")
		x.VolumeOffset = d.U64("Extent.VolumeOffset")
		x.Length = d.U32("Extent.Length")
		x.CRC32C = d.U32("Extent.CRC32C")
		if n := d.Len(); d.Err() == nil && n > 0 {
			if view {
				x.Data = d.Bytes(n, "Extent.Data")
			} else {
				x.Data = make([]byte, n)
				d.Array(x.Data, "Extent.Data")
			}
			if err := validate(x); err != nil {
				return nil, err
			}
		}
		m = x
	case TypeReadDone:
		x := &ReadDone{}
		x.ID = d.U64("ReadDone.ID")
		x.Bytes = d.U64("ReadDone.Bytes")
		m = x
	case TypeError:
		x := &Error{}
		x.ID = d.U64("Error.ID")
		x.Code = Code(d.U16("Error.Code"))
		x.Message = d.String("Error.Message", MaxMessage)
		m = x
	case TypeCancel:
		m = &Cancel{ID: d.U64("Cancel.ID")}
	case TypePing:
		m = &Ping{Seq: d.U64("Ping.Seq")}
	case TypePong:
		m = &Pong{Seq: d.U64("Pong.Seq")}
	case TypeGoodbye:
		m = &Goodbye{Reason: d.String("Goodbye.Reason", MaxMessage)}
	case TypePutVolume:
		x := &PutVolume{}
		x.ID = d.U64("PutVolume.ID")
		x.Name = d.String("PutVolume.Name", MaxName)
		x.Size = d.U64("PutVolume.Size")
		x.ExtentSize = d.U32("PutVolume.ExtentSize")
		switch r := d.U8("PutVolume.Replace"); {
		case d.Err() != nil:
		case r > 1:
			return nil, malformedf("PutVolume.Replace is %d, want 0 or 1", r)
		default:
			x.Replace = r == 1
		}
		m = x
	case TypePutAck:
		x := &PutAck{}
		x.ID = d.U64("PutAck.ID")
		x.Acked = d.U64("PutAck.Acked")
		x.Window = d.U32("PutAck.Window")
		m = x
	case TypePutData:
		x := &PutData{}
		x.ID = d.U64("PutData.ID")
		x.Offset = d.U64("PutData.Offset")
		n := int(d.U32("PutData.Data length"))
		if d.Err() == nil {
			if n < 1 || n > MaxPutData {
				return nil, malformedf("PutData.Data is %d bytes, want 1..%d", n, MaxPutData)
			}
			if d.Need(n, "PutData.Data") {
				x.Data = make([]byte, n)
				d.Array(x.Data, "PutData.Data")
			}
		}
		m = x
	case TypePutCommit:
		m = &PutCommit{ID: d.U64("PutCommit.ID")}
	case TypePutAbort:
		m = &PutAbort{ID: d.U64("PutAbort.ID")}
	case TypePutDone:
		x := &PutDone{}
		x.ID = d.U64("PutDone.ID")
		decodeVolumeStat(d, &x.Volume, "PutDone.Volume")
		m = x
	case TypePutError:
		x := &PutError{}
		x.ID = d.U64("PutError.ID")
		x.Code = Code(d.U16("PutError.Code"))
		x.Message = d.String("PutError.Message", MaxMessage)
		m = x
	default:
		return nil, fmt.Errorf("blockproto: message type %d: %w", uint8(t), ErrUnknownType)
	}
	if d.Err() != nil {
		return nil, d.Err()
	}
	if d.Len() != 0 {
		return nil, malformedf("%d trailing bytes after %v", d.Len(), t)
	}
	if err := validate(m); err != nil {
		return nil, err
	}
	return m, nil
}

// optionalString reads a string field that is present only when it is not
// empty (ListVolumes.After, VolumeList.Next): present, it must be 1..MaxName
// bytes, so that each message has exactly one encoding.
func optionalString(d *be.Decoder, field string) string {
	s := d.String(field, MaxName)
	if d.Err() == nil && s == "" {
		d.Failf("%s is present but empty; an empty %s is encoded by omitting it", field, field)
	}
	return s
}

// decodeVolumeStat reads a VolumeStat.
func decodeVolumeStat(d *be.Decoder, v *VolumeStat, field string) {
	v.Name = d.String(field+".Name", MaxName)
	v.Size = d.U64(field + ".Size")
	v.ExtentSize = d.U32(field + ".ExtentSize")
	v.Generation = d.U64(field + ".Generation")
}

// Deadline bounds: a non-zero deadline must be representable as a positive
// int64 count of Unix nanoseconds.
var (
	minDeadline = time.Unix(0, 1)
	maxDeadline = time.Unix(0, math.MaxInt64)
)

// validate checks m's fields against the protocol bounds. Both Marshal and
// Unmarshal use it, so the two directions agree.
func validate(m Msg) error {
	switch m := m.(type) {
	case nil:
		return malformed("nil message")
	case *Hello:
		if m == nil {
			return nilMsg(TypeHello)
		}
		return checkString("Hello.Client", m.Client, 0, MaxName)
	case *Challenge:
		if m == nil {
			return nilMsg(TypeChallenge)
		}
		return checkString("Challenge.Server", m.Server, 0, MaxName)
	case *Auth:
		if m == nil {
			return nilMsg(TypeAuth)
		}
	case *Welcome:
		if m == nil {
			return nilMsg(TypeWelcome)
		}
		if n := len(m.Tokens); n < 1 || n > MaxDataConns {
			return malformedf("Welcome has %d tokens, want 1..%d", n, MaxDataConns)
		}
	case *DataAttached:
		if m == nil {
			return nilMsg(TypeDataAttached)
		}
		if m.Index >= MaxDataConns {
			return malformedf("DataAttached.Index %d, want < %d", m.Index, MaxDataConns)
		}
	case *ListVolumes:
		if m == nil {
			return nilMsg(TypeListVolumes)
		}
		return checkString("ListVolumes.After", m.After, 0, MaxName)
	case *VolumeList:
		if m == nil {
			return nilMsg(TypeVolumeList)
		}
		n := len(m.Volumes)
		if n > MaxVolumes {
			return malformedf("VolumeList has %d volumes, more than %d", n, MaxVolumes)
		}
		for i := range m.Volumes {
			if err := checkVolumeStat("VolumeList.Volumes", &m.Volumes[i]); err != nil {
				return err
			}
		}
		if err := checkString("VolumeList.Next", m.Next, 0, MaxName); err != nil {
			return err
		}
		if m.Next != "" && (n == 0 || m.Next != m.Volumes[n-1].Name) {
			return malformedf("VolumeList.Next %q is not the name of the page's last volume", m.Next)
		}
	case *StatVolume:
		if m == nil {
			return nilMsg(TypeStatVolume)
		}
		return checkString("StatVolume.Name", m.Name, 1, MaxName)
	case *VolumeInfo:
		if m == nil {
			return nilMsg(TypeVolumeInfo)
		}
		return checkVolumeStat("VolumeInfo.Volume", &m.Volume)
	case *Read:
		if m == nil {
			return nilMsg(TypeRead)
		}
		if m.ID == 0 {
			return malformed("Read.ID is 0")
		}
		if err := checkString("Read.Volume", m.Volume, 1, MaxName); err != nil {
			return err
		}
		if m.Length < 1 || m.Length > MaxReadLen {
			return malformedf("Read.Length %d, want 1..%d", m.Length, uint64(MaxReadLen))
		}
		if m.Offset > math.MaxUint64-m.Length {
			return malformedf("Read range %d+%d overflows", m.Offset, m.Length)
		}
		if d := m.Deadline; !d.IsZero() && (d.Before(minDeadline) || d.After(maxDeadline)) {
			return malformedf("Read.Deadline %v cannot be encoded as positive Unix nanoseconds", d)
		}
	case *Extent:
		if m == nil {
			return nilMsg(TypeExtent)
		}
		if m.ID == 0 {
			return malformed("Extent.ID is 0")
		}
		if m.DataConn >= MaxDataConns {
			return malformedf("Extent.DataConn %d, want < %d", m.DataConn, MaxDataConns)
		}
		if m.Length < 1 || m.Length > MaxExtentLen {
			return malformedf("Extent.Length %d, want 1..%d", m.Length, MaxExtentLen)
		}
		if m.StreamOffset > math.MaxUint64-uint64(m.Length) {
			return malformedf("Extent stream range %d+%d overflows", m.StreamOffset, m.Length)
		}
		if m.VolumeOffset > math.MaxUint64-uint64(m.Length) {
			return malformedf("Extent volume range %d+%d overflows", m.VolumeOffset, m.Length)
		}
		if m.Data != nil {
			switch {
			case len(m.Data) != int(m.Length) || m.Length > MaxInlineData:
				return malformedf("Extent.Data is %d bytes for Length %d, want Length bytes, at most %d", len(m.Data), m.Length, MaxInlineData)
			case m.DataConn != 0 || m.StreamOffset != 0:
				return malformedf("Extent with inline data on data connection %d at stream offset %d, want 0 and 0", m.DataConn, m.StreamOffset)
			}
		}
	case *ReadDone:
		if m == nil {
			return nilMsg(TypeReadDone)
		}
		if m.ID == 0 {
			return malformed("ReadDone.ID is 0")
		}
		if m.Bytes > MaxReadLen {
			return malformedf("ReadDone.Bytes %d, more than %d", m.Bytes, uint64(MaxReadLen))
		}
	case *Error:
		if m == nil {
			return nilMsg(TypeError)
		}
		if m.Code == 0 {
			return malformed("Error.Code is 0")
		}
		return checkString("Error.Message", m.Message, 0, MaxMessage)
	case *Cancel:
		if m == nil {
			return nilMsg(TypeCancel)
		}
		if m.ID == 0 {
			return malformed("Cancel.ID is 0")
		}
	case *Ping:
		if m == nil {
			return nilMsg(TypePing)
		}
	case *Pong:
		if m == nil {
			return nilMsg(TypePong)
		}
	case *Goodbye:
		if m == nil {
			return nilMsg(TypeGoodbye)
		}
		return checkString("Goodbye.Reason", m.Reason, 0, MaxMessage)
	case *PutVolume:
		if m == nil {
			return nilMsg(TypePutVolume)
		}
		if m.ID == 0 {
			return malformed("PutVolume.ID is 0")
		}
		if err := checkString("PutVolume.Name", m.Name, 1, MaxName); err != nil {
			return err
		}
		if m.Size < 1 || m.Size > MaxPutSize {
			return malformedf("PutVolume.Size %d, want 1..%d", m.Size, uint64(MaxPutSize))
		}
		if m.ExtentSize < 1 || m.ExtentSize > MaxExtentLen {
			return malformedf("PutVolume.ExtentSize %d, want 1..%d", m.ExtentSize, MaxExtentLen)
		}
	case *PutAck:
		if m == nil {
			return nilMsg(TypePutAck)
		}
		if m.ID == 0 {
			return malformed("PutAck.ID is 0")
		}
		if m.Acked > MaxPutSize {
			return malformedf("PutAck.Acked %d, more than %d", m.Acked, uint64(MaxPutSize))
		}
		if m.Window < 1 || m.Window > MaxPutWindow {
			return malformedf("PutAck.Window %d, want 1..%d", m.Window, MaxPutWindow)
		}
	case *PutData:
		if m == nil {
			return nilMsg(TypePutData)
		}
		if m.ID == 0 {
			return malformed("PutData.ID is 0")
		}
		if n := len(m.Data); n < 1 || n > MaxPutData {
			return malformedf("PutData.Data is %d bytes, want 1..%d", n, MaxPutData)
		}
		if m.Offset > MaxPutSize-uint64(len(m.Data)) {
			return malformedf("PutData range %d+%d is past %d", m.Offset, len(m.Data), uint64(MaxPutSize))
		}
	case *PutCommit:
		if m == nil {
			return nilMsg(TypePutCommit)
		}
		if m.ID == 0 {
			return malformed("PutCommit.ID is 0")
		}
	case *PutAbort:
		if m == nil {
			return nilMsg(TypePutAbort)
		}
		if m.ID == 0 {
			return malformed("PutAbort.ID is 0")
		}
	case *PutDone:
		if m == nil {
			return nilMsg(TypePutDone)
		}
		if m.ID == 0 {
			return malformed("PutDone.ID is 0")
		}
		return checkVolumeStat("PutDone.Volume", &m.Volume)
	case *PutError:
		if m == nil {
			return nilMsg(TypePutError)
		}
		if m.ID == 0 {
			return malformed("PutError.ID is 0")
		}
		if m.Code == 0 {
			return malformed("PutError.Code is 0")
		}
		return checkString("PutError.Message", m.Message, 0, MaxMessage)
	default:
		return fmt.Errorf("blockproto: %T is not a blockproto message: %w", m, ErrUnknownType)
	}
	return nil
}

func nilMsg(t Type) error {
	return malformedf("nil *%v", t)
}

func checkString(field, s string, min, max int) error {
	if len(s) < min || len(s) > max {
		return malformedf("%s is %d bytes, want %d..%d", field, len(s), min, max)
	}
	return nil
}

func checkVolumeStat(field string, v *VolumeStat) error {
	if err := checkString(field+".Name", v.Name, 1, MaxName); err != nil {
		return err
	}
	if v.ExtentSize < 1 || v.ExtentSize > MaxExtentLen {
		return malformedf("%s.ExtentSize %d, want 1..%d", field, v.ExtentSize, MaxExtentLen)
	}
	return nil
}
