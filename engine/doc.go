// Package engine is the blockxfer transfer engine: the client [Session] that
// fetches volume ranges into provider memory, and the [Server] that serves a
// catalog of volumes. Both binaries (blockd, blockcat) are built from it, and
// it can be used from a Go program directly.
//
// # Requests
//
// [Session.Submit] starts a batch of reads and returns a [Handle] per read;
// each handle's Done channel closes exactly once, when the read has reached a
// terminal [State]: done, failed, cancelled or timed out. No read is left
// without an end state: a server that stops answering, a closed connection or
// an expired deadline all end it. [Session.Read] is the blocking form.
//
// The engine stops writing into a read's destination before its Done channel
// closes, so the destination may be freed as soon as Done is closed.
//
// # Transports
//
// Payload moves on data connections through a [RecvTransport] on the client
// and a [SendTransport] on the server (transport/tcp, transport/devmem).
// Every [Result] names the transport that ran and, when it is not the one
// asked for, why (docs/architecture.md: a fallback is never silent).
package engine
