package blockproto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestPreambleRoundTrip(t *testing.T) {
	token := [TokenLen]byte{0: 0xaa, 7: 0x55, 15: 0x01}
	tests := []struct {
		name  string
		write func(io.Writer) error
		bytes string
		want  Preamble
	}{
		{"control", WriteControlPreamble, "BXC\x01\x00\x00\x00\x00", Preamble{Kind: KindControl, Version: Version}},
		{"data", func(w io.Writer) error { return WriteDataPreamble(w, token) },
			"BXD\x01\x00\x00\x00\x00" + string(token[:]), Preamble{Kind: KindData, Version: Version, Token: token}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			if err := tt.write(rec); err != nil {
				t.Fatal(err)
			}
			if len(rec.writes) != 1 || string(rec.writes[0]) != tt.bytes {
				t.Fatalf("wrote %q, want one write of %q", rec.writes, tt.bytes)
			}
			// Bytes after the preamble must be left for the next reader.
			r := bytes.NewReader(append(rec.writes[0], "NEXT"...))
			p, err := ReadPreamble(r)
			if err != nil {
				t.Fatal(err)
			}
			if p != tt.want {
				t.Errorf("ReadPreamble = %+v, want %+v", p, tt.want)
			}
			if rest, _ := io.ReadAll(r); string(rest) != "NEXT" {
				t.Errorf("ReadPreamble consumed too much: %q left", rest)
			}
		})
	}
	if PreambleLen != len("BXC\x01\x00\x00\x00\x00") {
		t.Errorf("PreambleLen %d", PreambleLen)
	}
}

func TestReadPreambleRejects(t *testing.T) {
	tok := string(make([]byte, TokenLen))
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", io.EOF},
		{"short", "BXC\x01", io.ErrUnexpectedEOF},
		{"http", "GET / HTTP/1.1\r\n", ErrBadPreamble},
		{"lower-case magic", "bxc\x01\x00\x00\x00\x00", ErrBadPreamble},
		{"other magic", "BXX\x01\x00\x00\x00\x00", ErrBadPreamble},
		{"control reserved", "BXC\x01\x00\x00\x01\x00", ErrBadPreamble},
		{"data reserved", "BXD\x01\x80\x00\x00\x00" + tok, ErrBadPreamble},
		{"control v2", "BXC\x02\x00\x00\x00\x00", ErrVersion},
		{"control v0", "BXC\x00\x00\x00\x00\x00", ErrVersion},
		{"data v2", "BXD\x02\x00\x00\x00\x00" + tok, ErrVersion},
		{"v2 with reserved bytes used", "BXC\x02\x01\x02\x03\x04", ErrVersion},
		{"data without token", "BXD\x01\x00\x00\x00\x00", io.ErrUnexpectedEOF},
		{"data with short token", "BXD\x01\x00\x00\x00\x00" + tok[:5], io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ReadPreamble(bytes.NewReader([]byte(tt.in)))
			if !errors.Is(err, tt.want) {
				t.Fatalf("ReadPreamble = %+v, %v; want error wrapping %v", p, err, tt.want)
			}
			if p != (Preamble{}) {
				t.Errorf("ReadPreamble returned %+v with an error", p)
			}
		})
	}
}

func TestVersionErrorNamesBothVersions(t *testing.T) {
	_, err := ReadPreamble(bytes.NewReader([]byte("BXD\x02\x00\x00\x00\x00")))
	var ve *VersionError
	if !errors.As(err, &ve) || ve.Peer != 2 || ve.Kind != KindData {
		t.Fatalf("error %v (%T), want *VersionError{Kind: data, Peer: 2}", err, err)
	}
	if want := "blockproto: peer speaks protocol version 2, this build speaks 1"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if errors.Is(err, ErrBadPreamble) {
		t.Errorf("a version mismatch also matches ErrBadPreamble")
	}
}

func TestDataKindAttach(t *testing.T) {
	tok := [TokenLen]byte{0: 0xaa, 15: 0xbb}
	for _, k := range []DataKind{DataPlain, DataDevmem, DataDevmemEmulated} {
		var b bytes.Buffer
		if err := WriteDataPreambleKind(&b, tok, k); err != nil {
			t.Fatal(err)
		}
		want := "4258440100000000" + "aa" + strings.Repeat("00", 14) + "bb" + fmt.Sprintf("%02x", byte(k))
		if got := hex.EncodeToString(b.Bytes()); got != want {
			t.Fatalf("%v: wrote %s, want %s", k, got, want)
		}
		b.WriteString("payload")
		p, err := ReadPreamble(&b)
		if err != nil || p.Kind != KindData || p.Token != tok {
			t.Fatalf("%v: ReadPreamble = %+v, %v", k, p, err)
		}
		got, err := ReadDataKind(&b)
		if err != nil || got != k {
			t.Fatalf("ReadDataKind = %v, %v; want %v", got, err, k)
		}
		if b.String() != "payload" {
			t.Fatalf("ReadDataKind consumed past its byte: %q left", b.String())
		}
	}
	if k, err := ReadDataKind(bytes.NewReader([]byte{3})); !errors.Is(err, ErrBadPreamble) {
		t.Fatalf("kind 3: %v, %v; want ErrBadPreamble", k, err)
	}
	if _, err := ReadDataKind(bytes.NewReader(nil)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("no kind byte: %v; want io.ErrUnexpectedEOF", err)
	}
	if DataPlain.Devmem() || !DataDevmem.Devmem() || !DataDevmemEmulated.Devmem() {
		t.Fatal("Devmem() wrong")
	}
	if s := DataKind(9).String(); s != "kind(9)" {
		t.Fatalf("DataKind(9) = %q", s)
	}
}

func TestWelcomeSmallReadOptional(t *testing.T) {
	base, err := Marshal(&Welcome{Tokens: [][TokenLen]byte{{}}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Unmarshal(base)
	if err != nil || m.(*Welcome).SmallRead != 0 {
		t.Fatalf("Welcome without SmallRead: %+v, %v", m, err)
	}
	for name, tail := range map[string][]byte{
		"zero":      make([]byte, 8),
		"truncated": {0, 0, 1},
		"trailing":  {0, 0, 0, 0, 0, 1, 0, 0, 9},
	} {
		if m, err := Unmarshal(append(slices.Clone(base), tail...)); !errors.Is(err, ErrMalformed) {
			t.Errorf("Welcome with %s SmallRead: %+v, %v; want ErrMalformed", name, m, err)
		}
	}
}
