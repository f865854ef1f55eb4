package blockproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// rw joins a reader and a writer into an io.ReadWriter.
type rw struct {
	io.Reader
	io.Writer
}

// readerConn returns a Conn that reads b and discards writes.
func readerConn(b []byte) *Conn {
	return NewConn(rw{bytes.NewReader(b), io.Discard})
}

func frames(t testing.TB, msgs ...Msg) []byte {
	t.Helper()
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = AppendFrame(b, m); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func pipe(t *testing.T) (a, b net.Conn) {
	t.Helper()
	a, b = net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestConnRoundTrip(t *testing.T) {
	a, b := pipe(t)
	ca, cb := NewConn(a), NewConn(b)
	all := samples()
	go func() {
		for _, s := range all {
			if err := ca.WriteMsg(s.msg); err != nil {
				t.Errorf("WriteMsg(%s): %v", s.name, err)
				return
			}
		}
		a.Close()
	}()
	for _, s := range all {
		m, err := cb.ReadMsg()
		if err != nil {
			t.Fatalf("ReadMsg for %s: %v", s.name, err)
		}
		if !equalMsg(s.msg, m) {
			t.Fatalf("%s: got %+v", s.name, m)
		}
	}
	if m, err := cb.ReadMsg(); err != io.EOF {
		t.Fatalf("after the last frame: ReadMsg = %v, %v; want io.EOF", m, err)
	}
}

// choppy writes each Write in small pieces, yielding between them, so that
// frames from concurrent writers would interleave unless the Conn serialises
// whole frames.
type choppy struct {
	w     io.Writer
	piece int
}

func (c choppy) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(c.piece, len(p))
		m, err := c.w.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
		runtime.Gosched()
	}
	return n, nil
}

func TestConnConcurrentWriters(t *testing.T) {
	a, b := pipe(t)
	w := NewConn(rw{a, choppy{a, 7}})
	r := NewConn(b)
	const writers, each = 8, 150
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				var m Msg
				switch i % 3 {
				case 0:
					m = &Ping{Seq: uint64(g)<<32 | uint64(i)}
				case 1:
					// A long frame whose content names its writer and index.
					m = &Goodbye{Reason: strings.Repeat(fmt.Sprintf("%d/%d;", g, i), 1+i%50)}
				default:
					m = &Extent{ID: uint64(g) + 1, DataConn: uint16(g), StreamOffset: uint64(i), Length: uint32(i + 1), CRC32C: uint32(g*1000 + i)}
				}
				if err := w.WriteMsg(m); err != nil {
					t.Errorf("writer %d: %v", g, err)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); a.Close() }()

	next := make([]int, writers)
	for got := 0; got < writers*each; got++ {
		m, err := r.ReadMsg()
		if err != nil {
			t.Fatalf("after %d frames: ReadMsg: %v", got, err)
		}
		var g, i int
		switch m := m.(type) {
		case *Ping:
			g, i = int(m.Seq>>32), int(uint32(m.Seq))
		case *Goodbye:
			if _, err := fmt.Sscanf(m.Reason, "%d/%d;", &g, &i); err != nil {
				t.Fatalf("frame %d: bad reason %q", got, m.Reason)
			}
			if want := strings.Repeat(fmt.Sprintf("%d/%d;", g, i), 1+i%50); m.Reason != want {
				t.Fatalf("frame %d: reason %q, want %q", got, m.Reason, want)
			}
		case *Extent:
			g, i = int(m.DataConn), int(m.StreamOffset)
			if m.ID != uint64(g)+1 || m.Length != uint32(i+1) || m.CRC32C != uint32(g*1000+i) {
				t.Fatalf("frame %d: mixed-up extent %+v", got, m)
			}
		default:
			t.Fatalf("frame %d: unexpected %T", got, m)
		}
		if g < 0 || g >= writers || i != next[g] {
			t.Fatalf("frame %d: writer %d message %d, want message %d", got, g, i, next[g])
		}
		next[g]++
	}
	if m, err := r.ReadMsg(); err != io.EOF {
		t.Fatalf("ReadMsg after all frames = %v, %v; want io.EOF", m, err)
	}
}

// recorder records every Write call.
type recorder struct{ writes [][]byte }

func (r *recorder) Write(p []byte) (int, error) {
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

func TestConnOneWritePerFrame(t *testing.T) {
	rec := &recorder{}
	c := NewConn(rw{bytes.NewReader(nil), rec})
	all := samples()
	for _, s := range all {
		if err := c.WriteMsg(s.msg); err != nil {
			t.Fatal(err)
		}
	}
	if len(rec.writes) != len(all) {
		t.Fatalf("%d writes for %d frames", len(rec.writes), len(all))
	}
	for i, s := range all {
		if want := frames(t, s.msg); !bytes.Equal(rec.writes[i], want) {
			t.Errorf("%s: wrote %d bytes, want the %d-byte frame", s.name, len(rec.writes[i]), len(want))
		}
	}
}

func TestConnWriteInvalidWritesNothing(t *testing.T) {
	rec := &recorder{}
	c := NewConn(rw{bytes.NewReader(nil), rec})
	if err := c.WriteMsg(&Read{ID: 1, Volume: "v"}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("WriteMsg(zero-length Read) = %v, want ErrMalformed", err)
	}
	if len(rec.writes) != 0 {
		t.Fatalf("invalid message wrote %d times", len(rec.writes))
	}
	if err := c.WriteMsg(&Ping{Seq: 1}); err != nil {
		t.Fatalf("WriteMsg after an invalid message: %v", err)
	}
	if len(rec.writes) != 1 {
		t.Fatalf("%d writes, want 1", len(rec.writes))
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 2, errors.New("link down")
}

func TestConnWriteErrorIsSticky(t *testing.T) {
	fw := &failWriter{}
	c := NewConn(rw{bytes.NewReader(nil), fw})
	err1 := c.WriteMsg(&Ping{Seq: 1})
	err2 := c.WriteMsg(&Ping{Seq: 2})
	if err1 == nil || err2 == nil || !strings.Contains(err2.Error(), "link down") {
		t.Fatalf("WriteMsg errors %v, %v; want link down twice", err1, err2)
	}
	if fw.n != 1 {
		t.Fatalf("wrote %d times after a failed write, want 1 attempt", fw.n)
	}
}

// TestConnTruncated cuts a stream of frames at every byte.
func TestConnTruncated(t *testing.T) {
	msgs := []Msg{
		&Read{ID: 3, Volume: "vol", Length: 10, Deadline: time.Unix(1700000000, 0)},
		&Extent{ID: 3, Length: 10},
		&Error{ID: 3, Code: CodeIO, Message: "disk gone"},
	}
	stream := frames(t, msgs...)
	ends := map[int]int{} // frame end offset -> frames before it
	off := 0
	for i, m := range msgs {
		off += len(frames(t, m))
		ends[off] = i + 1
	}
	for cut := 0; cut <= len(stream); cut++ {
		c := readerConn(stream[:cut])
		n := 0
		var err error
		for {
			var m Msg
			if m, err = c.ReadMsg(); err != nil {
				break
			}
			if !equalMsg(m, msgs[n]) {
				t.Fatalf("cut %d: frame %d = %+v", cut, n, m)
			}
			n++
		}
		whole, atBoundary := ends[cut]
		if cut == 0 {
			whole, atBoundary = 0, true
		}
		switch {
		case atBoundary:
			if err != io.EOF || n != whole {
				t.Errorf("cut %d at a frame boundary: %d frames then %v; want %d then io.EOF", cut, n, err, whole)
			}
		default:
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("cut %d inside a frame: %d frames then %v; want io.ErrUnexpectedEOF", cut, n, err)
			}
			if _, again := c.ReadMsg(); again != err {
				t.Errorf("cut %d: second ReadMsg = %v, want the same error", cut, again)
			}
		}
	}
}

func header(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

func TestConnReadRejects(t *testing.T) {
	good := frames(t, &Ping{Seq: 9})
	tests := []struct {
		name   string
		stream []byte
		want   error
		sticky bool // the stream lost alignment; later reads fail too
	}{
		{"length 0", append(header(0), good...), ErrMalformed, true},
		{"length MaxFrame+1", append(header(MaxFrame+1), make([]byte, 64)...), ErrFrameTooLarge, true},
		{"length 4GiB-1", append(header(0xffffffff), good...), ErrFrameTooLarge, true},
		{"unknown type", append(append(header(3), 99, 1, 2), good...), ErrUnknownType, false},
		{"trailing bytes", append(append(header(10), append([]byte{byte(TypePing)}, make([]byte, 9)...)...), good...), ErrMalformed, false},
		{"bad field", append(append(header(9), byte(TypeCancel), 0, 0, 0, 0, 0, 0, 0, 0), good...), ErrMalformed, false},
		{"short header", []byte{0, 0}, io.ErrUnexpectedEOF, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := readerConn(tt.stream)
			m, err := c.ReadMsg()
			if !errors.Is(err, tt.want) || m != nil {
				t.Fatalf("ReadMsg = %v, %v; want error wrapping %v", m, err, tt.want)
			}
			m, err = c.ReadMsg()
			if tt.sticky {
				if !errors.Is(err, tt.want) {
					t.Fatalf("second ReadMsg = %v, %v; want the same error again", m, err)
				}
				return
			}
			if p, ok := m.(*Ping); err != nil || !ok || p.Seq != 9 {
				t.Fatalf("frame after a bad one: ReadMsg = %v, %v; want Ping 9", m, err)
			}
		})
	}
}

// TestConnLargeFrames exercises frames bigger than the read buffer: the
// largest possible VolumeList, a MaxFrame frame of junk and a cut-short one.
func TestConnLargeFrames(t *testing.T) {
	big := maxVolumeList()
	stream := frames(t, big, &Ping{Seq: 1}, big)
	c := readerConn(stream)
	for i, want := range []Msg{big, &Ping{Seq: 1}, big} {
		m, err := c.ReadMsg()
		if err != nil || !equalMsg(m, want) {
			t.Fatalf("frame %d: ReadMsg = %T, %v", i, m, err)
		}
	}

	junk := append(header(MaxFrame), byte(TypeGoodbye))
	junk = append(junk, make([]byte, MaxFrame-1)...)
	c = readerConn(append(junk, good(t)...))
	if _, err := c.ReadMsg(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("MaxFrame junk frame: %v, want ErrMalformed", err)
	}
	if m, err := c.ReadMsg(); err != nil || m.Type() != TypePing {
		t.Fatalf("after the junk frame: %v, %v", m, err)
	}

	cutBig := frames(t, big)
	c = readerConn(cutBig[:len(cutBig)-1])
	if _, err := c.ReadMsg(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut large frame: %v, want io.ErrUnexpectedEOF", err)
	}
}

func good(t *testing.T) []byte { return frames(t, &Ping{Seq: 2}) }

// TestConnLyingLengthAllocatesLittle checks that a length prefix alone does
// not make ReadMsg allocate MaxFrame bytes.
func TestConnLyingLengthAllocatesLittle(t *testing.T) {
	stream := append(header(MaxFrame), 1, 2, 3)
	const runs = 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		if _, err := readerConn(stream).ReadMsg(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("ReadMsg = %v, want io.ErrUnexpectedEOF", err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 256<<10 {
		t.Errorf("a 7-byte stream claiming a MaxFrame frame cost %d bytes per read", per)
	}
}

func TestConnReadEOF(t *testing.T) {
	c := readerConn(nil)
	if m, err := c.ReadMsg(); err != io.EOF || m != nil {
		t.Fatalf("ReadMsg on empty stream = %v, %v; want nil, io.EOF", m, err)
	}
}

// TestConnKeepsInlineScratch: reading Extents that carry MaxInlineData
// bytes, larger than the read buffer, reuses one scratch buffer instead of
// allocating one a frame (a client reading 64 KiB inline extents spent a
// quarter of its CPU in the garbage collector when it did).
func TestConnKeepsInlineScratch(t *testing.T) {
	const n = 50
	e := &Extent{ID: 1, Length: MaxInlineData, Data: bytes.Repeat([]byte{7}, MaxInlineData)}
	msgs := make([]Msg, n)
	for i := range msgs {
		msgs[i] = e
	}
	c := readerConn(frames(t, msgs...))
	var before, after runtime.MemStats
	if _, err := c.ReadMsgView(); err != nil { // the first frame sizes the buffer
		t.Fatal(err)
	}
	runtime.ReadMemStats(&before)
	for range n - 1 {
		m, err := c.ReadMsgView()
		if err != nil {
			t.Fatal(err)
		}
		if x, ok := m.(*Extent); !ok || len(x.Data) != MaxInlineData {
			t.Fatalf("read %T, want an Extent of %d bytes", m, MaxInlineData)
		}
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > (n-1)*MaxInlineData/8 {
		t.Errorf("%d frames of %d inline bytes allocated %d bytes: the scratch buffer is not kept", n-1, MaxInlineData, got)
	}
}

// TestConnSizeDecodesInlineExtentsInPlace: with InlineReadBuf, an Extent
// carrying MaxInlineData bytes is decoded in the read buffer: the Data a
// view returns lies inside it, so no scratch buffer is filled and copied.
func TestConnSizeDecodesInlineExtentsInPlace(t *testing.T) {
	data := bytes.Repeat([]byte{9}, MaxInlineData)
	b := frames(t, &Extent{ID: 1, Length: MaxInlineData, Data: data}, &ReadDone{ID: 1, Bytes: MaxInlineData})
	for _, tc := range []struct {
		size    int
		inPlace bool
	}{{0, false}, {InlineReadBuf, true}} {
		c := NewConnSize(rw{bytes.NewReader(b), io.Discard}, tc.size)
		m, err := c.ReadMsgView()
		x, ok := m.(*Extent)
		if err != nil || !ok || !bytes.Equal(x.Data, data) {
			t.Fatalf("size %d: read %T, %v; want the Extent", tc.size, m, err)
		}
		if inPlace := c.rbuf == nil; inPlace != tc.inPlace {
			t.Errorf("size %d: decoded in the read buffer %v, want %v", tc.size, inPlace, tc.inPlace)
		}
		if m, err := c.ReadMsg(); err != nil || m.Type() != TypeReadDone {
			t.Fatalf("size %d: then read %v, %v; want the ReadDone", tc.size, m, err)
		}
	}
}

// TestConnFrameBuffered: true only while a whole frame is in the read
// buffer, so a ReadMsg then reads nothing from the connection.
func TestConnFrameBuffered(t *testing.T) {
	two := frames(t, &Ping{Seq: 1}, &Ping{Seq: 2})
	pr, pw := io.Pipe()
	c := NewConn(rw{pr, io.Discard})
	if c.FrameBuffered() {
		t.Fatal("nothing read yet, but a frame buffered")
	}
	go func() {
		pw.Write(two[:len(two)-1]) // the first frame, and the second but its last byte
		pw.Write(two[len(two)-1:])
	}()
	if m, err := c.ReadMsg(); err != nil || m.(*Ping).Seq != 1 {
		t.Fatalf("first frame: %v, %v", m, err)
	}
	if c.FrameBuffered() {
		t.Fatal("the second frame lacks a byte, but it is reported buffered")
	}
	if m, err := c.ReadMsg(); err != nil || m.(*Ping).Seq != 2 {
		t.Fatalf("second frame: %v, %v", m, err)
	}
	c = readerConn(two)
	if m, err := c.ReadMsg(); err != nil || m.(*Ping).Seq != 1 || !c.FrameBuffered() {
		t.Fatalf("both frames read at once: first %v, %v; second buffered %v, want true", m, err, c.FrameBuffered())
	}
}
