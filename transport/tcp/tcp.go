package tcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/blockxfer/blockxfer/internal/rawsock"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport"
)

// DefaultStaging is the staging buffer size of a receiver whose provider is
// not CPU-mappable.
const DefaultStaging = 1 << 20

// Transport is the plain TCP transport. The zero value is ready to use.
// A receiver reads into the destination directly when the provider maps it
// (memory.Mapper), else into staging the provider lends (memory.Stager), else
// into its own staging buffer; the last two are followed by CopyIn, or by
// CopyInChecksum where the provider lends staging and offers it
// (memory.CopyInChecksummer), so that the engine's check of each extent
// needs no second pass over the destination.
type Transport struct {
	// Staging is the staging buffer size per data connection for providers
	// that are not CPU-mappable (default DefaultStaging).
	Staging int
}

var (
	_ transport.RecvTransport = (*Transport)(nil)
	_ transport.SendTransport = (*Transport)(nil)
)

// Name returns transport.TCP.
func (*Transport) Name() string { return transport.TCP }

// NewReceiver returns a receiver that reads conn into p's buffers.
func (t *Transport) NewReceiver(conn net.Conn, p memory.Provider) (transport.Receiver, error) {
	r := &receiver{conn: rawsock.Wrap(conn), p: p, lowat: newLowat(conn)}
	if m, ok := p.(memory.Mapper); ok && p.Capabilities().CPUMappable {
		r.mapper = m
	} else if st, ok := p.(memory.Stager); ok {
		r.stager = st
		if cs, ok := p.(memory.CopyInChecksummer); ok {
			return &summingReceiver{receiver: r, cs: cs}, nil
		}
	} else {
		size := t.Staging
		if size <= 0 {
			size = DefaultStaging
		}
		r.staging = make([]byte, size)
	}
	return r, nil
}

type receiver struct {
	conn    net.Conn
	lowat   *lowat // the socket's receive low-water mark, or nil
	p       memory.Provider
	mapper  memory.Mapper
	stager  memory.Stager
	staging []byte
	scratch []byte
}

// Receive reads n stream bytes into dst at off. A provider failure still
// consumes the n bytes, so the stream stays in step.
func (r *receiver) Receive(ctx context.Context, dst memory.BufferID, off, n int64) error {
	if r.mapper != nil {
		b, err := r.mapper.Bytes(dst)
		if err == nil && (off < 0 || off+n > int64(len(b))) {
			err = fmt.Errorf("%d bytes at %d in a %d-byte buffer: %w", n, off, len(b), memory.ErrOutOfBounds)
		}
		if err != nil {
			return r.spoil(ctx, n, err)
		}
		if err := r.readFull(b[off : off+n]); err != nil {
			return fmt.Errorf("tcp: receive: %w", err)
		}
		return nil
	}
	return r.receiveStaged(ctx, off, n, func(chunk []byte, off int64) error {
		return r.p.CopyIn(ctx, dst, off, chunk)
	})
}

// receiveStaged reads n stream bytes chunk by chunk into staging (lent by
// the provider, or the receiver's own) and has place put each chunk at its
// offset off of the destination.
func (r *receiver) receiveStaged(ctx context.Context, off, n int64, place func(chunk []byte, off int64) error) error {
	for n > 0 {
		buf, release := r.staging, func() {}
		if r.stager != nil {
			mem, rel, err := r.stager.Stage(ctx)
			if err != nil {
				return r.spoil(ctx, n, err)
			}
			buf, release = mem, rel
		}
		chunk := buf[:min(n, int64(len(buf)))]
		if err := r.readFull(chunk); err != nil {
			release()
			return fmt.Errorf("tcp: receive: %w", err)
		}
		err := place(chunk, off)
		release()
		if err != nil {
			return r.spoil(ctx, n-int64(len(chunk)), err)
		}
		off += int64(len(chunk))
		n -= int64(len(chunk))
	}
	return nil
}

// summingReceiver is the receiver for a provider that lends staging and
// can checksum what a copy-in placed (memory.CopyInChecksummer, a
// plugin): ReceiveChecksum (engine.ChecksumReceiver) has each chunk
// checksummed in the destination right after it is copied there, while its
// bytes are in cache, instead of the engine asking for a Checksum of the
// whole extent once it has landed.
type summingReceiver struct {
	*receiver
	cs memory.CopyInChecksummer
	// plain is set once the provider could not checksum a copy-in
	// (memory.ErrNoCopyInChecksum): later chunks are copied in plainly.
	plain bool
}

// ReceiveChecksum reads n stream bytes into dst at off, as Receive, and
// returns the CRC-32C of those bytes as they are in dst after the copy,
// continued from crc. ok is false when the provider could not checksum
// them; they were copied in all the same.
func (r *summingReceiver) ReceiveChecksum(ctx context.Context, dst memory.BufferID, off, n int64, crc uint32) (sum uint32, ok bool, err error) {
	ok = !r.plain
	err = r.receiveStaged(ctx, off, n, func(chunk []byte, off int64) error {
		if ok {
			c, err := r.cs.CopyInChecksum(ctx, dst, off, chunk, crc)
			if !errors.Is(err, memory.ErrNoCopyInChecksum) {
				crc = c
				return err
			}
			r.plain, ok = true, false
		}
		return r.p.CopyIn(ctx, dst, off, chunk)
	})
	return crc, ok && err == nil, err
}

// spoil drains the rest of an extent the provider could not take.
func (r *receiver) spoil(ctx context.Context, rest int64, perr error) error {
	if err := r.Discard(ctx, rest); err != nil {
		return err
	}
	return fmt.Errorf("tcp: %s: %w: %w", r.p.Name(), transport.ErrProvider, perr)
}

// Discard reads and drops n stream bytes.
func (r *receiver) Discard(_ context.Context, n int64) error {
	if r.scratch == nil {
		r.scratch = make([]byte, 64<<10)
	}
	for n > 0 {
		k, err := r.read(r.scratch[:min(n, int64(len(r.scratch)))], n)
		n -= int64(k)
		if err != nil && n > 0 {
			return fmt.Errorf("tcp: discard: %w", err)
		}
	}
	return nil
}

// wakeBytes is the most bytes a receive waits to have arrived before it
// is woken to copy them (SO_RCVLOWAT): with the default of one byte, a
// receiver is woken for every segment the stream delivers, 64 KiB on
// loopback. Waiting for up to 512 KiB made a 1 GiB get over one data
// connection 1.4x faster on the 2-core development VM (docs/performance.md:
// one wake-up, and one read, per 512 KiB); 256 KiB and 1 MiB did as well.
const wakeBytes = 512 << 10

// read reads into b, as conn.Read, with want the bytes the stream still
// owes this receive (at least len(b)): it is woken once min(want,
// wakeBytes) bytes have arrived, never waiting for bytes that are not
// coming.
func (r *receiver) read(b []byte, want int64) (int, error) {
	if err := r.lowat.set(int(min(want, wakeBytes))); err != nil {
		return 0, err
	}
	return r.conn.Read(b)
}

// readFull reads exactly len(b) bytes, as io.ReadFull, through read.
func (r *receiver) readFull(b []byte) error {
	for len(b) > 0 {
		k, err := r.read(b, int64(len(b)))
		b = b[k:]
		switch {
		case len(b) == 0:
			return nil
		case err == io.EOF:
			return io.ErrUnexpectedEOF
		case err != nil:
			return err
		}
	}
	return nil
}

// Close releases the receiver's buffers.
func (r *receiver) Close() error {
	r.staging, r.scratch = nil, nil
	return nil
}

// NewSender returns a sender for conn.
func (t *Transport) NewSender(conn net.Conn) (transport.Sender, error) {
	return newSender(conn)
}

// zeros pads an extent whose source failed.
var zeros = make([]byte, 64<<10)

// pad writes n zero bytes so the stream stays in step after a source
// failure, and returns the source error wrapped with transport.ErrSource.
func pad(conn net.Conn, n int64, srcErr error) error {
	for n > 0 {
		k, err := conn.Write(zeros[:min(n, int64(len(zeros)))])
		n -= int64(k)
		if err != nil {
			return fmt.Errorf("tcp: pad after source failure (%v): %w", srcErr, err)
		}
	}
	return fmt.Errorf("tcp: %w: %w", transport.ErrSource, srcErr)
}

// byteWriter gives both senders SendBytes (transport.BytesSender).
type byteWriter struct{ conn net.Conn }

// SendBytes writes p in one write; the kernel copies it before the write
// returns.
func (w byteWriter) SendBytes(p []byte) error {
	if _, err := w.conn.Write(p); err != nil {
		return fmt.Errorf("tcp: send: %w", err)
	}
	return nil
}

var _ transport.BytesSender = byteWriter{}

// copySender sends through user space, for connections that are not TCP
// sockets (such as net.Pipe in tests).
type copySender struct{ byteWriter }

func (s *copySender) SendExtent(f *os.File, off, n int64) error {
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		k, err := f.ReadAt(buf[:min(n, int64(len(buf)))], off)
		if k > 0 {
			if _, werr := s.conn.Write(buf[:k]); werr != nil {
				return fmt.Errorf("tcp: send: %w", werr)
			}
			off += int64(k)
			n -= int64(k)
		}
		if err != nil && n > 0 {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("volume file ends at %d", off)
			}
			return pad(s.conn, n, err)
		}
	}
	return nil
}

// SendExtentAfter implements transport.HeaderSender: hdr, then the bytes.
func (s *copySender) SendExtentAfter(hdr []byte, f *os.File, off, n int64) error {
	if err := s.SendBytes(hdr); err != nil {
		return err
	}
	return s.SendExtent(f, off, n)
}

func (s *copySender) Close() error { return nil }
