package blockproto

import (
	"errors"
	"fmt"
)

// Errors returned by the codec. Callers test for them with [errors.Is]; the
// returned errors wrap them with detail (which field, which value).
var (
	// ErrFrameTooLarge means a frame's length prefix is larger than
	// [MaxFrame], or a message would encode to more than MaxFrame bytes. On
	// a [Conn] the stream is no longer at a frame boundary and the
	// connection must be closed.
	ErrFrameTooLarge = errors.New("blockproto: frame too large")

	// ErrUnknownType means a frame's type byte names no message this
	// version knows, or Marshal was given a Msg implementation that is not
	// one of this package's message types.
	ErrUnknownType = errors.New("blockproto: unknown message type")

	// ErrMalformed means a frame or message breaks the encoding rules: a
	// field out of its bounds, a string or list longer than allowed, a
	// truncated body, trailing bytes after the body, an empty frame, or a
	// nil message.
	ErrMalformed = errors.New("blockproto: malformed message")
)

// Errors returned by the connection preamble functions.
var (
	// ErrBadPreamble means a connection did not start with a control or
	// data preamble of this protocol (wrong magic or non-zero reserved
	// bytes).
	ErrBadPreamble = errors.New("blockproto: bad connection preamble")

	// ErrVersion means the peer speaks another protocol version. The
	// returned error is a [*VersionError] that names both versions.
	ErrVersion = errors.New("blockproto: protocol version mismatch")
)

// VersionError reports a preamble with a known magic but a protocol version
// other than [Version]. It matches [ErrVersion] with [errors.Is].
type VersionError struct {
	Kind Kind  // which preamble carried the version
	Peer uint8 // the version the peer speaks
}

// Error returns a message naming both versions, such as
// "blockproto: peer speaks protocol version 2, this build speaks 1".
func (e *VersionError) Error() string {
	return fmt.Sprintf("blockproto: peer speaks protocol version %d, this build speaks %d", e.Peer, Version)
}

// Is reports whether target is [ErrVersion].
func (e *VersionError) Is(target error) bool { return target == ErrVersion }

// malformed returns an error wrapping ErrMalformed that says what is wrong.
func malformed(what string) error {
	return fmt.Errorf("blockproto: %s: %w", what, ErrMalformed)
}

// malformedf is malformed with a format string.
func malformedf(format string, args ...any) error {
	return malformed(fmt.Sprintf(format, args...))
}
