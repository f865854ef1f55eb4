package blockproto

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// sample is a named message used by several tests.
type sample struct {
	name string
	msg  Msg
}

// fill returns n bytes counting up from b.
func fill(n int, b byte) []byte {
	a := make([]byte, n)
	for i := range a {
		a[i] = b + byte(i)
	}
	return a
}

func tokens(n int) [][TokenLen]byte {
	t := make([][TokenLen]byte, n)
	for i := range t {
		t[i] = [TokenLen]byte(fill(TokenLen, byte(i*3)))
	}
	return t
}

func volumes(n, nameLen int) []VolumeStat {
	v := make([]VolumeStat, n)
	for i := range v {
		name := fmt.Sprintf("vol%05d-", i)
		name += strings.Repeat("x", nameLen-len(name))
		v[i] = VolumeStat{Name: name, Size: uint64(i) << 30, ExtentSize: MaxExtentLen, Generation: math.MaxUint64 - uint64(i)}
	}
	return v
}

// maxVolumeList returns the largest VolumeList: MaxVolumes entries with
// MaxName-byte names, and a Next.
func maxVolumeList() *VolumeList {
	vs := volumes(MaxVolumes, MaxName)
	return &VolumeList{Volumes: vs, Next: vs[len(vs)-1].Name}
}

// samples returns representative values of every message type, including
// every edge of every bound that a valid message may sit on.
func samples() []sample {
	deadline := time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.UTC)
	return []sample{
		{"Hello", &Hello{Caps: CapTCP | CapDevmemRX, Nonce: [NonceLen]byte(fill(NonceLen, 1)), Client: "blockcat on host-7"}},
		{"Hello/empty-client", &Hello{}},
		{"Hello/max-client-all-caps", &Hello{Caps: math.MaxUint64, Nonce: [NonceLen]byte(fill(NonceLen, 200)), Client: strings.Repeat("c", MaxName)}},
		{"Challenge", &Challenge{Caps: CapTCP | CapDevmemTX | CapEmulated, Nonce: [NonceLen]byte(fill(NonceLen, 7)), SessionID: 0xdeadbeefcafe, Server: "blockd-a"}},
		{"Challenge/max-server", &Challenge{SessionID: math.MaxUint64, Server: strings.Repeat("s", MaxName)}},
		{"Auth", &Auth{MAC: [MACLen]byte(fill(MACLen, 9))}},
		{"Welcome/one-token", &Welcome{MAC: [MACLen]byte(fill(MACLen, 11)), Tokens: tokens(1)}},
		{"Welcome/max-tokens", &Welcome{MAC: [MACLen]byte(fill(MACLen, 12)), Tokens: tokens(MaxDataConns)}},
		{"Welcome/small-read", &Welcome{MAC: [MACLen]byte(fill(MACLen, 13)), Tokens: tokens(2), SmallRead: 64 << 10}},
		{"DataAttached/0", &DataAttached{Index: 0}},
		{"DataAttached/max", &DataAttached{Index: MaxDataConns - 1}},
		{"ListVolumes", &ListVolumes{}},
		{"ListVolumes/after", &ListVolumes{After: "models/llama"}},
		{"ListVolumes/min-after", &ListVolumes{After: "\x00"}},
		{"ListVolumes/max-after", &ListVolumes{After: strings.Repeat("\xff", MaxName)}},
		{"VolumeList/empty", &VolumeList{}},
		{"VolumeList/two", &VolumeList{Volumes: []VolumeStat{
			{Name: "a", Size: 0, ExtentSize: 1, Generation: 0},
			{Name: "models/llama", Size: 1 << 40, ExtentSize: 4 << 20, Generation: 3},
		}}},
		{"VolumeList/two-next", &VolumeList{Volumes: []VolumeStat{
			{Name: "a", Size: 0, ExtentSize: 1, Generation: 0},
			{Name: "models/llama", Size: 1 << 40, ExtentSize: 4 << 20, Generation: 3},
		}, Next: "models/llama"}},
		{"VolumeList/one-next", &VolumeList{Volumes: []VolumeStat{{Name: "z", ExtentSize: 1}}, Next: "z"}},
		{"VolumeList/max", &VolumeList{Volumes: volumes(MaxVolumes, MaxName)}},
		{"VolumeList/max-next", maxVolumeList()},
		{"StatVolume/short", &StatVolume{Name: "v"}},
		{"StatVolume/max", &StatVolume{Name: strings.Repeat("n", MaxName)}},
		{"VolumeInfo", &VolumeInfo{Volume: VolumeStat{Name: "scratch", Size: 12345, ExtentSize: 1 << 20, Generation: 42}}},
		{"Read/no-deadline", &Read{ID: 1, Volume: "v", Offset: 0, Length: 1}},
		{"Read/deadline", &Read{ID: 77, Volume: "models/llama", Offset: 4096, Length: 1 << 30, Deadline: deadline}},
		{"Read/max", &Read{ID: math.MaxUint64, Volume: strings.Repeat("v", MaxName), Offset: math.MaxUint64 - MaxReadLen, Length: MaxReadLen, Deadline: time.Unix(0, math.MaxInt64).UTC()}},
		{"Read/earliest-deadline", &Read{ID: 2, Volume: "v", Length: 1, Deadline: time.Unix(0, 1).UTC()}},
		{"Read/generation", &Read{ID: 3, Volume: "v", Length: 1, Generation: 42}},
		{"Read/plain", &Read{ID: 3, Volume: "v", Length: 1, Flags: ReadPlain}},
		{"Read/generation-plain", &Read{ID: 3, Volume: "v", Length: 1, Generation: 42, Flags: ReadPlain}},
		{"Extent", &Extent{ID: 77, DataConn: 3, StreamOffset: 1 << 33, VolumeOffset: 4096, Length: 1 << 20, CRC32C: 0xe3069283}},
		{"Extent/min", &Extent{ID: 1, DataConn: 0, Length: 1}},
		{"Extent/inline", &Extent{ID: 5, VolumeOffset: 8192, Length: 5, CRC32C: 0x1234, Data: []byte("hello")}},
		{"Extent/inline-max", &Extent{ID: math.MaxUint64, VolumeOffset: 1 << 30, Length: MaxInlineData, Data: bytes.Repeat([]byte{0xa5}, MaxInlineData)}},
		{"Extent/max", &Extent{ID: math.MaxUint64, DataConn: MaxDataConns - 1, StreamOffset: math.MaxUint64 - MaxExtentLen, VolumeOffset: math.MaxUint64 - MaxExtentLen, Length: MaxExtentLen, CRC32C: math.MaxUint32}},
		{"ReadDone", &ReadDone{ID: 77, Bytes: 1 << 30}},
		{"ReadDone/zero-bytes", &ReadDone{ID: 1, Bytes: 0}},
		{"ReadDone/max", &ReadDone{ID: 1, Bytes: MaxReadLen}},
		{"Error", &Error{ID: 77, Code: CodeNotFound, Message: `no volume "scratch"`}},
		{"Error/session-empty", &Error{ID: 0, Code: CodeAuth}},
		{"Error/max-message", &Error{ID: 5, Code: CodeIO, Message: strings.Repeat("m", MaxMessage)}},
		{"Error/unknown-code", &Error{ID: 5, Code: 999, Message: "from a newer peer"}},
		{"Cancel", &Cancel{ID: 77}},
		{"Ping", &Ping{Seq: 0}},
		{"Pong", &Pong{Seq: math.MaxUint64}},
		{"Goodbye", &Goodbye{Reason: "draining for upgrade"}},
		{"Goodbye/empty", &Goodbye{}},
		{"Goodbye/max", &Goodbye{Reason: strings.Repeat("r", MaxMessage)}},
		{"PutVolume", &PutVolume{ID: 3, Name: "shard.ec", Size: 6 << 20, ExtentSize: 1 << 20}},
		{"PutVolume/replace-max", &PutVolume{ID: math.MaxUint64, Name: strings.Repeat("p", MaxName), Size: MaxPutSize, ExtentSize: MaxExtentLen, Replace: true}},
		{"PutVolume/min", &PutVolume{ID: 1, Name: "v", Size: 1, ExtentSize: 1}},
		{"PutAck/accept", &PutAck{ID: 3, Acked: 0, Window: 8 << 20}},
		{"PutAck/max", &PutAck{ID: math.MaxUint64, Acked: MaxPutSize, Window: MaxPutWindow}},
		{"PutData", &PutData{ID: 3, Offset: 1 << 20, Data: fill(4096, 5)}},
		{"PutData/min", &PutData{ID: 1, Offset: 0, Data: []byte{0}}},
		{"PutData/max", &PutData{ID: math.MaxUint64, Offset: MaxPutSize - MaxPutData, Data: make([]byte, MaxPutData)}},
		{"PutCommit", &PutCommit{ID: 3}},
		{"PutAbort", &PutAbort{ID: math.MaxUint64}},
		{"PutDone", &PutDone{ID: 3, Volume: VolumeStat{Name: "shard.ec", Size: 6 << 20, ExtentSize: 1 << 20, Generation: 9}}},
		{"PutError", &PutError{ID: 3, Code: CodeExists, Message: `volume "shard.ec" already exists`}},
		{"PutError/max-message", &PutError{ID: 1, Code: 999, Message: strings.Repeat("e", MaxMessage)}},
	}
}

// equalMsg compares messages, treating Read deadlines as equal when they name
// the same instant.
func equalMsg(a, b Msg) bool {
	ra, okA := a.(*Read)
	rb, okB := b.(*Read)
	if okA && okB {
		if !ra.Deadline.Equal(rb.Deadline) || ra.Deadline.IsZero() != rb.Deadline.IsZero() {
			return false
		}
		ca, cb := *ra, *rb
		ca.Deadline, cb.Deadline = time.Time{}, time.Time{}
		return reflect.DeepEqual(&ca, &cb)
	}
	return reflect.DeepEqual(a, b)
}

func TestSamplesCoverEveryType(t *testing.T) {
	seen := map[Type]bool{}
	for _, s := range samples() {
		seen[s.msg.Type()] = true
	}
	for typ := TypeHello; typ <= TypePutError; typ++ {
		if !seen[typ] {
			t.Errorf("no sample of %v", typ)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, s := range samples() {
		t.Run(s.name, func(t *testing.T) {
			body, err := Marshal(s.msg)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if Type(body[0]) != s.msg.Type() {
				t.Errorf("type byte %d, want %d", body[0], s.msg.Type())
			}
			if len(body) > MaxFrame {
				t.Errorf("body is %d bytes, more than MaxFrame", len(body))
			}
			got, err := Unmarshal(body)
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !equalMsg(s.msg, got) {
				t.Errorf("round trip changed the message:\nwant %+v\ngot  %+v", s.msg, got)
			}
			again, err := Marshal(got)
			if err != nil {
				t.Fatalf("Marshal of decoded: %v", err)
			}
			if !bytes.Equal(body, again) {
				t.Errorf("encoding is not canonical:\nfirst  %x\nsecond %x", body, again)
			}

			prefix := []byte("keep")
			frame, err := AppendFrame(prefix, s.msg)
			if err != nil {
				t.Fatalf("AppendFrame: %v", err)
			}
			if string(frame[:4]) != "keep" {
				t.Errorf("AppendFrame overwrote dst: %q", frame[:4])
			}
			frame = frame[4:]
			if n := binary.BigEndian.Uint32(frame); int(n) != len(body) {
				t.Errorf("length prefix %d, want %d", n, len(body))
			}
			if !bytes.Equal(frame[FrameHeaderLen:], body) {
				t.Errorf("AppendFrame body differs from Marshal")
			}
		})
	}
}

func TestReadDeadlineDecodesUTC(t *testing.T) {
	loc := time.FixedZone("UTC+5", 5*3600)
	d := time.Now().In(loc).Add(time.Minute) // has a monotonic reading and a zone
	body, err := Marshal(&Read{ID: 1, Volume: "v", Length: 1, Deadline: d})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Unmarshal(body)
	if err != nil {
		t.Fatal(err)
	}
	got := m.(*Read).Deadline
	if !got.Equal(d) || got.Location() != time.UTC || got.UnixNano() != d.UnixNano() {
		t.Errorf("deadline %v (%v), want %v in UTC", got, got.Location(), d)
	}
}

// wire builds bytes by hand, independently of the encoder under test.
type wire []byte

func msgOf(t Type) wire          { return wire{byte(t)} }
func (w wire) u8(v uint8) wire   { return append(w, v) }
func (w wire) u16(v uint16) wire { return binary.BigEndian.AppendUint16(w, v) }
func (w wire) u32(v uint32) wire { return binary.BigEndian.AppendUint32(w, v) }
func (w wire) u64(v uint64) wire { return binary.BigEndian.AppendUint64(w, v) }
func (w wire) zeros(n int) wire  { return append(w, make([]byte, n)...) }
func (w wire) str(s string) wire { return append(w.u16(uint16(len(s))), s...) }
func (w wire) repeat(n int) wire { return w.str(strings.Repeat("z", n)) }
func (w wire) stat(name string, extentSize uint32) wire {
	return w.str(name).u64(1).u32(extentSize).u64(2)
}

// TestGolden pins the byte layout documented in docs/protocol.md.
func TestGolden(t *testing.T) {
	tests := []struct {
		msg Msg
		hex string
	}{
		{&Extent{ID: 0x0102030405060708, DataConn: 3, StreamOffset: 0x10, VolumeOffset: 0x2000, Length: 0x100000, CRC32C: 0xaabbccdd},
			"0b" + "0102030405060708" + "0003" + "0000000000000010" + "0000000000002000" + "00100000" + "aabbccdd"},
		{&Extent{ID: 9, VolumeOffset: 0x2000, Length: 4, CRC32C: 0xaabbccdd, Data: []byte{1, 2, 3, 4}},
			"0b" + "0000000000000009" + "0000" + "0000000000000000" + "0000000000002000" + "00000004" + "aabbccdd" + "01020304"},
		{&Read{ID: 9, Volume: "vol", Offset: 4096, Length: 8192, Deadline: time.Unix(0, 1_700_000_000_000_000_000)},
			"0a" + "0000000000000009" + "0003" + "766f6c" + "0000000000001000" + "0000000000002000" + "17979cfe362a0000"},
		{&Read{ID: 9, Volume: "vol", Offset: 4096, Length: 8192, Flags: ReadPlain},
			"0a" + "0000000000000009" + "0003" + "766f6c" + "0000000000001000" + "0000000000002000" + "0000000000000000" + "0000000000000000" + "01"},
		{&Read{ID: 9, Volume: "vol", Offset: 4096, Length: 8192},
			"0a" + "0000000000000009" + "0003" + "766f6c" + "0000000000001000" + "0000000000002000" + "0000000000000000"},
		{&Error{ID: 0, Code: CodeAuth, Message: "bad key"},
			"0d" + "0000000000000000" + "0003" + "0007" + "626164206b6579"},
		{&Welcome{MAC: [MACLen]byte{31: 0xff}, Tokens: [][TokenLen]byte{{0: 1}, {15: 2}}},
			"04" + strings.Repeat("00", 31) + "ff" + "0002" + "01" + strings.Repeat("00", 15) + strings.Repeat("00", 15) + "02"},
		{&Welcome{MAC: [MACLen]byte{31: 0xff}, Tokens: [][TokenLen]byte{{0: 1}}, SmallRead: 0x10000},
			"04" + strings.Repeat("00", 31) + "ff" + "0001" + "01" + strings.Repeat("00", 15) + "0000000000010000"},
		{&VolumeList{Volumes: []VolumeStat{{Name: "a", Size: 5, ExtentSize: 4096, Generation: 1}}},
			"07" + "0001" + "0001" + "61" + "0000000000000005" + "00001000" + "0000000000000001"},
		{&Hello{Caps: CapTCP | CapDevmemRX, Client: "c"},
			"01" + "0000000000000003" + strings.Repeat("00", 32) + "0001" + "63"},
		{&ListVolumes{}, "06"},
		{&ListVolumes{After: "a"}, "06" + "0001" + "61"},
		{&VolumeList{Volumes: []VolumeStat{{Name: "a", Size: 5, ExtentSize: 4096, Generation: 1}, {Name: "b", Size: 5, ExtentSize: 4096, Generation: 2}}, Next: "b"},
			"07" + "0002" + "0001" + "61" + "0000000000000005" + "00001000" + "0000000000000001" +
				"0001" + "62" + "0000000000000005" + "00001000" + "0000000000000002" + "0001" + "62"},
		{&PutVolume{ID: 7, Name: "v.ec", Size: 0x300000, ExtentSize: 0x100000, Replace: true},
			"12" + "0000000000000007" + "0004" + "762e6563" + "0000000000300000" + "00100000" + "01"},
		{&PutAck{ID: 7, Acked: 0x100000, Window: 0x800000},
			"13" + "0000000000000007" + "0000000000100000" + "00800000"},
		{&PutData{ID: 7, Offset: 0x1000, Data: []byte("abc")},
			"14" + "0000000000000007" + "0000000000001000" + "00000003" + "616263"},
		{&PutCommit{ID: 7}, "15" + "0000000000000007"},
		{&PutAbort{ID: 7}, "16" + "0000000000000007"},
		{&PutDone{ID: 7, Volume: VolumeStat{Name: "a", Size: 5, ExtentSize: 4096, Generation: 1}},
			"17" + "0000000000000007" + "0001" + "61" + "0000000000000005" + "00001000" + "0000000000000001"},
		{&PutError{ID: 7, Code: CodeExists, Message: "taken"},
			"18" + "0000000000000007" + "000c" + "0005" + "74616b656e"},
	}
	for _, tt := range tests {
		t.Run(tt.msg.Type().String(), func(t *testing.T) {
			body, err := Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(body); got != tt.hex {
				t.Errorf("Marshal:\ngot  %s\nwant %s", got, tt.hex)
			}
			want, _ := hex.DecodeString(tt.hex)
			m, err := Unmarshal(want)
			if err != nil {
				t.Fatal(err)
			}
			if !equalMsg(m, tt.msg) {
				t.Errorf("Unmarshal = %+v, want %+v", m, tt.msg)
			}
			frame, err := AppendFrame(nil, tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(frame); got != fmt.Sprintf("%08x", len(want))+tt.hex {
				t.Errorf("AppendFrame = %s", got)
			}
		})
	}
}

// TestUnmarshalRejects feeds hand-built bodies that break one rule each.
func TestUnmarshalRejects(t *testing.T) {
	extent := func(id uint64, conn uint16, so, vo uint64, n uint32) wire {
		return msgOf(TypeExtent).u64(id).u16(conn).u64(so).u64(vo).u32(n).u32(0)
	}
	read := func(id uint64, vol string, off, n uint64, dl uint64) wire {
		return msgOf(TypeRead).u64(id).str(vol).u64(off).u64(n).u64(dl)
	}
	tests := []struct {
		name string
		body []byte
		want error
	}{
		{"empty body", nil, ErrMalformed},
		{"type 0", msgOf(0), ErrUnknownType},
		{"type 25", msgOf(25).u64(1), ErrUnknownType},
		{"type 255", msgOf(255), ErrUnknownType},
		{"Hello client too long", msgOf(TypeHello).u64(0).zeros(NonceLen).repeat(MaxName + 1), ErrMalformed},
		{"Hello client length without bytes", msgOf(TypeHello).u64(0).zeros(NonceLen).u16(math.MaxUint16), ErrMalformed},
		{"Challenge server too long", msgOf(TypeChallenge).u64(0).zeros(NonceLen).u64(1).repeat(MaxName + 1), ErrMalformed},
		{"Welcome no tokens", msgOf(TypeWelcome).zeros(MACLen).u16(0), ErrMalformed},
		{"Welcome too many tokens", msgOf(TypeWelcome).zeros(MACLen).u16(MaxDataConns + 1).zeros((MaxDataConns + 1) * TokenLen), ErrMalformed},
		{"Welcome count beyond bytes", msgOf(TypeWelcome).zeros(MACLen).u16(2).zeros(TokenLen), ErrMalformed},
		{"Welcome huge count", msgOf(TypeWelcome).zeros(MACLen).u16(math.MaxUint16), ErrMalformed},
		{"DataAttached index too big", msgOf(TypeDataAttached).u16(MaxDataConns), ErrMalformed},
		{"VolumeList too many", msgOf(TypeVolumeList).u16(MaxVolumes + 1), ErrMalformed},
		{"VolumeList count beyond bytes", msgOf(TypeVolumeList).u16(MaxVolumes).stat("a", 1), ErrMalformed},
		{"VolumeList empty name", msgOf(TypeVolumeList).u16(1).stat("", 1), ErrMalformed},
		{"VolumeList name too long", msgOf(TypeVolumeList).u16(1).stat(strings.Repeat("a", MaxName+1), 1), ErrMalformed},
		{"VolumeList zero extent size", msgOf(TypeVolumeList).u16(1).stat("a", 0), ErrMalformed},
		{"VolumeList extent size too big", msgOf(TypeVolumeList).u16(1).stat("a", MaxExtentLen+1), ErrMalformed},
		{"VolumeList empty Next present", msgOf(TypeVolumeList).u16(1).stat("a", 1).str(""), ErrMalformed},
		{"VolumeList Next too long", msgOf(TypeVolumeList).u16(1).stat(strings.Repeat("z", MaxName), 1).repeat(MaxName + 1), ErrMalformed},
		{"VolumeList Next not the last name", msgOf(TypeVolumeList).u16(2).stat("a", 1).stat("b", 1).str("a"), ErrMalformed},
		{"VolumeList Next past the last name", msgOf(TypeVolumeList).u16(1).stat("a", 1).str("b"), ErrMalformed},
		{"VolumeList Next without volumes", msgOf(TypeVolumeList).u16(0).str("a"), ErrMalformed},
		{"VolumeList Next length beyond bytes", msgOf(TypeVolumeList).u16(1).stat("a", 1).u16(2).u8('a'), ErrMalformed},
		{"VolumeList Next length cut", msgOf(TypeVolumeList).u16(1).stat("a", 1).u8(0), ErrMalformed},
		{"VolumeList trailing after Next", msgOf(TypeVolumeList).u16(1).stat("a", 1).str("a").u8(0), ErrMalformed},
		{"StatVolume empty name", msgOf(TypeStatVolume).str(""), ErrMalformed},
		{"StatVolume name too long", msgOf(TypeStatVolume).repeat(MaxName + 1), ErrMalformed},
		{"VolumeInfo empty name", msgOf(TypeVolumeInfo).stat("", 1), ErrMalformed},
		{"VolumeInfo zero extent size", msgOf(TypeVolumeInfo).stat("v", 0), ErrMalformed},
		{"Read ID 0", read(0, "v", 0, 1, 0), ErrMalformed},
		{"Read empty volume", read(1, "", 0, 1, 0), ErrMalformed},
		{"Read volume too long", read(1, strings.Repeat("v", MaxName+1), 0, 1, 0), ErrMalformed},
		{"Read length 0", read(1, "v", 0, 0, 0), ErrMalformed},
		{"Read length too big", read(1, "v", 0, MaxReadLen+1, 0), ErrMalformed},
		{"Read range overflows", read(1, "v", math.MaxUint64-MaxReadLen+1, MaxReadLen, 0), ErrMalformed},
		{"Read negative deadline", read(1, "v", 0, 1, 1<<63), ErrMalformed},
		{"Read deadline -1", read(1, "v", 0, 1, math.MaxUint64), ErrMalformed},
		{"Extent ID 0", extent(0, 0, 0, 0, 1), ErrMalformed},
		{"Extent data conn too big", extent(1, MaxDataConns, 0, 0, 1), ErrMalformed},
		{"Extent length 0", extent(1, 0, 0, 0, 0), ErrMalformed},
		{"Extent length too big", extent(1, 0, 0, 0, MaxExtentLen+1), ErrMalformed},
		{"Extent stream range overflows", extent(1, 0, math.MaxUint64, 0, 1), ErrMalformed},
		{"Extent inline data shorter than Length", extent(1, 0, 0, 0, 4).zeros(3), ErrMalformed},
		{"Extent inline data longer than Length", extent(1, 0, 0, 0, 4).zeros(5), ErrMalformed},
		{"Extent inline data over MaxInlineData", extent(1, 0, 0, 0, MaxInlineData+1).zeros(MaxInlineData + 1), ErrMalformed},
		{"Extent inline data on a data connection", extent(1, 2, 0, 0, 4).zeros(4), ErrMalformed},
		{"Extent inline data at a stream offset", extent(1, 0, 8, 0, 4).zeros(4), ErrMalformed},
		{"Extent volume range overflows", extent(1, 0, 0, math.MaxUint64-MaxExtentLen+1, MaxExtentLen), ErrMalformed},
		{"ReadDone ID 0", msgOf(TypeReadDone).u64(0).u64(1), ErrMalformed},
		{"ReadDone bytes too big", msgOf(TypeReadDone).u64(1).u64(MaxReadLen + 1), ErrMalformed},
		{"Error code 0", msgOf(TypeError).u64(1).u16(0).str("x"), ErrMalformed},
		{"Error message too long", msgOf(TypeError).u64(1).u16(uint16(CodeIO)).repeat(MaxMessage + 1), ErrMalformed},
		{"Cancel ID 0", msgOf(TypeCancel).u64(0), ErrMalformed},
		{"Goodbye reason too long", msgOf(TypeGoodbye).repeat(MaxMessage + 1), ErrMalformed},
		{"ListVolumes trailing byte", msgOf(TypeListVolumes).u8(0), ErrMalformed},
		{"Read generation 0", msgOf(TypeRead).u64(1).str("v").u64(0).u64(1).u64(0).u64(0), ErrMalformed},
		{"ListVolumes empty After present", msgOf(TypeListVolumes).str(""), ErrMalformed},
		{"ListVolumes After too long", msgOf(TypeListVolumes).repeat(MaxName + 1), ErrMalformed},
		{"ListVolumes After length beyond bytes", msgOf(TypeListVolumes).u16(3).u8('a'), ErrMalformed},
		{"ListVolumes trailing after After", msgOf(TypeListVolumes).str("a").u8(0), ErrMalformed},
		{"Ping short", msgOf(TypePing).u32(1), ErrMalformed},
		{"PutVolume ID 0", msgOf(TypePutVolume).u64(0).str("v").u64(1).u32(1).u8(0), ErrMalformed},
		{"PutVolume empty name", msgOf(TypePutVolume).u64(1).str("").u64(1).u32(1).u8(0), ErrMalformed},
		{"PutVolume size 0", msgOf(TypePutVolume).u64(1).str("v").u64(0).u32(1).u8(0), ErrMalformed},
		{"PutVolume size too big", msgOf(TypePutVolume).u64(1).str("v").u64(MaxPutSize + 1).u32(1).u8(0), ErrMalformed},
		{"PutVolume extent size 0", msgOf(TypePutVolume).u64(1).str("v").u64(1).u32(0).u8(0), ErrMalformed},
		{"PutVolume extent size too big", msgOf(TypePutVolume).u64(1).str("v").u64(1).u32(MaxExtentLen + 1).u8(0), ErrMalformed},
		{"PutVolume replace 2", msgOf(TypePutVolume).u64(1).str("v").u64(1).u32(1).u8(2), ErrMalformed},
		{"PutVolume no replace byte", msgOf(TypePutVolume).u64(1).str("v").u64(1).u32(1), ErrMalformed},
		{"PutAck ID 0", msgOf(TypePutAck).u64(0).u64(0).u32(1), ErrMalformed},
		{"PutAck window 0", msgOf(TypePutAck).u64(1).u64(0).u32(0), ErrMalformed},
		{"PutAck window too big", msgOf(TypePutAck).u64(1).u64(0).u32(MaxPutWindow + 1), ErrMalformed},
		{"PutAck acked too big", msgOf(TypePutAck).u64(1).u64(MaxPutSize + 1).u32(1), ErrMalformed},
		{"PutData ID 0", msgOf(TypePutData).u64(0).u64(0).u32(1).u8(0), ErrMalformed},
		{"PutData empty", msgOf(TypePutData).u64(1).u64(0).u32(0), ErrMalformed},
		{"PutData too long", msgOf(TypePutData).u64(1).u64(0).u32(MaxPutData + 1).zeros(MaxPutData + 1), ErrMalformed},
		{"PutData length beyond bytes", msgOf(TypePutData).u64(1).u64(0).u32(4).u8(0), ErrMalformed},
		{"PutData huge length", msgOf(TypePutData).u64(1).u64(0).u32(math.MaxUint32), ErrMalformed},
		{"PutData past max size", msgOf(TypePutData).u64(1).u64(MaxPutSize).u32(1).u8(0), ErrMalformed},
		{"PutCommit ID 0", msgOf(TypePutCommit).u64(0), ErrMalformed},
		{"PutAbort ID 0", msgOf(TypePutAbort).u64(0), ErrMalformed},
		{"PutDone ID 0", msgOf(TypePutDone).u64(0).stat("v", 1), ErrMalformed},
		{"PutDone zero extent size", msgOf(TypePutDone).u64(1).stat("v", 0), ErrMalformed},
		{"PutError ID 0", msgOf(TypePutError).u64(0).u16(uint16(CodeIO)).str("x"), ErrMalformed},
		{"PutError code 0", msgOf(TypePutError).u64(1).u16(0).str("x"), ErrMalformed},
		{"PutError message too long", msgOf(TypePutError).u64(1).u16(uint16(CodeIO)).repeat(MaxMessage + 1), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Unmarshal(tt.body)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Unmarshal = %v, %v; want error wrapping %v", m, err, tt.want)
			}
			if m != nil {
				t.Errorf("Unmarshal returned message %+v with error", m)
			}
			if !strings.HasPrefix(err.Error(), "blockproto: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestUnknownTypeNamesNumber(t *testing.T) {
	_, err := Unmarshal([]byte{200, 1, 2})
	if !errors.Is(err, ErrUnknownType) || !strings.Contains(err.Error(), "200") {
		t.Errorf("Unmarshal = %v, want ErrUnknownType naming 200", err)
	}
}

// withoutOptional returns the length of m's body without its optional last
// field (ListVolumes.After, VolumeList.Next, Read.Generation,
// Welcome.SmallRead), and m without that field; or
// -1 and nil if m has none set.
func withoutOptional(m Msg, body []byte) (int, Msg) {
	switch m := m.(type) {
	case *ListVolumes:
		if m.After != "" {
			return 1, &ListVolumes{}
		}
	case *VolumeList:
		if m.Next != "" {
			return len(body) - 2 - len(m.Next), &VolumeList{Volumes: m.Volumes}
		}
	case *Extent:
		if m.Data != nil {
			short := *m
			short.Data = nil
			return len(body) - len(m.Data), &short
		}
	case *Read:
		if m.Flags != 0 {
			short := *m
			short.Flags = 0
			if short.Generation == 0 {
				return len(body) - 9, &short
			}
			return len(body) - 1, &short
		}
		if m.Generation != 0 {
			short := *m
			short.Generation = 0
			return len(body) - 8, &short
		}
	case *Welcome:
		if m.SmallRead != 0 {
			short := *m
			short.SmallRead = 0
			return len(body) - 8, &short
		}
	}
	return -1, nil
}

// TestUnmarshalTrailingAndTruncated cuts every sample at every byte and
// appends a byte to it: all must be rejected as malformed, except the one
// cut that drops an optional last field whole, which must decode as the
// message without it.
func TestUnmarshalTrailingAndTruncated(t *testing.T) {
	for _, s := range samples() {
		t.Run(s.name, func(t *testing.T) {
			body, err := Marshal(s.msg)
			if err != nil {
				t.Fatal(err)
			}
			optCut, shorter := withoutOptional(s.msg, body)
			if optCut >= 0 {
				if m, err := Unmarshal(body[:optCut]); err != nil || !equalMsg(m, shorter) {
					t.Errorf("without its optional field: Unmarshal = %+v, %v; want %+v", m, err, shorter)
				}
			}
			rd, _ := s.msg.(*Read)
			ext, _ := s.msg.(*Extent)
			for _, extra := range [][]byte{{0}, {0xff}, make([]byte, 100)} {
				if rd != nil && rd.Generation != 0 && rd.Flags == 0 && len(extra) == 1 && extra[0] != 0 {
					continue // a non-zero byte after Generation is Read.Flags
				}
				if ext != nil && ext.Data == nil && ext.DataConn == 0 && ext.StreamOffset == 0 && int(ext.Length) == len(extra) {
					continue // Length bytes after an Extent on stream 0 at 0 are its inline data
				}
				long := append(bytes.Clone(body), extra...)
				if m, err := Unmarshal(long); !errors.Is(err, ErrMalformed) || m != nil {
					t.Errorf("with %d trailing bytes: Unmarshal = %v, %v; want ErrMalformed", len(extra), m, err)
				}
			}
			for _, cut := range cutPoints(len(body)) {
				if cut == optCut || rd != nil && rd.Generation != 0 && rd.Flags != 0 && cut == len(body)-9 {
					continue // also valid: without Generation and Flags
				}
				if m, err := Unmarshal(body[:cut]); !errors.Is(err, ErrMalformed) || m != nil {
					t.Fatalf("cut at %d of %d: Unmarshal = %v, %v; want ErrMalformed", cut, len(body), m, err)
				}
			}
		})
	}
}

// cutPoints returns every length 0..n-1 for bodies up to 4 KiB. For larger
// ones (the biggest samples) it returns the first and last 512 cuts and 128
// spread between them, which still reach every field of the repeated items.
func cutPoints(n int) []int {
	var cuts []int
	if n <= 4096 {
		for i := range n {
			cuts = append(cuts, i)
		}
		return cuts
	}
	for i := range 512 {
		cuts = append(cuts, i, n-1-i)
	}
	for i := range 128 {
		cuts = append(cuts, 512+i*(n-1024)/128+i%7)
	}
	return cuts
}

type foreignMsg struct{}

func (foreignMsg) Type() Type { return TypePing }

// TestMarshalRejects checks that the encoder refuses what the decoder would
// refuse, so a bad message is caught at the sender.
func TestMarshalRejects(t *testing.T) {
	long := func(n int) string { return strings.Repeat("q", n) }
	okStat := VolumeStat{Name: "v", ExtentSize: 1}
	tests := []struct {
		name string
		msg  Msg
		want error
	}{
		{"nil", nil, ErrMalformed},
		{"typed nil Extent", (*Extent)(nil), ErrMalformed},
		{"typed nil Hello", (*Hello)(nil), ErrMalformed},
		{"typed nil Goodbye", (*Goodbye)(nil), ErrMalformed},
		{"foreign type", foreignMsg{}, ErrUnknownType},
		{"Hello client too long", &Hello{Client: long(MaxName + 1)}, ErrMalformed},
		{"Challenge server too long", &Challenge{Server: long(MaxName + 1)}, ErrMalformed},
		{"Welcome no tokens", &Welcome{}, ErrMalformed},
		{"Welcome too many tokens", &Welcome{Tokens: tokens(MaxDataConns + 1)}, ErrMalformed},
		{"DataAttached index", &DataAttached{Index: MaxDataConns}, ErrMalformed},
		{"VolumeList too many", &VolumeList{Volumes: volumes(MaxVolumes+1, 10)}, ErrMalformed},
		{"VolumeList empty name", &VolumeList{Volumes: []VolumeStat{okStat, {ExtentSize: 1}}}, ErrMalformed},
		{"VolumeList name too long", &VolumeList{Volumes: []VolumeStat{{Name: long(MaxName + 1), ExtentSize: 1}}}, ErrMalformed},
		{"VolumeList extent size 0", &VolumeList{Volumes: []VolumeStat{{Name: "v"}}}, ErrMalformed},
		{"VolumeList Next without volumes", &VolumeList{Next: "v"}, ErrMalformed},
		{"VolumeList Next not the last name", &VolumeList{Volumes: []VolumeStat{okStat, {Name: "w", ExtentSize: 1}}, Next: "v"}, ErrMalformed},
		{"VolumeList Next too long", &VolumeList{Volumes: []VolumeStat{okStat}, Next: long(MaxName + 1)}, ErrMalformed},
		{"typed nil ListVolumes", (*ListVolumes)(nil), ErrMalformed},
		{"ListVolumes After too long", &ListVolumes{After: long(MaxName + 1)}, ErrMalformed},
		{"VolumeInfo extent size too big", &VolumeInfo{Volume: VolumeStat{Name: "v", ExtentSize: MaxExtentLen + 1}}, ErrMalformed},
		{"StatVolume empty", &StatVolume{}, ErrMalformed},
		{"StatVolume too long", &StatVolume{Name: long(MaxName + 1)}, ErrMalformed},
		{"Read ID 0", &Read{Volume: "v", Length: 1}, ErrMalformed},
		{"Read empty volume", &Read{ID: 1, Length: 1}, ErrMalformed},
		{"Read volume too long", &Read{ID: 1, Volume: long(MaxName + 1), Length: 1}, ErrMalformed},
		{"Read length 0", &Read{ID: 1, Volume: "v"}, ErrMalformed},
		{"Read length too big", &Read{ID: 1, Volume: "v", Length: MaxReadLen + 1}, ErrMalformed},
		{"Read range overflows", &Read{ID: 1, Volume: "v", Offset: math.MaxUint64, Length: 1}, ErrMalformed},
		{"Read deadline at epoch", &Read{ID: 1, Volume: "v", Length: 1, Deadline: time.Unix(0, 0)}, ErrMalformed},
		{"Read deadline before epoch", &Read{ID: 1, Volume: "v", Length: 1, Deadline: time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)}, ErrMalformed},
		{"Read deadline past int64", &Read{ID: 1, Volume: "v", Length: 1, Deadline: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)}, ErrMalformed},
		{"Extent ID 0", &Extent{Length: 1}, ErrMalformed},
		{"Extent data conn", &Extent{ID: 1, DataConn: MaxDataConns, Length: 1}, ErrMalformed},
		{"Extent length 0", &Extent{ID: 1}, ErrMalformed},
		{"Extent length too big", &Extent{ID: 1, Length: MaxExtentLen + 1}, ErrMalformed},
		{"Extent stream overflow", &Extent{ID: 1, Length: 2, StreamOffset: math.MaxUint64 - 1}, ErrMalformed},
		{"Extent volume overflow", &Extent{ID: 1, Length: 2, VolumeOffset: math.MaxUint64 - 1}, ErrMalformed},
		{"ReadDone ID 0", &ReadDone{}, ErrMalformed},
		{"ReadDone bytes", &ReadDone{ID: 1, Bytes: MaxReadLen + 1}, ErrMalformed},
		{"Error code 0", &Error{Message: "x"}, ErrMalformed},
		{"Error message too long", &Error{Code: CodeIO, Message: long(MaxMessage + 1)}, ErrMalformed},
		{"Cancel ID 0", &Cancel{}, ErrMalformed},
		{"Goodbye too long", &Goodbye{Reason: long(MaxMessage + 1)}, ErrMalformed},
		{"typed nil PutData", (*PutData)(nil), ErrMalformed},
		{"PutVolume ID 0", &PutVolume{Name: "v", Size: 1, ExtentSize: 1}, ErrMalformed},
		{"PutVolume no name", &PutVolume{ID: 1, Size: 1, ExtentSize: 1}, ErrMalformed},
		{"PutVolume size 0", &PutVolume{ID: 1, Name: "v", ExtentSize: 1}, ErrMalformed},
		{"PutVolume size too big", &PutVolume{ID: 1, Name: "v", Size: MaxPutSize + 1, ExtentSize: 1}, ErrMalformed},
		{"PutVolume extent size 0", &PutVolume{ID: 1, Name: "v", Size: 1}, ErrMalformed},
		{"PutAck window 0", &PutAck{ID: 1}, ErrMalformed},
		{"PutAck acked too big", &PutAck{ID: 1, Acked: MaxPutSize + 1, Window: 1}, ErrMalformed},
		{"PutData empty", &PutData{ID: 1}, ErrMalformed},
		{"PutData too long", &PutData{ID: 1, Data: make([]byte, MaxPutData+1)}, ErrMalformed},
		{"PutData past max size", &PutData{ID: 1, Offset: MaxPutSize, Data: []byte{1}}, ErrMalformed},
		{"PutCommit ID 0", &PutCommit{}, ErrMalformed},
		{"PutAbort ID 0", &PutAbort{}, ErrMalformed},
		{"PutDone bad stat", &PutDone{ID: 1, Volume: VolumeStat{Name: "v"}}, ErrMalformed},
		{"PutError ID 0", &PutError{Code: CodeIO}, ErrMalformed},
		{"PutError code 0", &PutError{ID: 1}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Marshal(tt.msg)
			if !errors.Is(err, tt.want) || b != nil {
				t.Errorf("Marshal = %x, %v; want error wrapping %v", b, err, tt.want)
			}
			dst := []byte("prefix")
			got, err := AppendFrame(dst, tt.msg)
			if !errors.Is(err, tt.want) {
				t.Errorf("AppendFrame error %v, want %v", err, tt.want)
			}
			if string(got) != "prefix" {
				t.Errorf("AppendFrame on error returned %q, want dst unchanged", got)
			}
		})
	}
}

func TestAppendFrameNoAllocWithRoom(t *testing.T) {
	m := &Extent{ID: 1, DataConn: 2, StreamOffset: 3, VolumeOffset: 4, Length: 5, CRC32C: 6}
	buf := make([]byte, 0, 128)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		if buf, err = AppendFrame(buf[:0], m); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("AppendFrame allocated %v times per Extent, want 0", allocs)
	}
	allocs = testing.AllocsPerRun(100, func() {
		if _, err := Unmarshal(buf[FrameHeaderLen:]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Errorf("Unmarshal allocated %v times per Extent, want at most 1", allocs)
	}
}

// TestListPagingCompat pins what keeps listing compatible with peers from
// before paging: an empty ListVolumes body asks for the first page, a
// VolumeList without Next is a last page, and neither field is ever
// written when empty.
func TestListPagingCompat(t *testing.T) {
	m, err := Unmarshal([]byte{byte(TypeListVolumes)})
	if err != nil || !reflect.DeepEqual(m, &ListVolumes{After: ""}) {
		t.Errorf("empty ListVolumes body = %+v, %v; want After \"\"", m, err)
	}
	if b, err := Marshal(&ListVolumes{}); err != nil || !bytes.Equal(b, []byte{byte(TypeListVolumes)}) {
		t.Errorf("Marshal(ListVolumes{}) = %x, %v; want the type byte alone", b, err)
	}
	old := msgOf(TypeVolumeList).u16(2).stat("a", 4096).stat("b", 4096)
	m, err = Unmarshal(old)
	if l, ok := m.(*VolumeList); err != nil || !ok || len(l.Volumes) != 2 || l.Next != "" {
		t.Errorf("VolumeList without Next = %+v, %v; want 2 volumes, Next \"\"", m, err)
	}
	if b, err := Marshal(m); err != nil || !bytes.Equal(b, old) {
		t.Errorf("re-encoded %x, %v; want %x", b, err, []byte(old))
	}
}

// TestVolumeListPageFitsFrame checks the bound docs/protocol.md 5.8 states:
// the largest page, MaxVolumes entries with MaxName-byte names and a
// MaxName-byte Next, encodes to 614533 bytes, within MaxFrame, so a server
// can always fill a page to MaxVolumes.
func TestVolumeListPageFitsFrame(t *testing.T) {
	const want = 1 + 2 + MaxVolumes*(22+MaxName) + 2 + MaxName
	if want != 614533 || want > MaxFrame {
		t.Fatalf("largest VolumeList is %d bytes (MaxFrame %d)", want, MaxFrame)
	}
	big := maxVolumeList()
	body, err := Marshal(big)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) != want {
		t.Errorf("largest VolumeList encodes to %d bytes, want %d", len(body), want)
	}
	if sizeHint(big) != want {
		t.Errorf("sizeHint = %d, want %d", sizeHint(big), want)
	}
}

// TestAppendExtentHeader: the header, followed by the Length bytes the
// caller sends itself, is the frame AppendFrame makes of the Extent with
// its Data; an Extent that cannot be sent inline appends nothing.
func TestAppendExtentHeader(t *testing.T) {
	data := bytes.Repeat([]byte{0xa5}, MaxInlineData)
	e := &Extent{ID: 7, VolumeOffset: 1 << 20, Length: MaxInlineData, CRC32C: 0xdeadbeef}
	prefix := []byte("queued")
	hdr, err := AppendExtentHeader(slices.Clone(prefix), e)
	if err != nil {
		t.Fatal(err)
	}
	withData := *e
	withData.Data = data
	want, err := AppendFrame(slices.Clone(prefix), &withData)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(hdr, data...); !bytes.Equal(got, want) {
		t.Fatalf("header and bytes differ from the whole frame (%d bytes, want %d)", len(got), len(want))
	}
	for _, bad := range []*Extent{
		nil,
		{ID: 7, Length: 4, Data: []byte{1, 2, 3, 4}},
		{ID: 7, Length: MaxInlineData + 1},
		{ID: 7, Length: 4, DataConn: 1},
		{ID: 7, Length: 4, StreamOffset: 8},
		{ID: 0, Length: 4},
		{ID: 7, Length: 0},
	} {
		got, err := AppendExtentHeader(slices.Clone(prefix), bad)
		if !errors.Is(err, ErrMalformed) || !bytes.Equal(got, prefix) {
			t.Errorf("%+v: %q, %v; want the prefix alone and ErrMalformed", bad, got, err)
		}
	}
}
