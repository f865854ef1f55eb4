// Package blockproto is the wire protocol between blockd and its clients.
//
// A session uses one control connection and one or more data connections to
// the same server address. Every connection starts with an 8-byte preamble
// that says which kind it is and which protocol version it speaks.
//
// The control connection carries length-prefixed, typed frames (see [Msg] and
// the message types in this package): the handshake and HMAC authentication,
// volume listing, read requests, per-extent announcements, completions,
// typed errors, cancel and keepalive.
//
// A data connection carries payload bytes only. After its preamble it sends a
// single-use token, issued on the authenticated control connection, and from
// then on the server writes nothing but extent payload on it, in the order the
// extents were announced on the control connection. There is no framing on a
// data connection at all, because under devmem TCP the payload lands in device
// memory that the CPU cannot read: everything the receiver needs to know about
// a byte arrives on the control connection before the byte itself.
//
// docs/protocol.md in the repository specifies the encoding byte by byte.
//
// # Using the package
//
// [WriteControlPreamble], [WriteDataPreamble] and [ReadPreamble] open
// connections. [Conn] reads and writes control frames on a control
// connection; [Marshal], [AppendFrame] and [Unmarshal] are the codec under
// it. [ClientProof], [ServerProof] and [VerifyProof] implement the
// handshake's challenge-response, with nonces and tokens from [NewNonce] and
// [NewToken].
//
// Encoders and decoders enforce the same bounds, so a message that encodes is
// one the peer accepts. Failures wrap the sentinels [ErrFrameTooLarge],
// [ErrUnknownType], [ErrMalformed], [ErrBadPreamble] and [ErrVersion]. A wire
// [Error] is itself a Go error, so a read that fails on the server can be
// returned as is.
package blockproto
