package devmem

import (
	"encoding/binary"
	"errors"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

func encodeFrags(frags ...Frag) []byte {
	var b []byte
	for _, f := range frags {
		b = appendDevmemCmsg(b, f)
	}
	return b
}

func TestParseCmsgs(t *testing.T) {
	timestamp, _ := appendCmsg(nil, uapi.SOL_SOCKET, 35 /* SO_TIMESTAMPNS_OLD */, 16)
	tests := []struct {
		name string
		oob  []byte
		want []Frag
	}{
		{name: "empty", oob: nil, want: nil},
		{
			name: "dmabuf frags",
			oob: encodeFrags(
				Frag{Offset: 4096, Size: 4096, Token: 1, DmabufID: 3},
				Frag{Offset: 12288, Size: 100, Token: 2, DmabufID: 3},
			),
			want: []Frag{
				{Offset: 4096, Size: 4096, Token: 1, DmabufID: 3},
				{Offset: 12288, Size: 100, Token: 2, DmabufID: 3},
			},
		},
		{
			name: "linear offsets accumulate in the iovec",
			oob: encodeFrags(
				Frag{Size: 10, Linear: true},
				Frag{Offset: 0, Size: 4096, Token: 7, DmabufID: 1},
				Frag{Size: 20, Linear: true},
				Frag{Size: 5, Linear: true},
			),
			want: []Frag{
				{Offset: 0, Size: 10, Linear: true},
				{Offset: 0, Size: 4096, Token: 7, DmabufID: 1},
				{Offset: 10, Size: 20, Linear: true},
				{Offset: 30, Size: 5, Linear: true},
			},
		},
		{
			name: "other control messages are skipped",
			oob:  append(append(encodeFrags(Frag{Offset: 1, Size: 2, Token: 3, DmabufID: 4}), timestamp...), encodeFrags(Frag{Offset: 5, Size: 6, Token: 7, DmabufID: 4})...),
			want: []Frag{
				{Offset: 1, Size: 2, Token: 3, DmabufID: 4},
				{Offset: 5, Size: 6, Token: 7, DmabufID: 4},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCmsgs(nil, tt.oob)
			if err != nil {
				t.Fatalf("ParseCmsgs: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("unexpected frags (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseCmsgsKernelBytes(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("literal is the x86-64 encoding")
	}
	// One SCM_DEVMEM_DMABUF message as tcp_recvmsg_dmabuf lays it out on
	// x86-64: cmsg_len 40, SOL_SOCKET, type 79, then dmabuf_cmsg
	// {frag_offset 0x2000, frag_size 0x1000, frag_token 5, dmabuf_id 2,
	// flags 0}.
	oob := []byte{
		40, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 79, 0, 0, 0,
		0x00, 0x20, 0, 0, 0, 0, 0, 0, 0x00, 0x10, 0, 0, 5, 0, 0, 0,
		2, 0, 0, 0, 0, 0, 0, 0,
	}
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("literal is little-endian")
	}
	got, err := ParseCmsgs(nil, oob)
	if err != nil {
		t.Fatal(err)
	}
	want := []Frag{{Offset: 0x2000, Size: 0x1000, Token: 5, DmabufID: 2}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("unexpected frags (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(oob, encodeFrags(want...)); diff != "" {
		t.Errorf("encoder differs from the kernel's bytes (-kernel +ours):\n%s", diff)
	}
}

func TestParseCmsgsErrors(t *testing.T) {
	good := encodeFrags(Frag{Offset: 1, Size: 2, Token: 3, DmabufID: 4})
	short, p := appendCmsg(nil, uapi.SOL_SOCKET, uapi.SCM_DEVMEM_DMABUF, 20)
	binary.NativeEndian.PutUint32(p[8:], 1)
	tests := []struct {
		name    string
		oob     []byte
		prefix  int // frags returned before the error
		mutate  func(b []byte)
		trailer []byte
	}{
		{name: "truncated header", oob: good[:uapi.SizeofCmsghdr-1]},
		{name: "truncated payload", oob: good[:len(good)-1]},
		{name: "length below header", oob: append([]byte(nil), good...), mutate: func(b []byte) { putWord(b, 3) }},
		{name: "length beyond buffer", oob: append([]byte(nil), good...), mutate: func(b []byte) { putWord(b, 1000) }},
		{name: "short devmem payload", oob: short},
		{name: "zero size", oob: encodeFrags(Frag{Offset: 1, Size: 0, Token: 3, DmabufID: 4})},
		{name: "zero token", oob: encodeFrags(Frag{Offset: 1, Size: 2, Token: 0, DmabufID: 4})},
		{name: "zero dmabuf id", oob: encodeFrags(Frag{Offset: 1, Size: 2, Token: 3, DmabufID: 0})},
		{name: "zero-size linear", oob: encodeFrags(Frag{Linear: true})},
		{name: "garbage after a good frag", oob: append([]byte(nil), good...), trailer: []byte{1, 2, 3}, prefix: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.oob
			if tt.mutate != nil {
				tt.mutate(b)
			}
			b = append(b, tt.trailer...)
			got, err := ParseCmsgs(nil, b)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseCmsgs error = %v, want ErrMalformed", err)
			}
			if len(got) != tt.prefix {
				t.Errorf("got %d frags before the error, want %d", len(got), tt.prefix)
			}
		})
	}
}

func TestParseCmsgsNoAlloc(t *testing.T) {
	var frags []Frag
	for i := 0; i < 64; i++ {
		frags = append(frags, Frag{Offset: uint64(i) * 4096, Size: 4096, Token: uint32(i + 1), DmabufID: 1})
	}
	oob := encodeFrags(frags...)
	dst := make([]Frag, 0, 64)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		dst, err = ParseCmsgs(dst[:0], oob)
		if err != nil || len(dst) != 64 {
			t.Fatalf("ParseCmsgs = %d, %v", len(dst), err)
		}
	})
	if allocs != 0 {
		t.Errorf("ParseCmsgs allocates %v times per call", allocs)
	}
}

func FuzzParseCmsgs(f *testing.F) {
	f.Add([]byte{})
	f.Add(encodeFrags(Frag{Offset: 4096, Size: 4096, Token: 1, DmabufID: 1}))
	f.Add(encodeFrags(Frag{Size: 100, Linear: true}, Frag{Offset: 8192, Size: 10, Token: 2, DmabufID: 9}))
	ts, _ := appendCmsg(nil, uapi.SOL_SOCKET, 35, 16)
	f.Add(append(ts, encodeFrags(Frag{Offset: 1, Size: 1, Token: 1, DmabufID: 1})...))
	f.Add(appendZerocopyCmsg(nil, Completion{Lo: 1, Hi: 2}, false))
	f.Fuzz(func(t *testing.T, oob []byte) {
		frags, err := ParseCmsgs(nil, oob)
		var linear uint64
		var want fragSums
		for _, fr := range frags {
			if fr.Size == 0 {
				t.Fatalf("frag of size 0 returned: %+v", fr)
			}
			if fr.Linear {
				if fr.Offset != linear || fr.Token != 0 || fr.DmabufID != 0 {
					t.Fatalf("linear frag %+v, want offset %d and no token", fr, linear)
				}
				linear += uint64(fr.Size)
				want.linear += int64(fr.Size)
			} else if fr.Token == 0 || fr.DmabufID == 0 {
				t.Fatalf("dmabuf frag without token or id: %+v", fr)
			} else {
				want.devmem += int64(fr.Size)
				want.tokens++
				if fr.DmabufID != 1 {
					want.foreign = fr.DmabufID
				}
			}
		}
		// The receiver's parse sums up the same frags as it goes.
		same, sums, serr := parseCmsgs(nil, oob, 1)
		if diff := cmp.Diff(frags, same); diff != "" || (serr == nil) != (err == nil) {
			t.Fatalf("parseCmsgs differs from ParseCmsgs (error %v, %v):\n%s", err, serr, diff)
		}
		if sums != want {
			t.Fatalf("sums %+v, want %+v", sums, want)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// Round trip: the kernel encoding of what was parsed parses to
		// the same frags.
		again, err := ParseCmsgs(nil, encodeFrags(frags...))
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if diff := cmp.Diff(frags, again); diff != "" {
			t.Fatalf("round trip differs (-first +again):\n%s", diff)
		}
	})
}

func TestParseErrqueue(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 || binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("literal is the x86-64 encoding")
	}
	// Captured from Linux 6.18 on loopback: recvmsg(MSG_ERRQUEUE) after two
	// MSG_ZEROCOPY sends on an AF_INET TCP socket: SOL_IP/IP_RECVERR,
	// sock_extended_err{errno 0, origin 5, type 0, code 1 (COPIED), info 0,
	// data 1} and a zero sockaddr_in.
	kernel := []byte{
		48, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11, 0, 0, 0,
		0, 0, 0, 0, 5, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	}
	got, err := ParseErrqueue(kernel)
	if err != nil {
		t.Fatal(err)
	}
	want := Completion{Lo: 0, Hi: 1, Copied: true}
	if got != want {
		t.Errorf("ParseErrqueue = %+v, want %+v", got, want)
	}
	if diff := cmp.Diff(kernel, appendZerocopyCmsg(nil, want, false)); diff != "" {
		t.Errorf("encoder differs from the kernel's bytes (-kernel +ours):\n%s", diff)
	}
	if got.Count() != 2 {
		t.Errorf("Count = %d, want 2", got.Count())
	}
}

func TestParseErrqueueCases(t *testing.T) {
	wrap := Completion{Lo: 0xfffffffe, Hi: 1}
	if wrap.Count() != 4 {
		t.Errorf("wrapping Count = %d, want 4", wrap.Count())
	}
	for _, v6 := range []bool{false, true} {
		got, err := ParseErrqueue(appendZerocopyCmsg(nil, wrap, v6))
		if err != nil || got != wrap {
			t.Errorf("v6=%v: ParseErrqueue = %+v, %v; want %+v", v6, got, err, wrap)
		}
	}
	icmp := appendZerocopyCmsg(nil, Completion{}, false)
	icmp[uapi.SizeofCmsghdr+4] = 2 // SO_EE_ORIGIN_ICMP
	binary.NativeEndian.PutUint32(icmp[uapi.SizeofCmsghdr:], 113)
	bad := map[string][]byte{
		"empty":       nil,
		"icmp error":  icmp,
		"truncated":   appendZerocopyCmsg(nil, wrap, false)[:20],
		"short error": func() []byte { b, _ := appendCmsg(nil, uapi.SOL_IP, uapi.IP_RECVERR, 8); return b }(),
		"devmem only": encodeFrags(Frag{Offset: 1, Size: 1, Token: 1, DmabufID: 1}),
	}
	for name, b := range bad {
		if _, err := ParseErrqueue(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: error = %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzParseErrqueue(f *testing.F) {
	f.Add([]byte{})
	f.Add(appendZerocopyCmsg(nil, Completion{Lo: 3, Hi: 9, Copied: true}, false))
	f.Add(appendZerocopyCmsg(nil, Completion{Lo: 0xffffffff, Hi: 0}, true))
	f.Add(encodeFrags(Frag{Offset: 1, Size: 1, Token: 1, DmabufID: 1}))
	f.Fuzz(func(t *testing.T, oob []byte) {
		c, err := ParseErrqueue(oob)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if c != (Completion{}) {
				t.Fatalf("error with a completion: %+v", c)
			}
			return
		}
		for _, v6 := range []bool{false, true} {
			again, err := ParseErrqueue(appendZerocopyCmsg(nil, c, v6))
			if err != nil || again != c {
				t.Fatalf("round trip: %+v, %v; want %+v", again, err, c)
			}
		}
	})
}
