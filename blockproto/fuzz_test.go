package blockproto

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"slices"
	"testing"
)

// Without -fuzz these run their seed corpus as ordinary tests.

// fuzzSeeds returns valid frame bodies of every sample that is not too big
// to be a useful seed.
func fuzzSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	for _, s := range samples() {
		b, err := Marshal(s.msg)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) <= 8192 {
			seeds = append(seeds, b)
		}
	}
	return seeds
}

// checkReencode asserts the codec's round-trip property for a decoded
// message: it re-encodes, to the same bytes, and decodes to an equal value.
func checkReencode(t *testing.T, m Msg, body []byte) {
	t.Helper()
	again, err := Marshal(m)
	if err != nil {
		t.Fatalf("decoded %+v but Marshal fails: %v", m, err)
	}
	if body != nil && !bytes.Equal(again, body) {
		t.Fatalf("re-encoding differs:\nin  %x\nout %x", body, again)
	}
	m2, err := Unmarshal(again)
	if err != nil {
		t.Fatalf("Unmarshal(Marshal(m)): %v", err)
	}
	// The decoder normalises deadlines to UTC, so decoded values compare
	// with DeepEqual.
	if !reflect.DeepEqual(m, m2) {
		t.Fatalf("round trip changed the message:\n%+v\n%+v", m, m2)
	}
}

func knownCodecError(err error) bool {
	return errors.Is(err, ErrMalformed) || errors.Is(err, ErrUnknownType) || errors.Is(err, ErrFrameTooLarge)
}

func FuzzUnmarshal(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add([]byte{byte(TypeVolumeList), 0xff, 0xff})
	// Paging: an After or Next present but empty, longer than its bytes, a
	// Next that is not the last name, a Next without volumes.
	f.Add([]byte{byte(TypeListVolumes), 0, 0})
	f.Add([]byte{byte(TypeListVolumes), 0, 1, 'a'})
	f.Add([]byte{byte(TypeListVolumes), 0, 0x81, 'a'})
	f.Add([]byte{byte(TypeListVolumes), 0xff, 0xff, 'a'})
	f.Add([]byte{byte(TypeVolumeList), 0, 1, 0, 1, 'a', 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 'a'})
	f.Add([]byte{byte(TypeVolumeList), 0, 1, 0, 1, 'a', 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 'b'})
	f.Add([]byte{byte(TypeVolumeList), 0, 1, 0, 1, 'a', 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Add([]byte{byte(TypeVolumeList), 0, 0, 0, 1, 'a'})
	f.Add([]byte{byte(TypePutData), 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{byte(TypePutVolume), 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 'v', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0x10, 0, 2})
	f.Add([]byte{byte(TypeRead), 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 'v', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x80, 0, 0, 0, 0, 0, 0, 0})
	// Read.Flags: after a zero Generation, after a set one, zero (malformed).
	read := []byte{byte(TypeRead), 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 'v', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}
	f.Add(append(slices.Clone(read), 0, 0, 0, 0, 0, 0, 0, 0, 1))
	f.Add(append(slices.Clone(read), 0, 0, 0, 0, 0, 0, 0, 7, 0xff))
	f.Add(append(slices.Clone(read), 0, 0, 0, 0, 0, 0, 0, 7, 0))
	// Welcome.SmallRead: present, 0 (malformed), cut short.
	welcome := append([]byte{byte(TypeWelcome)}, make([]byte, MACLen)...)
	welcome = append(welcome, 0, 1)
	welcome = append(welcome, make([]byte, TokenLen)...)
	f.Add(append(slices.Clone(welcome), 0, 0, 0, 0, 0, 1, 0, 0))
	f.Add(append(slices.Clone(welcome), 0, 0, 0, 0, 0, 0, 0, 0))
	f.Add(append(slices.Clone(welcome), 0, 1))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := Unmarshal(body)
		if err != nil {
			if m != nil {
				t.Fatalf("Unmarshal returned %+v and %v", m, err)
			}
			if !knownCodecError(err) {
				t.Fatalf("Unmarshal error %v wraps no sentinel", err)
			}
			return
		}
		if m == nil {
			t.Fatal("Unmarshal returned nil, nil")
		}
		if m.Type() != Type(body[0]) {
			t.Fatalf("type byte %d decoded as %v", body[0], m.Type())
		}
		checkReencode(t, m, body)
		// The view decoding (ReadMsgView) gives the same message.
		if v, err := unmarshal(body, true); err != nil || !reflect.DeepEqual(v, m) {
			t.Fatalf("view decoding: %+v, %v; want %+v", v, err, m)
		}
	})
}

func FuzzReadMsg(f *testing.F) {
	seeds := fuzzSeeds(f)
	var all []byte
	for _, s := range seeds {
		all = append(all, header(uint32(len(s)))...)
		all = append(all, s...)
		f.Add(append(header(uint32(len(s))), s...))
	}
	f.Add(all)
	f.Add(header(0))
	f.Add(header(MaxFrame + 1))
	f.Add(append(header(3), 99, 0, 0))
	f.Fuzz(func(t *testing.T, stream []byte) {
		c, view := readerConn(stream), readerConn(stream)
		var prev error
		// Every frame, good or bad, consumes at least 5 bytes.
		for i := 0; ; i++ {
			if i > len(stream)/(FrameHeaderLen+1)+1 {
				t.Fatalf("ReadMsg returned %d results from %d bytes", i, len(stream))
			}
			m, err := c.ReadMsg()
			// ReadMsgView reads the same stream alike, its Extent's
			// Data valid until its next read.
			if v, verr := view.ReadMsgView(); !reflect.DeepEqual(v, m) || (verr == nil) != (err == nil) {
				t.Fatalf("ReadMsgView: %+v, %v; ReadMsg: %+v, %v", v, verr, m, err)
			}
			if err == io.EOF {
				return
			}
			if err != nil {
				if m != nil {
					t.Fatalf("ReadMsg returned %+v and %v", m, err)
				}
				if !knownCodecError(err) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("ReadMsg error %v wraps no expected error", err)
				}
				if err == prev {
					return // sticky: the stream lost frame alignment
				}
				prev = err
				continue
			}
			checkReencode(t, m, nil)
		}
	})
}

func FuzzReadPreamble(f *testing.F) {
	var tok [TokenLen]byte
	copy(tok[:], "0123456789abcdef")
	var ctl, data bytes.Buffer
	WriteControlPreamble(&ctl)
	WriteDataPreamble(&data, tok)
	f.Add(ctl.Bytes())
	f.Add(data.Bytes())
	f.Add(append(data.Bytes(), "payload"...))
	f.Add([]byte("BXC\x02\x00\x00\x00\x00"))
	f.Add([]byte("BXD\x01\x00\x00\x00\x00short"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	// The kind byte after the token (CapDataKinds): each kind, one no
	// version defines, and none.
	for _, k := range []byte{0, 1, 2, 3, 0xff} {
		f.Add(append(slices.Clone(data.Bytes()), k))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		p, err := ReadPreamble(r)
		if err != nil {
			if p != (Preamble{}) {
				t.Fatalf("ReadPreamble returned %+v and %v", p, err)
			}
			if !errors.Is(err, ErrBadPreamble) && !errors.Is(err, ErrVersion) &&
				!errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("ReadPreamble error %v wraps no expected error", err)
			}
			return
		}
		var out bytes.Buffer
		switch p.Kind {
		case KindControl:
			if p.Token != ([TokenLen]byte{}) {
				t.Fatalf("control preamble with token %x", p.Token)
			}
			WriteControlPreamble(&out)
		case KindData:
			WriteDataPreamble(&out, p.Token)
		default:
			t.Fatalf("kind %v", p.Kind)
		}
		if p.Version != Version {
			t.Fatalf("accepted version %d", p.Version)
		}
		if consumed := len(in) - r.Len(); !bytes.Equal(in[:consumed], out.Bytes()) {
			t.Fatalf("consumed %q, re-encoded %q", in[:consumed], out.Bytes())
		}
		if p.Kind != KindData {
			return
		}
		// What follows a data token when the session negotiated kinds.
		rest := r.Len()
		k, err := ReadDataKind(r)
		if err != nil {
			if !errors.Is(err, ErrBadPreamble) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("ReadDataKind error %v wraps no expected error", err)
			}
			return
		}
		if rest-r.Len() != 1 || k > MaxDataKind {
			t.Fatalf("ReadDataKind read %d bytes, kind %v", rest-r.Len(), k)
		}
		out.Reset()
		WriteDataPreambleKind(&out, p.Token, k)
		if consumed := len(in) - r.Len(); !bytes.Equal(in[:consumed], out.Bytes()) {
			t.Fatalf("consumed %q, re-encoded %q", in[:consumed], out.Bytes())
		}
	})
}
