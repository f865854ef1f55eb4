// Package transport holds the contract between the engine and the
// transports that move payload on data connections: a RecvTransport places
// a client's incoming payload into provider memory, a SendTransport writes a
// server's extents. transport/tcp and transport/devmem implement it. The
// package imports only the memory contract, so a transport links neither the
// engine, the catalog nor the wire protocol.
package transport

import (
	"context"
	"errors"
	"net"
	"os"

	"github.com/blockxfer/blockxfer/providers/memory"
)

// Transport names reported on results, logs and metrics.
const (
	TCP            = "tcp"
	Devmem         = "devmem"
	DevmemEmulated = "devmem-emulated"
)

// RecvTransport moves the payload of a client's data connections into
// provider memory. transport/tcp and transport/devmem implement it.
type RecvTransport interface {
	// Name is reported on every result that used this transport.
	Name() string
	// NewReceiver prepares an established data connection for receiving
	// into p's buffers. The receiver does not own conn.
	NewReceiver(conn net.Conn, p memory.Provider) (Receiver, error)
}

// ErrProvider marks a Receive that consumed its bytes from the stream but
// could not place them because the provider failed. The request fails; the
// data connection stays usable. Any other Receive error means the stream is
// out of step and the session must end.
var ErrProvider = errors.New("provider failed")

// Receiver receives the payload bytes of one data connection. The engine
// calls it from one goroutine per data connection, in stream order.
type Receiver interface {
	// Receive reads exactly n bytes of the stream into dst at off. Provider
	// failures are wrapped with ErrProvider.
	Receive(ctx context.Context, dst memory.BufferID, off, n int64) error
	// Discard reads and drops exactly n bytes of the stream (payload of a
	// cancelled or failed read, which must still be drained).
	Discard(ctx context.Context, n int64) error
	// Close releases what the receiver holds; it does not close the conn.
	Close() error
}

// Piece is one stretch of a data connection's stream and where it goes: N
// bytes into buffer Dst at Off.
type Piece struct {
	Dst memory.BufferID
	Off int64
	N   int64
}

// BatchReceiver is implemented by a Receiver that can place several
// consecutive pieces of its stream in one call, paying its fixed costs (a
// provider gather, token bookkeeping) once rather than per piece: the
// engine hands it the small extents queued on a connection together.
// transport/devmem's receiver implements it.
type BatchReceiver interface {
	// ReceiveBatch receives the pieces, in stream order, as one Receive
	// per piece would; every piece's bytes are in place when it returns.
	// Errors are as for Receive.
	ReceiveBatch(ctx context.Context, pieces []Piece) error
}

// SendTransport writes extent payload on a server's data connections.
type SendTransport interface {
	// Name is reported in the server's logs and metrics.
	Name() string
	// NewSender prepares an accepted data connection for sending. The
	// sender does not own conn.
	NewSender(conn net.Conn) (Sender, error)
}

// ErrSource marks a SendExtent that could not read its source. The sender
// has written the extent's remaining bytes as zeros, so the stream stays in
// step; the read fails, the data connection stays usable. Any other
// SendExtent error means the connection is unusable.
var ErrSource = errors.New("source read failed")

// Sender sends the payload of one data connection, one extent at a time, in
// announcement order.
type Sender interface {
	// SendExtent writes n bytes of f starting at off. It returns once the
	// bytes are handed to the kernel; buffers are recycled only after the
	// kernel reports their completion.
	SendExtent(f *os.File, off, n int64) error
	// Close waits for outstanding completions and releases what the sender
	// holds; it does not close the conn.
	Close() error
}

// TrySender is implemented by a Sender that can send part of an extent
// without waiting for the connection: the engine sends the small extent of
// a lone read from the goroutine that announced it, where the connection
// is idle, and hands what the socket did not take at once to the
// connection's sender goroutine. transport/tcp's sendfile sender
// implements it.
type TrySender interface {
	// TrySendExtent writes up to n bytes of f from off, as many as the
	// connection takes at once (possibly none), and returns how many. It
	// never blocks, and it stops at the first thing it cannot do: a full
	// socket, the end of the file, any error. SendExtent of the rest meets
	// the same condition again and handles it as it always does (waits,
	// pads or fails).
	TrySendExtent(f *os.File, off, n int64) int64
}

// HeaderSender is implemented by a Sender that can put bytes of its own
// before an extent's in one piece of the stream: the engine sends an
// extent inline on the control connection as its Extent frame's header
// followed by the bytes from the volume file (docs/protocol.md 5.12).
// transport/tcp's senders implement it.
type HeaderSender interface {
	// SendExtentAfter writes hdr, then n bytes of f from off as
	// SendExtent does (a source failure pads them, and the error wraps
	// ErrSource). Where it can, it holds hdr back until the first bytes
	// go with it, so the peer is not woken for the header alone.
	SendExtentAfter(hdr []byte, f *os.File, off, n int64) error
}

// BytesSender is implemented by a Sender that can also send bytes from
// memory: the engine sends a small read it has already read and checked in
// one write, rather than from the volume file. transport/tcp's senders
// implement it.
type BytesSender interface {
	// SendBytes writes p in stream order, like an extent of len(p) bytes.
	// It returns once the bytes are handed to the kernel, which has copied
	// them: p may be reused then. Any error means the connection is
	// unusable.
	SendBytes(p []byte) error
}
