package blockproto

import (
	"fmt"
	"io"
)

// Preamble magics: the first three bytes of every connection.
var (
	magicControl = [3]byte{'B', 'X', 'C'}
	magicData    = [3]byte{'B', 'X', 'D'}
)

// Preamble is what opens a connection, as read by [ReadPreamble].
type Preamble struct {
	Kind    Kind           // KindControl or KindData
	Version uint8          // always Version when ReadPreamble succeeds
	Token   [TokenLen]byte // data connections only; zero for control
}

// WriteControlPreamble writes the control-connection preamble, "BXC",
// [Version] and four zero bytes, in one Write call.
func WriteControlPreamble(w io.Writer) error {
	var b [PreambleLen]byte
	putPreamble(b[:], magicControl)
	if _, err := w.Write(b[:]); err != nil {
		return fmt.Errorf("blockproto: write control preamble: %w", err)
	}
	return nil
}

// WriteDataPreamble writes the data-connection preamble, "BXD", [Version]
// and four zero bytes, followed by token, in one Write call.
func WriteDataPreamble(w io.Writer, token [TokenLen]byte) error {
	var b [PreambleLen + TokenLen]byte
	putPreamble(b[:], magicData)
	copy(b[PreambleLen:], token[:])
	if _, err := w.Write(b[:]); err != nil {
		return fmt.Errorf("blockproto: write data preamble: %w", err)
	}
	return nil
}

// WriteDataPreambleKind writes the data-connection preamble and token
// followed by the connection's kind, in one Write call: the attach of a
// session whose Hello and Challenge both offered [CapDataKinds]
// (docs/protocol.md 6.2).
func WriteDataPreambleKind(w io.Writer, token [TokenLen]byte, kind DataKind) error {
	var b [PreambleLen + TokenLen + 1]byte
	putPreamble(b[:], magicData)
	copy(b[PreambleLen:], token[:])
	b[PreambleLen+TokenLen] = byte(kind)
	if _, err := w.Write(b[:]); err != nil {
		return fmt.Errorf("blockproto: write data preamble: %w", err)
	}
	return nil
}

// ReadDataKind reads the kind byte that follows a data connection's token
// when its session negotiated [CapDataKinds], and no more. A byte above
// [MaxDataKind] wraps [ErrBadPreamble]; an end of stream wraps
// io.ErrUnexpectedEOF.
func ReadDataKind(r io.Reader) (DataKind, error) {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, fmt.Errorf("blockproto: read data connection kind: %w", unexpected(err))
	}
	if k := DataKind(b[0]); k > MaxDataKind {
		return 0, fmt.Errorf("blockproto: data connection kind %d, want 0..%d: %w", b[0], MaxDataKind, ErrBadPreamble)
	}
	return DataKind(b[0]), nil
}

func putPreamble(b []byte, magic [3]byte) {
	copy(b, magic[:])
	b[3] = Version
	// b[4:8] are reserved and already zero.
}

// ReadPreamble reads the preamble that opens a connection, and for a data
// connection the token after it. It reads exactly those bytes and no more,
// so the caller can hand r to a [Conn] (control) or to the payload reader
// (data) afterwards.
//
// Errors: an unknown magic or non-zero reserved bytes wrap [ErrBadPreamble];
// a known magic with another version is a [*VersionError] matching
// [ErrVersion] (checked before the reserved bytes, which a later version may
// use); an end of stream wraps io.EOF (nothing read) or io.ErrUnexpectedEOF.
func ReadPreamble(r io.Reader) (Preamble, error) {
	var b [PreambleLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return Preamble{}, fmt.Errorf("blockproto: read preamble: %w", err)
	}
	var p Preamble
	switch [3]byte(b[:3]) {
	case magicControl:
		p.Kind = KindControl
	case magicData:
		p.Kind = KindData
	default:
		return Preamble{}, fmt.Errorf("blockproto: preamble %q: %w", b[:], ErrBadPreamble)
	}
	if b[3] != Version {
		return Preamble{}, &VersionError{Kind: p.Kind, Peer: b[3]}
	}
	if b[4]|b[5]|b[6]|b[7] != 0 {
		return Preamble{}, fmt.Errorf("blockproto: %v preamble reserved bytes % x not zero: %w", p.Kind, b[4:], ErrBadPreamble)
	}
	p.Version = b[3]
	if p.Kind == KindData {
		if _, err := io.ReadFull(r, p.Token[:]); err != nil {
			return Preamble{}, fmt.Errorf("blockproto: read data token: %w", unexpected(err))
		}
	}
	return p, nil
}
