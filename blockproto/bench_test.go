package blockproto

import (
	"io"
	"testing"
	"time"
)

var benchMsgs = []struct {
	name string
	msg  Msg
}{
	{"Extent", &Extent{ID: 77, DataConn: 3, StreamOffset: 1 << 33, VolumeOffset: 1 << 30, Length: 1 << 20, CRC32C: 0xe3069283}},
	{"Read", &Read{ID: 77, Volume: "models/llama-70b", Offset: 1 << 30, Length: 1 << 32, Deadline: time.Unix(1_800_000_000, 5)}},
}

func BenchmarkMarshal(b *testing.B) {
	for _, bm := range benchMsgs {
		b.Run(bm.name, func(b *testing.B) {
			frame, _ := AppendFrame(nil, bm.msg)
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Marshal(bm.msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	for _, bm := range benchMsgs {
		b.Run(bm.name, func(b *testing.B) {
			buf, _ := AppendFrame(nil, bm.msg)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = AppendFrame(buf[:0], bm.msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	for _, bm := range benchMsgs {
		b.Run(bm.name, func(b *testing.B) {
			frame, _ := AppendFrame(nil, bm.msg)
			body := frame[FrameHeaderLen:]
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Unmarshal(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRoundTrip encodes into a reused buffer and decodes: the per-frame
// cost of the codec on the control path.
func BenchmarkRoundTrip(b *testing.B) {
	for _, bm := range benchMsgs {
		b.Run(bm.name, func(b *testing.B) {
			buf, _ := AppendFrame(nil, bm.msg)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = AppendFrame(buf[:0], bm.msg)
				if _, err := Unmarshal(buf[FrameHeaderLen:]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// loop is an in-memory stream: writes append, reads consume.
type loop struct {
	buf []byte
	off int
}

func (l *loop) Write(p []byte) (int, error) {
	if l.off == len(l.buf) {
		l.buf, l.off = l.buf[:0], 0
	}
	l.buf = append(l.buf, p...)
	return len(p), nil
}

func (l *loop) Read(p []byte) (int, error) {
	if l.off == len(l.buf) {
		return 0, io.EOF
	}
	n := copy(p, l.buf[l.off:])
	l.off += n
	return n, nil
}

// BenchmarkConn measures WriteMsg then ReadMsg of one Extent through an
// in-memory stream.
func BenchmarkConn(b *testing.B) {
	m := benchMsgs[0].msg
	frame, _ := AppendFrame(nil, m)
	c := NewConn(&loop{})
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if err := c.WriteMsg(m); err != nil {
			b.Fatal(err)
		}
		if _, err := c.ReadMsg(); err != nil {
			b.Fatal(err)
		}
	}
}
