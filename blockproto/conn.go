package blockproto

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

const (
	// connReadBufSize is the size of a Conn's read buffer. Frames that fit
	// are decoded in place, without a copy.
	connReadBufSize = 32 << 10
	// maxKeptBuf is the largest scratch buffer a Conn keeps between frames;
	// a larger one (a big VolumeList) is dropped after use. It holds an
	// Extent with MaxInlineData bytes and its header: at 64 KiB, every
	// such frame allocated a new buffer, and the garbage collector took a
	// quarter of a client reading 64 KiB inline extents.
	maxKeptBuf = 128 << 10
	// readChunk is how much a large frame's buffer grows at a time, so a
	// length prefix alone cannot make the reader allocate MaxFrame bytes.
	readChunk = 64 << 10
)

// Conn reads and writes control frames on a control connection, after the
// preamble has been exchanged (see [WriteControlPreamble] and
// [ReadPreamble]).
//
// WriteMsg is safe for concurrent use: each frame goes out in one Write call
// under a mutex, so frames from different goroutines never interleave.
// ReadMsg must be called from one goroutine at a time. Reading and writing
// may proceed concurrently.
//
// Conn buffers its reads, so once a Conn reads from a connection nothing
// else may read from it. Conn does not close the connection.
type Conn struct {
	wmu  sync.Mutex
	w    io.Writer
	wbuf []byte // frame scratch, guarded by wmu
	werr error  // sticky write error, guarded by wmu

	r     *bufio.Reader
	rbuf  []byte // scratch for frames larger than r's buffer
	rerr  error  // sticky read error: the stream lost frame alignment
	limit uint32 // largest frame ReadMsg accepts: MaxFrame unless lowered
}

// NewConn returns a Conn that exchanges frames over rw.
func NewConn(rw io.ReadWriter) *Conn { return NewConnSize(rw, connReadBufSize) }

// InlineReadBuf is a read buffer size for [NewConnSize] that holds eight
// Extents carrying [MaxInlineData] bytes each: a client reading such
// extents decodes each in place instead of copying it out of a smaller
// buffer (64 KiB reads at depth 1: 6% more a second), and reads a burst of
// them, such as eight reads in flight bring, in one read call. The reader
// moves a frame that straddles the end of the buffer to its start before
// reading the rest; with room for two such frames that was a move of half
// a frame for nearly every frame at depth 8, and this size made 64 KiB
// reads at depth 8 12-16% faster (docs/performance.md).
const InlineReadBuf = 8 * MaxInlineData

// NewConnSize is NewConn with a read buffer of size bytes (at least
// NewConn's 32 KiB). Frames that fit it are decoded without a copy.
func NewConnSize(rw io.ReadWriter, size int) *Conn {
	return &Conn{
		w:     rw,
		r:     bufio.NewReaderSize(rw, max(size, connReadBufSize)),
		limit: MaxFrame,
	}
}

// SetReadLimit sets the largest frame body ReadMsg accepts, n in
// 1..[MaxFrame]; a longer frame fails with [ErrFrameTooLarge] before any of
// its body is read. A server lowers it to [MaxHandshakeFrame] until the
// client has authenticated, so an unauthenticated peer cannot make it
// buffer more than that, and restores MaxFrame after Welcome. It must not
// be called concurrently with ReadMsg.
func (c *Conn) SetReadLimit(n int) {
	c.limit = uint32(min(max(n, 1), MaxFrame))
}

// WriteMsg encodes m as one frame and writes it with a single Write call.
//
// If m does not encode (see [Marshal]) nothing is written and the Conn stays
// usable. If the Write fails, the frame may have been cut short, so that
// error is returned by every later WriteMsg too.
func (c *Conn) WriteMsg(m Msg) error { return c.WriteMsgs([]Msg{m}) }

// WriteMsgs encodes ms as frames and writes them together with a single
// Write call (several frames per write are allowed: docs/protocol.md 4).
// If one does not encode, nothing is written and the error is its; write
// errors are as for WriteMsg.
func (c *Conn) WriteMsgs(ms []Msg) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil || len(ms) == 0 {
		return c.werr
	}
	b := c.wbuf[:0]
	for _, m := range ms {
		var err error
		if b, err = AppendFrame(b, m); err != nil {
			return err
		}
	}
	if cap(b) <= maxKeptBuf {
		c.wbuf = b
	}
	if _, err := c.w.Write(b); err != nil {
		c.werr = fmt.Errorf("blockproto: write %v frame: %w", ms[0].Type(), err)
		if len(ms) > 1 {
			c.werr = fmt.Errorf("blockproto: write %d frames, %v first: %w", len(ms), ms[0].Type(), err)
		}
		return c.werr
	}
	return nil
}

// ReadMsg reads and decodes the next frame.
//
// At a clean end of stream between frames it returns io.EOF itself. A frame
// cut short by the end of the stream gives an error wrapping
// io.ErrUnexpectedEOF; a length prefix outside 1..[MaxFrame] gives one
// wrapping [ErrFrameTooLarge] or [ErrMalformed]. These and read errors of the
// underlying connection are returned again by every later call.
//
// A complete frame whose body does not decode gives an error wrapping
// [ErrUnknownType] or [ErrMalformed]; the frame is consumed and the next
// ReadMsg reads the frame after it, so a caller may choose to carry on.
func (c *Conn) ReadMsg() (Msg, error) { return c.readMsg(false) }

// ReadMsgView is ReadMsg for a reader that is done with each message before
// it reads the next: the Data of an [Extent] it returns aliases the Conn's
// read buffer, valid only until the next ReadMsg or ReadMsgView, instead of
// being copied. A client placing inline extents saves an allocation and a
// copy of every extent's bytes so.
func (c *Conn) ReadMsgView() (Msg, error) { return c.readMsg(true) }

func (c *Conn) readMsg(view bool) (Msg, error) {
	if c.rerr != nil {
		return nil, c.rerr
	}
	hdr, err := c.r.Peek(FrameHeaderLen)
	if err != nil {
		if len(hdr) == 0 && err == io.EOF {
			return nil, io.EOF // returned as is: callers compare with ==
		}
		return nil, c.fail(fmt.Errorf("blockproto: read frame header: %w", unexpected(err)))
	}
	n := binary.BigEndian.Uint32(hdr)
	c.r.Discard(FrameHeaderLen)
	switch {
	case n == 0:
		return nil, c.fail(malformed("frame length 0"))
	case n > c.limit:
		return nil, c.fail(fmt.Errorf("blockproto: frame length %d, more than %d: %w", n, c.limit, ErrFrameTooLarge))
	}
	size := int(n)
	if size <= c.r.Size() {
		body, err := c.r.Peek(size)
		if err != nil {
			return nil, c.fail(fmt.Errorf("blockproto: read %d-byte frame: %w", size, unexpected(err)))
		}
		m, err := unmarshal(body, view)
		c.r.Discard(size) // cannot fail: Peek returned size bytes
		return m, err
	}
	body, err := c.readLarge(size)
	if err != nil {
		return nil, c.fail(fmt.Errorf("blockproto: read %d-byte frame: %w", size, unexpected(err)))
	}
	return unmarshal(body, view)
}

// Buffered returns how many bytes ReadMsg can read without reading from the
// connection: 0 means the next ReadMsg may block. A server uses it to write
// its answers to a burst of requests together, once it has read the burst.
func (c *Conn) Buffered() int { return c.r.Buffered() }

// FrameBuffered reports whether a whole frame is buffered, so the next
// ReadMsg returns without reading from the connection. A reader that acts
// on a burst of frames uses it to hold its own writes until the burst is
// read. Like ReadMsg, it must not be called concurrently with a read.
func (c *Conn) FrameBuffered() bool {
	n := c.r.Buffered()
	if c.rerr != nil || n < FrameHeaderLen {
		return false
	}
	hdr, _ := c.r.Peek(FrameHeaderLen) // buffered: reads nothing
	return n-FrameHeaderLen >= int(binary.BigEndian.Uint32(hdr))
}

// readLarge reads a size-byte body that does not fit the read buffer,
// growing the scratch buffer only as bytes arrive (at most doubling what
// has arrived), so a lying length prefix costs little memory.
func (c *Conn) readLarge(size int) ([]byte, error) {
	buf := c.rbuf[:0]
	for len(buf) < size {
		k := min(size-len(buf), readChunk)
		if cap(buf)-len(buf) < k {
			nb := make([]byte, len(buf), min(size, max(2*cap(buf), len(buf)+k)))
			copy(nb, buf)
			buf = nb
		}
		got, err := io.ReadFull(c.r, buf[len(buf):len(buf)+k])
		buf = buf[:len(buf)+got]
		if err != nil {
			return nil, err
		}
	}
	if cap(buf) <= maxKeptBuf {
		c.rbuf = buf
	} else {
		c.rbuf = nil
	}
	return buf, nil
}

// fail records err as the sticky read error and returns it.
func (c *Conn) fail(err error) error {
	c.rerr = err
	return err
}

// unexpected turns an end of stream inside a frame into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
