package catalog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// sampleVolume returns a valid volume with n extents, the last one short.
func sampleVolume(name string, n int) *Volume {
	v := &Volume{
		Name:       name,
		ExtentSize: 8192,
		Size:       int64(n-1)*8192 + 100,
		Backing:    "/data/volumes/" + name + ".vol",
		Owned:      true,
		Generation: 7,
		Created:    time.Date(2026, 3, 4, 5, 6, 7, 891011121, time.UTC),
	}
	for i := range n {
		v.CRCs = append(v.CRCs, uint32(i)*0x9e3779b9)
	}
	return v
}

func mustEncode(t testing.TB, v *Volume) []byte {
	t.Helper()
	b, err := encodeVolume(v)
	if err != nil {
		t.Fatalf("encodeVolume: %v", err)
	}
	return b
}

// reseal replaces the record's trailing checksum with the correct one, so
// that a test (or the fuzzer) can reach the field checks behind it.
func reseal(b []byte) []byte {
	b = bytes.Clone(b)
	body := b[:len(b)-recordTrailer]
	binary.BigEndian.PutUint32(b[len(body):], crc32.Checksum(body, castagnoli))
	return b
}

func TestRecordRoundTrip(t *testing.T) {
	vs := []*Volume{
		sampleVolume("a", 1),
		sampleVolume(strings.Repeat("z", MaxNameLen), 5),
		{Name: "zero-time", Size: 1, ExtentSize: 4096, Backing: "/dev/sdb", CRCs: []uint32{0}},
		{
			Name: "max", Size: MaxExtentSize * 3, ExtentSize: MaxExtentSize,
			Backing: "/" + strings.Repeat("p", MaxBackingLen-1), CRCs: []uint32{1, 2, 3},
			Generation: 1<<64 - 1, Created: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		},
		{
			Name: "early", Size: 4096, ExtentSize: 4096, Backing: "/x", CRCs: []uint32{9},
			Created: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC),
		},
	}
	for _, v := range vs {
		b := mustEncode(t, v)
		got, err := decodeVolume(b)
		if err != nil {
			t.Fatalf("decode %q: %v", v.Name, err)
		}
		if diff := cmp.Diff(v, got); diff != "" {
			t.Errorf("decode(encode(%q)) mismatch (-want +got):\n%s", v.Name, diff)
		}
		if b2 := mustEncode(t, got); !bytes.Equal(b, b2) {
			t.Errorf("%q: re-encoding changed the bytes", v.Name)
		}
	}
}

func TestRecordLayout(t *testing.T) {
	v := sampleVolume("ab", 2)
	b := mustEncode(t, v)
	if want := 38 + 2 + 2 + 2 + len(v.Backing) + 4 + 2*4 + 4; len(b) != want {
		t.Fatalf("record is %d bytes, want %d", len(b), want)
	}
	if b[0] != 1 || b[1] != flagOwned {
		t.Errorf("version/flags = %d/%d, want 1/1", b[0], b[1])
	}
	if got := binary.BigEndian.Uint64(b[2:]); got != uint64(v.Size) {
		t.Errorf("size field = %d, want %d", got, v.Size)
	}
	if got := string(b[40:42]); got != "ab" {
		t.Errorf("name field = %q, want ab", got)
	}
}

func TestEncodeRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(v *Volume)
		want   error
	}{
		{"bad name", func(v *Volume) { v.Name = "../x" }, ErrBadName},
		{"zero size", func(v *Volume) { v.Size = 0 }, ErrInvalid},
		{"odd extent", func(v *Volume) { v.ExtentSize = 4097 }, ErrInvalid},
		{"too few CRCs", func(v *Volume) { v.CRCs = v.CRCs[1:] }, ErrInvalid},
		{"too many CRCs", func(v *Volume) { v.CRCs = append(v.CRCs, 1) }, ErrInvalid},
		{"relative backing", func(v *Volume) { v.Backing = "data/x.vol" }, ErrInvalid},
		{"unclean backing", func(v *Volume) { v.Backing = "/data/../x.vol" }, ErrInvalid},
		{"NUL backing", func(v *Volume) { v.Backing = "/da\x00ta" }, ErrInvalid},
		{"long backing", func(v *Volume) { v.Backing = "/" + strings.Repeat("p", MaxBackingLen) }, ErrInvalid},
		{"year 10000", func(v *Volume) { v.Created = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, ErrInvalid},
	}
	for _, tt := range tests {
		v := sampleVolume("ok", 3)
		tt.mutate(v)
		if _, err := encodeVolume(v); !errors.Is(err, tt.want) {
			t.Errorf("%s: encode error %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	good := mustEncode(t, sampleVolume("ok", 3))
	nameOff := recordFixed + 2
	backOff := nameOff + 2 + 2
	countOff := backOff + len("/data/volumes/ok.vol")
	tests := []struct {
		name string
		b    []byte // resealed unless noSeal
		edit func(b []byte) []byte
	}{
		{"version 0", nil, func(b []byte) []byte { b[0] = 0; return b }},
		{"version 2", nil, func(b []byte) []byte { b[0] = 2; return b }},
		{"unknown flag", nil, func(b []byte) []byte { b[1] = 2; return b }},
		{"negative size", nil, func(b []byte) []byte { b[2] = 0x80; return b }},
		{"extent size 4097", nil, func(b []byte) []byte { binary.BigEndian.PutUint64(b[10:], 4097); return b }},
		{"nanoseconds 1e9", nil, func(b []byte) []byte { binary.BigEndian.PutUint32(b[34:], 1e9); return b }},
		{"seconds too large", nil, func(b []byte) []byte { binary.BigEndian.PutUint64(b[26:], 1<<62); return b }},
		{"name length 0", nil, func(b []byte) []byte { binary.BigEndian.PutUint16(b[recordFixed:], 0); return b }},
		{"name length past end", nil, func(b []byte) []byte { binary.BigEndian.PutUint16(b[recordFixed:], 60000); return b }},
		{"name with slash", nil, func(b []byte) []byte { b[nameOff] = '/'; return b }},
		{"name starts with dot", nil, func(b []byte) []byte { b[nameOff] = '.'; return b }},
		{"relative backing", nil, func(b []byte) []byte { b[backOff] = 'd'; return b }},
		{"backing with NUL", nil, func(b []byte) []byte { b[backOff+3] = 0; return b }},
		{"count too small", nil, func(b []byte) []byte { binary.BigEndian.PutUint32(b[countOff:], 2); return b }},
		{"count huge", nil, func(b []byte) []byte { binary.BigEndian.PutUint32(b[countOff:], 1<<31); return b }},
		{"trailing byte", nil, func(b []byte) []byte {
			return append(b[:len(b)-4:len(b)-4], 0, 0, 0, 0, 0)
		}},
		{"truncated CRCs", nil, func(b []byte) []byte { return append(b[:len(b)-8:len(b)-8], 0, 0, 0, 0) }},
	}
	for _, tt := range tests {
		b := reseal(tt.edit(bytes.Clone(good)))
		v, err := decodeVolume(b)
		if err == nil || v != nil {
			t.Errorf("%s: decode = (%v, %v), want an error and nil", tt.name, v, err)
			continue
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: error %v does not wrap ErrCorrupt", tt.name, err)
		}
	}
	// Without resealing, every single-byte change is caught.
	for i := range good {
		b := bytes.Clone(good)
		b[i] ^= 0x20
		if v, err := decodeVolume(b); err == nil {
			t.Errorf("flipping byte %d went unnoticed: %+v", i, v)
		}
	}
	for _, b := range [][]byte{nil, {}, {1}, good[:recordMin-1], good[:len(good)-1]} {
		if _, err := decodeVolume(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("decode of %d bytes: %v, want ErrCorrupt", len(b), err)
		}
	}
}

// FuzzDecodeVolume checks that the decoder never panics, returns a volume
// exactly when it returns no error, and accepts only records that encode back
// to the same bytes. Each input is tried as is and with its checksum fixed,
// so the fuzzer also reaches the field checks behind the checksum.
func FuzzDecodeVolume(f *testing.F) {
	f.Add(mustEncode(f, sampleVolume("a", 1)))
	f.Add(mustEncode(f, sampleVolume("vol-2.x", 4)))
	f.Add(mustEncode(f, &Volume{Name: "dev", Size: 1 << 30, ExtentSize: 64 << 20, Backing: "/dev/nvme0n1",
		CRCs: make([]uint32, 16)}))
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add(bytes.Repeat([]byte{0xff}, 64))

	check := func(t *testing.T, b []byte) {
		v, err := decodeVolume(b)
		if err != nil {
			if v != nil {
				t.Fatalf("decode returned %+v with error %v", v, err)
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if v == nil {
			t.Fatal("decode returned nil volume and nil error")
		}
		enc, err := encodeVolume(v)
		if err != nil {
			t.Fatalf("decoded volume %+v does not encode: %v", v, err)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("re-encoding changed the record:\n in  %x\n out %x", b, enc)
		}
		v2, err := decodeVolume(enc)
		if err != nil {
			t.Fatalf("decode of re-encoded record: %v", err)
		}
		if diff := cmp.Diff(v, v2); diff != "" {
			t.Fatalf("second decode differs (-first +second):\n%s", diff)
		}
		if len(v.CRCs) != v.Extents() {
			t.Fatalf("%d CRCs for %d extents", len(v.CRCs), v.Extents())
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		check(t, b)
		if len(b) >= recordTrailer {
			check(t, reseal(b))
		}
	})
}

func BenchmarkDecodeVolume(b *testing.B) {
	rec := mustEncode(b, sampleVolume("bench", 1024))
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeVolume(rec); err != nil {
			b.Fatal(err)
		}
	}
}
