package integration

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// This file is an independent client of docs/protocol.md: it builds and
// parses every frame itself, from the tables of the document, and drives a
// real blockd process over raw TCP sockets. TestConformance runs every error
// path the document specifies, each as a subtest named after its section.

// Constants of docs/protocol.md section 2.
const (
	wireVersion           = 1
	wireMaxFrame          = 1 << 20
	wireMaxHandshakeFrame = 512
	wireTokenLen          = 16
	wireNonceLen          = 32
	wireMACLen            = 32
	wireMaxExtentLen      = 1 << 26
)

// Message types (section 5).
const (
	typeHello        = 1
	typeChallenge    = 2
	typeAuth         = 3
	typeWelcome      = 4
	typeDataAttached = 5
	typeListVolumes  = 6
	typeVolumeList   = 7
	typeStatVolume   = 8
	typeVolumeInfo   = 9
	typeRead         = 10
	typeExtent       = 11
	typeReadDone     = 12
	typeError        = 13
	typePing         = 15
	typePong         = 16
	typeGoodbye      = 17
)

// Caps bits (section 6.1).
const (
	capTCP         = 1
	capInlineData  = 32
	capInlineLarge = 64
)

// Error codes (section 10).
const (
	codeBadRequest = 2
	codeAuth       = 3
	codeNotFound   = 4
	codeOutOfRange = 5
	codeBusy       = 6
	codeTimedOut   = 7
	codeVersion    = 11
)

var wireCodeNames = map[uint16]string{1: "internal", 2: "bad-request", 3: "auth", 4: "not-found",
	5: "out-of-range", 6: "busy", 7: "timed-out", 8: "cancelled", 9: "shutting-down", 10: "io",
	11: "version", 12: "exists", 13: "corrupt"}

func codeName(c uint16) string {
	if n, ok := wireCodeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("code(%d)", c)
}

// authFailed is the one message blockd gives for every failure before
// Welcome (section 6.1).
const authFailed = "authentication failed"

// controlPreamble is the 8-byte control preamble of section 3.
var controlPreamble = []byte{'B', 'X', 'C', wireVersion, 0, 0, 0, 0}

func dataPreamble(tok [wireTokenLen]byte) []byte {
	return append([]byte{'B', 'X', 'D', wireVersion, 0, 0, 0, 0}, tok[:]...)
}

// --- encoding ---

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
func wstr(s string) []byte { return append(be16(uint16(len(s))), s...) }

// wframe is a frame (section 4): u32 length, type byte, payload.
func wframe(typ byte, payload ...[]byte) []byte {
	n := 1
	for _, p := range payload {
		n += len(p)
	}
	b := append(be32(uint32(n)), typ)
	for _, p := range payload {
		b = append(b, p...)
	}
	return b
}

func helloFrame(nonce [wireNonceLen]byte, client string) []byte {
	return helloCapsFrame(nonce, client, capTCP)
}

func helloCapsFrame(nonce [wireNonceLen]byte, client string, caps uint64) []byte {
	return wframe(typeHello, be64(caps), nonce[:], wstr(client))
}

func authFrame(mac []byte) []byte { return wframe(typeAuth, mac) }

func readFrame(id uint64, vol string, off, n uint64, deadline int64) []byte {
	return wframe(typeRead, be64(id), wstr(vol), be64(off), be64(n), be64(uint64(deadline)))
}

func pingFrame(seq uint64) []byte { return wframe(typePing, be64(seq)) }

// proof is ClientProof or ServerProof of section 8.
func proof(key []byte, label string, nc, ns [wireNonceLen]byte, session uint64) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	m.Write([]byte{0})
	m.Write(nc[:])
	m.Write(ns[:])
	m.Write(be64(session))
	return m.Sum(nil)
}

// --- decoding ---

// wireFrame is one frame as received: body holds the type byte and payload.
type wireFrame struct {
	typ  byte
	body []byte
}

// readWire reads one frame. A clean end of stream before any byte of it is
// io.EOF; a frame length outside 1..MaxFrame is an error.
func readWire(c net.Conn) (wireFrame, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return wireFrame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > wireMaxFrame {
		return wireFrame{}, fmt.Errorf("server sent frame length %d, outside 1..%d (section 4)", n, wireMaxFrame)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return wireFrame{}, fmt.Errorf("frame of %d bytes cut short: %w", n, err)
	}
	return wireFrame{typ: body[0], body: body}, nil
}

type wireError struct {
	id   uint64
	code uint16
	msg  string
}

func (e wireError) String() string {
	return fmt.Sprintf("Error{ID: %d, Code: %s, Message: %q}", e.id, codeName(e.code), e.msg)
}

// asError decodes an Error (section 5.14) strictly.
func (f wireFrame) asError() (wireError, error) {
	b := f.body
	if f.typ != typeError || len(b) < 13 {
		return wireError{}, fmt.Errorf("not an Error: %s", f)
	}
	n := int(binary.BigEndian.Uint16(b[11:]))
	if len(b) != 13+n {
		return wireError{}, fmt.Errorf("Error body of %d bytes, want 13+%d", len(b), n)
	}
	e := wireError{id: binary.BigEndian.Uint64(b[1:]), code: binary.BigEndian.Uint16(b[9:]), msg: string(b[13:])}
	if e.code == 0 {
		return e, errors.New("Error with code 0 (section 10: invalid)")
	}
	return e, nil
}

type wireExtent struct {
	id                uint64
	conn              uint16
	streamOff, volOff uint64
	length, crc       uint32
}

func (f wireFrame) asExtent() (wireExtent, error) {
	b := f.body
	if f.typ != typeExtent || len(b) != 35 {
		return wireExtent{}, fmt.Errorf("not a 35-byte Extent: %s", f)
	}
	return wireExtent{id: binary.BigEndian.Uint64(b[1:]), conn: binary.BigEndian.Uint16(b[9:]),
		streamOff: binary.BigEndian.Uint64(b[11:]), volOff: binary.BigEndian.Uint64(b[19:]),
		length: binary.BigEndian.Uint32(b[27:]), crc: binary.BigEndian.Uint32(b[31:])}, nil
}

// id returns the ID of an Extent, ReadDone or Error frame, and whether it
// has one.
func (f wireFrame) id() (uint64, bool) {
	switch f.typ {
	case typeExtent, typeReadDone, typeError:
		if len(f.body) >= 9 {
			return binary.BigEndian.Uint64(f.body[1:]), true
		}
	}
	return 0, false
}

func (f wireFrame) String() string {
	switch f.typ {
	case typeError:
		if e, err := f.asError(); err == nil {
			return e.String()
		}
	case typeExtent:
		if x, err := f.asExtent(); err == nil {
			return fmt.Sprintf("Extent{ID: %d, DataConn: %d, StreamOffset: %d, VolumeOffset: %d, Length: %d}", x.id, x.conn, x.streamOff, x.volOff, x.length)
		}
	case typeReadDone:
		if len(f.body) == 17 {
			return fmt.Sprintf("ReadDone{ID: %d, Bytes: %d}", binary.BigEndian.Uint64(f.body[1:]), binary.BigEndian.Uint64(f.body[9:]))
		}
	case typeDataAttached:
		if len(f.body) == 3 {
			return fmt.Sprintf("DataAttached{Index: %d}", binary.BigEndian.Uint16(f.body[1:]))
		}
	}
	if len(f.body) > 48 {
		return fmt.Sprintf("frame type %d, %d bytes: % x...", f.typ, len(f.body), f.body[:48])
	}
	return fmt.Sprintf("frame type %d, %d bytes: % x", f.typ, len(f.body), f.body)
}

// isClosed reports whether err is the server closing the connection: a
// FIN, or a reset because it left some of our bytes unread.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// --- connections ---

// waitLimit bounds every wait for the server in this file.
const waitLimit = 15 * time.Second

// dialRaw opens a TCP connection to addr, from local if not nil, with a
// receive buffer of rcvbuf bytes if not 0 (set before connecting, so the
// window the server sees is small: a data connection that is not drained
// then holds its reads open).
func dialRaw(t *testing.T, addr string, local net.IP, rcvbuf int) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: waitLimit}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
			return errors.Join(err, serr)
		}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(3 * waitLimit))
	return c
}

func send(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// expectNoReply checks that the server closes c without writing a byte.
func expectNoReply(t *testing.T, c net.Conn, doc string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	b, err := io.ReadAll(c)
	switch {
	case len(b) != 0:
		t.Fatalf("server wrote %d bytes (% x); %s: close without writing", len(b), b[:min(len(b), 64)], doc)
	case isTimeout(err):
		t.Fatalf("connection still open after %s; %s: close without writing", waitLimit, doc)
	case err != nil && !isClosed(err):
		t.Fatalf("read: %v", err)
	}
}

// expectOneErrorThenClose reads what the server writes on c until it
// closes c: frames for which skip returns true (say, Extents of reads in
// flight), then exactly one Error equal to want (its message only if
// checkMsg), then the end of the connection. A second Error, or any frame
// after the Error, fails: section 9.1, an ID-0 Error ends the session and
// its sender closes the connection right after writing it.
func expectOneErrorThenClose(t *testing.T, c net.Conn, want wireError, checkMsg bool, doc string, skip func(wireFrame) bool) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	var got *wireError
	for {
		f, err := readWire(c)
		if err != nil {
			switch {
			case isClosed(err) && got != nil:
				return
			case isClosed(err):
				t.Fatalf("connection closed without an Error; %s: one %s, then close", doc, want)
			case isTimeout(err) && got != nil:
				t.Fatalf("server wrote %s but did not close the connection within %s; %s", *got, waitLimit, doc)
			case isTimeout(err):
				t.Fatalf("no Error and no close within %s; %s: one %s, then close", waitLimit, doc, want)
			}
			t.Fatalf("read: %v", err)
		}
		if got != nil {
			t.Fatalf("after %s the server wrote another frame, %s; %s: exactly one Error, then close", *got, f, doc)
		}
		if f.typ != typeError {
			if skip != nil && skip(f) {
				continue
			}
			t.Fatalf("got %s; %s: one %s, then close", f, doc, want)
		}
		e, err := f.asError()
		if err != nil {
			t.Fatal(err)
		}
		if e.id != want.id || e.code != want.code || (checkMsg && e.msg != want.msg) {
			t.Fatalf("got %s; %s: %s, then close", e, doc, want)
		}
		got = &e
	}
}

// --- sessions ---

// confServer is a blockd under test with the key its clients use.
type confServer struct {
	*server
	key []byte
}

func newConfServer(t *testing.T, vols map[string]string, extra ...string) *confServer {
	t.Helper()
	data, env := newData(t, vols)
	s := startServer(t, data, env, append([]string{"--devmem", "off"}, extra...)...)
	kf := strings.TrimPrefix(env[0], "BLOCKXFER_KEY_FILE=")
	b, err := os.ReadFile(kf)
	if err != nil {
		t.Fatal(err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return &confServer{server: s, key: key}
}

// rawSession is an authenticated control connection.
type rawSession struct {
	t        *testing.T
	s        *confServer
	ctl      net.Conn
	id       uint64
	tokens   [][wireTokenLen]byte
	welcomed time.Time
	seq      uint64
}

// session runs the handshake of section 6.1 by hand.
func (s *confServer) session(t *testing.T) *rawSession {
	t.Helper()
	return s.sessionCaps(t, capTCP)
}

// sessionCaps is session with caps in the Hello.
func (s *confServer) sessionCaps(t *testing.T, caps uint64) *rawSession {
	t.Helper()
	c := dialRaw(t, s.addr, nil, 0)
	var nc [wireNonceLen]byte
	rand.Read(nc[:])
	send(t, c, append(append([]byte{}, controlPreamble...), helloCapsFrame(nc, "conformance", caps)...))
	f, err := readWire(c)
	if err != nil {
		t.Fatalf("waiting for Challenge: %v", err)
	}
	b := f.body
	if f.typ != typeChallenge || len(b) < 51 || len(b) != 51+int(binary.BigEndian.Uint16(b[49:])) {
		t.Fatalf("want Challenge (section 5.2), got %s", f)
	}
	var ns [wireNonceLen]byte
	copy(ns[:], b[9:41])
	sid := binary.BigEndian.Uint64(b[41:])
	send(t, c, authFrame(proof(s.key, "blockxfer v1 client proof", nc, ns, sid)))
	if f, err = readWire(c); err != nil {
		t.Fatalf("waiting for Welcome: %v", err)
	}
	b = f.body
	if f.typ != typeWelcome || len(b) < 35 {
		t.Fatalf("want Welcome (section 5.4), got %s", f)
	}
	count := int(binary.BigEndian.Uint16(b[33:]))
	if count < 1 || count > 64 || len(b) != 35+16*count {
		t.Fatalf("Welcome with %d tokens in %d bytes", count, len(b))
	}
	if !hmac.Equal(b[1:33], proof(s.key, "blockxfer v1 server proof", nc, ns, sid)) {
		t.Fatal("Welcome MAC is not ServerProof (section 8)")
	}
	rs := &rawSession{t: t, s: s, ctl: c, id: sid, welcomed: time.Now()}
	seen := map[[wireTokenLen]byte]bool{}
	for i := range count {
		tok := [wireTokenLen]byte(b[35+16*i:])
		if seen[tok] {
			t.Fatal("Welcome tokens are not distinct")
		}
		seen[tok] = true
		rs.tokens = append(rs.tokens, tok)
	}
	return rs
}

func (rs *rawSession) send(b ...[]byte) {
	rs.t.Helper()
	for _, f := range b {
		send(rs.t, rs.ctl, f)
	}
}

// next reads the next frame on the control connection.
func (rs *rawSession) next() wireFrame {
	rs.t.Helper()
	rs.ctl.SetReadDeadline(time.Now().Add(waitLimit))
	f, err := readWire(rs.ctl)
	if err != nil {
		rs.t.Fatalf("control connection: %v", err)
	}
	return f
}

// nextSkipping reads the next frame for which skip is false.
func (rs *rawSession) nextSkipping(skip func(wireFrame) bool) wireFrame {
	rs.t.Helper()
	for {
		if f := rs.next(); skip == nil || !skip(f) {
			return f
		}
	}
}

// attach opens data connection i (section 6.2) and waits for its
// DataAttached.
func (rs *rawSession) attach(i, rcvbuf int) net.Conn {
	rs.t.Helper()
	d := dialRaw(rs.t, rs.s.addr, nil, rcvbuf)
	send(rs.t, d, dataPreamble(rs.tokens[i]))
	f := rs.next()
	if f.typ != typeDataAttached || len(f.body) != 3 || binary.BigEndian.Uint16(f.body[1:]) != uint16(i) {
		rs.t.Fatalf("presented token %d: got %s, want DataAttached{Index: %d}", i, f, i)
	}
	return d
}

// alive checks that the session is open and that nothing but frames skip
// accepts was written on it since the last frame read: a Ping is answered
// by the next frame, a Pong with the same Seq (section 9.2).
func (rs *rawSession) alive(why string, skip func(wireFrame) bool) {
	rs.t.Helper()
	rs.seq++
	seq := rs.seq<<32 | 0x5eed
	rs.send(pingFrame(seq))
	f := rs.nextSkipping(skip)
	if f.typ != typePong || len(f.body) != 9 || binary.BigEndian.Uint64(f.body[1:]) != seq {
		rs.t.Fatalf("%s: after Ping{%d} got %s, want Pong{%d} first", why, seq, f, seq)
	}
}

// expectReadError reads the next frame, which must be Error{id, code}, the
// read's terminal message before any Extent.
func (rs *rawSession) expectReadError(id uint64, code uint16, doc string) {
	rs.t.Helper()
	f := rs.next()
	e, err := f.asError()
	if err != nil || e.id != id || e.code != code {
		rs.t.Fatalf("got %s; %s: Error{ID: %d, Code: %s} before anything is announced", f, doc, id, codeName(code))
	}
}

// --- blockd flags ---

var (
	serveHelpOnce sync.Once
	serveHelp     string
)

// serveHasFlag reports whether `blockd serve -h` lists flag (without dashes).
func serveHasFlag(t *testing.T, flag string) bool {
	t.Helper()
	serveHelpOnce.Do(func() {
		out, _ := exec.Command(filepath.Join(bin, "blockd"), "serve", "-h").CombinedOutput()
		serveHelp = string(out)
	})
	if !strings.Contains(serveHelp, "-data") {
		t.Fatalf("blockd serve -h lists no flags:\n%s", serveHelp)
	}
	return strings.Contains(serveHelp, "  -"+flag+" ") || strings.Contains(serveHelp, "  -"+flag+"\n") ||
		strings.Contains(serveHelp, "  --"+flag+" ") || strings.Contains(serveHelp, "  --"+flag+"\n")
}

// --- the test ---

func TestConformance(t *testing.T) {
	t.Parallel()
	s := newConfServer(t, map[string]string{"big": "32MiB", "small": "100KiB"})
	bigSize := uint64(32 << 20)
	smallSize := uint64(100 << 10)
	// A session whose tokens are left to expire (section 6.2): its clock
	// starts now, and the subtest for it comes last.
	expiring := s.session(t)
	// A connection that stops after its preamble, left to the handshake
	// timeout (section 6.1) unless blockd lets the test shorten it.
	stalled := dialRaw(t, s.addr, nil, 0)
	send(t, stalled, controlPreamble)
	stalledAt := time.Now()

	// notAuthed opens a control connection, writes the preamble and b.
	notAuthed := func(t *testing.T, b ...[]byte) net.Conn {
		c := dialRaw(t, s.addr, nil, 0)
		send(t, c, append(append([]byte{}, controlPreamble...), bytes.Join(b, nil)...))
		return c
	}
	authFailure := wireError{code: codeAuth, msg: authFailed}
	const authDoc = `section 6.1: one Error{ID: 0, Code: auth, "authentication failed"}`
	isChallenge := func(f wireFrame) bool { return f.typ == typeChallenge }

	t.Run("7.2 happy path", func(t *testing.T) { conformHappyPath(t, s) })
	t.Run("5.12 a lone read inline", func(t *testing.T) { conformInlineLarge(t, s) })

	t.Run("3 preambles", func(t *testing.T) {
		const silent = "section 3: not ours, close without writing anything (no echo)"
		for _, tc := range []struct {
			name string
			in   []byte
			doc  string
		}{
			{"bad magic", []byte("GET / HTTP/1.1\r\nHost: blockd\r\n\r\n"), silent},
			{"bad magic BXX", []byte{'B', 'X', 'X', wireVersion, 0, 0, 0, 0}, silent},
			{"lower-case magic", []byte{'b', 'x', 'c', wireVersion, 0, 0, 0, 0}, silent},
			{"control reserved bytes", []byte{'B', 'X', 'C', wireVersion, 0, 0, 1, 0}, "section 3 rule 3: non-zero reserved bytes, close without writing"},
			{"data reserved bytes", append([]byte{'B', 'X', 'D', wireVersion, 0x80, 0, 0, 0}, make([]byte, wireTokenLen)...), "section 3 rule 3: non-zero reserved bytes, close without writing"},
			{"data version 2", append([]byte{'B', 'X', 'D', 2, 0, 0, 0, 0}, make([]byte, wireTokenLen)...), "section 3 rule 2: a data connection of another version is closed without writing"},
			{"data version 0", append([]byte{'B', 'X', 'D', 0, 0, 0, 0, 0}, make([]byte, wireTokenLen)...), "section 3 rule 2: a data connection of another version is closed without writing"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := dialRaw(t, s.addr, nil, 0)
				send(t, c, tc.in)
				expectNoReply(t, c, tc.doc)
			})
		}
		for _, v := range []byte{2, 0, 255} {
			t.Run(fmt.Sprintf("control version %d", v), func(t *testing.T) {
				c := dialRaw(t, s.addr, nil, 0)
				// Reserved bytes set too: the version is checked first.
				send(t, c, []byte{'B', 'X', 'C', v, 0, 0, 0, 7})
				want := wireError{code: codeVersion, msg: fmt.Sprintf("peer speaks protocol version %d, this build speaks %d", v, wireVersion)}
				expectOneErrorThenClose(t, c, want, true, `section 3 rule 2: one Error{ID: 0, Code: version, Message: "peer speaks protocol version V, this build speaks W"}`, nil)
			})
		}
	})

	t.Run("6.1 pre-auth violations", func(t *testing.T) {
		var nonce [wireNonceLen]byte
		hello := helloFrame(nonce, "x")
		for _, tc := range []struct {
			name  string
			in    [][]byte
			hello bool // a Challenge answers the Hello first
		}{
			{"ListVolumes first", [][]byte{wframe(typeListVolumes)}, false},
			{"Auth first", [][]byte{authFrame(make([]byte, wireMACLen))}, false},
			{"Ping first", [][]byte{pingFrame(1)}, false},
			{"Read before auth", [][]byte{readFrame(1, "small", 0, 1, 0)}, false},
			{"frame length 0", [][]byte{{0, 0, 0, 0}}, false},
			{"frame length over MaxFrame", [][]byte{{0xff, 0xff, 0xff, 0xff, typeHello}}, false},
			{"frame of MaxHandshakeFrame+1 bytes", [][]byte{be32(wireMaxHandshakeFrame + 1), {typeHello}}, false},
			{"frame of 1 MiB", [][]byte{be32(wireMaxFrame), {typeHello}}, false},
			{"unknown type 200", [][]byte{{0, 0, 0, 1, 200}}, false},
			{"type 0", [][]byte{{0, 0, 0, 1, 0}}, false},
			{"Hello with trailing bytes", [][]byte{wframe(typeHello, be64(1), nonce[:], wstr("x"), []byte{0})}, false},
			{"Hello cut short", [][]byte{wframe(typeHello, be64(1), nonce[:10])}, false},
			{"Hello name over MaxName", [][]byte{wframe(typeHello, be64(1), nonce[:], wstr(strings.Repeat("n", 129)))}, false},
			{"wrong MAC", [][]byte{hello, authFrame(make([]byte, wireMACLen))}, true},
			{"Auth cut short", [][]byte{hello, wframe(typeAuth, make([]byte, 31))}, true},
			{"Hello twice", [][]byte{hello, hello}, true},
			{"Read instead of Auth", [][]byte{hello, readFrame(1, "small", 0, 1, 0)}, true},
			{"frame over MaxHandshakeFrame instead of Auth", [][]byte{hello, be32(wireMaxHandshakeFrame + 1), {typeAuth}}, true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := notAuthed(t, tc.in...)
				var skip func(wireFrame) bool
				if tc.hello {
					skip = isChallenge
				}
				expectOneErrorThenClose(t, c, authFailure, true, authDoc, skip)
			})
		}
		t.Run("client closes mid-frame", func(t *testing.T) {
			c := notAuthed(t, hello[:len(hello)-3])
			c.(*net.TCPConn).CloseWrite()
			expectOneErrorThenClose(t, c, authFailure, true, authDoc, nil)
		})
	})

	t.Run("6.2 data connections", func(t *testing.T) {
		const doc = "section 6.2: close the data connection without writing, send nothing about it on any control connection"
		t.Run("forged token", func(t *testing.T) {
			rs := s.session(t)
			var tok [wireTokenLen]byte
			rand.Read(tok[:])
			d := dialRaw(t, s.addr, nil, 0)
			send(t, d, dataPreamble(tok))
			expectNoReply(t, d, doc)
			rs.alive("forged token: nothing on the control connection", nil)
		})
		t.Run("another session's token", func(t *testing.T) {
			rs := s.session(t)
			other := s.session(t)
			d := dialRaw(t, s.addr, nil, 0)
			send(t, d, dataPreamble(other.tokens[1]))
			// Tied to its session: attaches there, not to rs.
			f := other.next()
			if f.typ != typeDataAttached || binary.BigEndian.Uint16(f.body[1:]) != 1 {
				t.Fatalf("token 1 of a session: got %s, want DataAttached{1} on that session", f)
			}
			rs.alive("nothing on the other control connection", nil)
		})
		t.Run("reused token", func(t *testing.T) {
			rs := s.session(t)
			first := rs.attach(0, 0)
			d := dialRaw(t, s.addr, nil, 0)
			send(t, d, dataPreamble(rs.tokens[0]))
			expectNoReply(t, d, doc+" (tokens are single-use)")
			rs.alive("reused token: nothing on the control connection", nil)
			// The first data connection is still attached and silent.
			first.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if n, err := first.Read(make([]byte, 1)); n != 0 || !isTimeout(err) {
				t.Fatalf("first data connection: read %d bytes, %v; want it open and silent", n, err)
			}
		})
		t.Run("token of a closed session", func(t *testing.T) {
			rs := s.session(t)
			rs.ctl.Close()
			d := dialRaw(t, s.addr, nil, 0)
			send(t, d, dataPreamble(rs.tokens[0]))
			expectNoReply(t, d, doc+" (tokens are tied to their open session)")
		})
		t.Run("token from another source address", func(t *testing.T) {
			rs := s.session(t)
			d := dialRaw(t, s.addr, net.IPv4(127, 0, 0, 2), 0)
			send(t, d, dataPreamble(rs.tokens[0]))
			expectNoReply(t, d, doc+" (tokens are accepted only from the control connection's address)")
			rs.alive("token from another address: nothing on the control connection", nil)
		})
		t.Run("Read before DataAttached", func(t *testing.T) {
			rs := s.session(t)
			rs.send(readFrame(3, "small", 0, 4096, 0))
			rs.expectReadError(3, codeBadRequest, "section 6.2: a Read before any DataAttached is answered")
			rs.alive("section 9.1: an Error with a non-zero ID ends only its read", nil)
		})
	})

	t.Run("7.2 read refusals", func(t *testing.T) {
		rs := s.session(t)
		rs.attach(0, 0)
		t.Run("not-found", func(t *testing.T) {
			rs.t = t
			rs.send(readFrame(11, "nonesuch", 0, 1, 0))
			rs.expectReadError(11, codeNotFound, "section 7.2: a Read of a volume that does not exist is answered")
		})
		t.Run("out-of-range", func(t *testing.T) {
			rs.t = t
			rs.send(readFrame(12, "small", smallSize-10, 11, 0))
			rs.expectReadError(12, codeOutOfRange, "section 7.2: Offset + Length beyond the volume size is answered")
			rs.send(readFrame(13, "small", smallSize, 1, 0))
			rs.expectReadError(13, codeOutOfRange, "section 7.2: Offset + Length beyond the volume size is answered")
		})
		t.Run("deadline passed", func(t *testing.T) {
			rs.t = t
			rs.send(readFrame(14, "small", 0, 4096, 1))
			rs.expectReadError(14, codeTimedOut, "section 7.6: a Read whose deadline has passed is answered")
		})
		t.Run("StatVolume not-found", func(t *testing.T) {
			rs.t = t
			rs.send(wframe(typeStatVolume, wstr("nonesuch")))
			rs.expectReadError(0, codeNotFound, "section 7.1: StatVolume of a missing volume is answered")
			rs.alive("section 9.1: an ID-0 not-found answering a StatVolume does not end the session", nil)
		})
		t.Run("session still serves", func(t *testing.T) {
			rs.t = t
			rs.alive("refused reads do not end the session", nil)
		})
	})

	t.Run("7.2 Read reusing an open ID", func(t *testing.T) {
		rs := s.session(t)
		rs.attach(0, 16<<10) // not drained: read 1 cannot finish
		rs.send(readFrame(1, "big", 0, bigSize, 0))
		if f := rs.next(); f.typ != typeExtent {
			t.Fatalf("read 1: got %s, want its first Extent", f)
		}
		rs.send(readFrame(1, "small", 0, 4096, 0))
		extentOf1 := func(f wireFrame) bool { id, _ := f.id(); return f.typ == typeExtent && id == 1 }
		// Only announcements of read 1 already under way may come before
		// the Error; no ReadDone and no Error for ID 1: read 1 is still
		// open for the client, and the session ends.
		expectOneErrorThenClose(t, rs.ctl, wireError{code: codeBadRequest}, false,
			"section 7.2 and 9.1: a Read with an ID already open is a violation: Error{ID: 0, Code: bad-request}, then close (so the open read gets no ReadDone)", extentOf1)
	})

	t.Run("7.2 reads over the per-session cap", func(t *testing.T) {
		cs, limit := s, 64 // section 7.2: blockd's default
		if serveHasFlag(t, "max-reads") {
			cs, limit = newConfServer(t, map[string]string{"big": "32MiB"}, "--max-reads", "4"), 4
		} else {
			t.Logf("blockd serve has no --max-reads flag (section 7.2 names it): checking the documented default of 64")
		}
		rs := cs.session(t)
		rs.attach(0, 16<<10) // not drained: no read can finish
		for id := uint64(1); id <= uint64(limit); id++ {
			rs.send(readFrame(id, "big", 0, bigSize, 0))
		}
		over := uint64(limit + 1)
		rs.send(readFrame(over, "big", 0, 4096, 0))
		openExtent := func(f wireFrame) bool { id, _ := f.id(); return f.typ == typeExtent && id >= 1 && id <= uint64(limit) }
		f := rs.nextSkipping(openExtent)
		if e, err := f.asError(); err != nil || e.id != over || e.code != codeBusy {
			t.Fatalf("read %d with %d open: got %s; section 7.2: Error{ID: %d, Code: busy}", over, limit, f, over)
		}
		rs.alive("busy does not end the session", openExtent)
	})

	t.Run("9.1 violations after Welcome", func(t *testing.T) {
		const doc = "section 9.1: a protocol violation is answered Error{ID: 0, Code: bad-request} and the connection closed"
		var nonce [32]byte
		var tok [wireTokenLen]byte
		for _, tc := range []struct {
			name string
			in   []byte
		}{
			// A message sent in the wrong direction.
			{"Extent from the client", wframe(typeExtent, be64(1), be16(0), be64(0), be64(0), be32(4096), be32(0))},
			{"ReadDone from the client", wframe(typeReadDone, be64(1), be64(4096))},
			{"DataAttached from the client", wframe(typeDataAttached, be16(0))},
			{"Challenge from the client", wframe(typeChallenge, be64(1), nonce[:], be64(1), wstr("c"))},
			{"Welcome from the client", wframe(typeWelcome, make([]byte, wireMACLen), be16(1), tok[:])},
			{"VolumeList from the client", wframe(typeVolumeList, be16(0))},
			{"VolumeInfo from the client", wframe(typeVolumeInfo, wstr("v"), be64(1), be32(4096), be64(1))},
			{"Goodbye from the client", wframe(typeGoodbye, wstr("bye"))},
			// Invalid frames and bodies (section 4, bounds of section 5).
			{"frame length 0", []byte{0, 0, 0, 0}},
			{"frame length over MaxFrame", []byte{0, 0x10, 0, 1, typeRead}},
			{"unknown type", []byte{0, 0, 0, 1, 200}},
			{"Read with trailing bytes", withTrailingByte(readFrame(1, "small", 0, 1, 0))},
			{"Read with ID 0", readFrame(0, "small", 0, 1, 0)},
			{"Read with Length 0", readFrame(1, "small", 0, 0, 0)},
			{"Read with negative Deadline", readFrame(1, "small", 0, 1, -1)},
			{"Ping cut short", wframe(typePing, []byte{1, 2, 3})},
		} {
			t.Run(tc.name, func(t *testing.T) {
				rs := s.session(t)
				rs.attach(0, 0)
				rs.send(tc.in)
				expectOneErrorThenClose(t, rs.ctl, wireError{code: codeBadRequest}, false, doc, nil)
			})
		}
	})

	t.Run("9.2 idle timeout", func(t *testing.T) {
		if !serveHasFlag(t, "idle-timeout") {
			t.Skip("blockd serve has no --idle-timeout flag: the idle timeout (engine default 2m) cannot be shortened for a test")
		}
		ts := newConfServer(t, map[string]string{"v": "4KiB"}, "--idle-timeout", "1s")
		rs := ts.session(t)
		rs.attach(0, 0)
		start := time.Now()
		rs.ctl.SetReadDeadline(time.Now().Add(waitLimit))
		var frames []wireFrame
		for {
			f, err := readWire(rs.ctl)
			if isClosed(err) {
				break
			}
			if err != nil {
				t.Fatalf("idle session not closed: %v", err)
			}
			frames = append(frames, f)
		}
		if d := time.Since(start); d < 500*time.Millisecond {
			t.Errorf("idle session closed after %v, before its 1s timeout", d)
		}
		// Section 9.2: the silent peer is considered dead and the session
		// closed. It is not a protocol violation (section 9.1), so not
		// bad-request; at most one Error, for the session.
		if len(frames) > 1 {
			t.Fatalf("idle timeout: %d frames %v; want at most one Error", len(frames), frames)
		}
		if len(frames) == 1 {
			e, err := frames[0].asError()
			if err != nil || e.id != 0 || e.code == codeBadRequest {
				t.Fatalf("idle timeout reported as %s; it is not a protocol violation (sections 9.1, 9.2, 10): not bad-request", frames[0])
			}
		}
	})

	t.Run("6.2 expired token", func(t *testing.T) {
		// Section 6.2: a token is accepted only within 10 s of Welcome.
		if wait := time.Until(expiring.welcomed.Add(10*time.Second + 500*time.Millisecond)); wait > 0 {
			time.Sleep(wait)
		}
		expiring.t = t
		d := dialRaw(t, s.addr, nil, 0)
		send(t, d, dataPreamble(expiring.tokens[0]))
		expectNoReply(t, d, "section 6.2: a token presented more than 10 s after Welcome is refused: close without writing")
		expiring.alive("expired token: nothing on the control connection", nil)
	})

	t.Run("6.1 handshake timeout", func(t *testing.T) {
		const doc = `section 6.1 and 14: a handshake timeout is treated as a failed handshake, one Error{ID: 0, Code: auth, "authentication failed"}`
		if serveHasFlag(t, "handshake-timeout") {
			ts := newConfServer(t, map[string]string{"v": "4KiB"}, "--handshake-timeout", "1s")
			c := dialRaw(t, ts.addr, nil, 0)
			send(t, c, controlPreamble)
			start := time.Now()
			expectOneErrorThenClose(t, c, authFailure, true, doc, nil)
			if d := time.Since(start); d < 500*time.Millisecond {
				t.Errorf("closed after %v, before the 1s handshake timeout", d)
			}
			return
		}
		// No flag: blockd's timeout is the engine default, 10 s, which the
		// wait for the expired token above has mostly spent.
		t.Logf("blockd serve has no --handshake-timeout flag: waiting out the default (10s) on a connection opened %v ago", time.Since(stalledAt).Round(time.Millisecond))
		expectOneErrorThenClose(t, stalled, authFailure, true, doc, nil)
		t.Logf("closed %v after the preamble", time.Since(stalledAt).Round(time.Millisecond))
	})
}

// conformHappyPath reads a range over two data connections and checks
// every announcement and every payload byte against the volume file.
// conformInlineLarge: a session's only read of 64 KiB comes whole in its
// Extent (its bytes after the 35 fixed bytes, DataConn and StreamOffset 0),
// then its ReadDone, to a client that offered CapInlineData and
// CapInlineLarge (section 5.12); with CapInlineData alone, over 32 KiB,
// its bytes come on the data connection.
func conformInlineLarge(t *testing.T, s *confServer) {
	want := s.volumeBytes(t, "small")[:64<<10]
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	for _, tc := range []struct {
		caps   uint64
		inline bool
	}{{capTCP | capInlineData | capInlineLarge, true}, {capTCP | capInlineData, false}} {
		rs := s.sessionCaps(t, tc.caps)
		d := rs.attach(0, 0)
		rs.send(readFrame(1, "small", 0, uint64(len(want)), 0))
		f := rs.next()
		b := f.body
		var data []byte
		if tc.inline {
			if f.typ != typeExtent || len(b) != 35+len(want) || binary.BigEndian.Uint64(b[1:]) != 1 ||
				binary.BigEndian.Uint16(b[9:]) != 0 || binary.BigEndian.Uint64(b[11:]) != 0 ||
				binary.BigEndian.Uint64(b[19:]) != 0 || binary.BigEndian.Uint32(b[27:]) != uint32(len(want)) {
				t.Fatalf("caps %d: got %d-byte %s, want Extent{ID: 1, DataConn: 0, StreamOffset: 0, VolumeOffset: 0, Length: %d} with its bytes", tc.caps, len(b), f, len(want))
			}
			data = b[35:]
		} else {
			x, err := f.asExtent()
			if err != nil || x.id != 1 || x.volOff != 0 || x.length != uint32(len(want)) {
				t.Fatalf("caps %d: got %s (%v), want a 35-byte Extent of read 1", tc.caps, f, err)
			}
			data = make([]byte, len(want))
			d.SetReadDeadline(time.Now().Add(waitLimit))
			if _, err := io.ReadFull(d, data); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(data, want) || crc32.Checksum(data, castagnoli) != binary.BigEndian.Uint32(b[31:]) {
			t.Fatalf("caps %d: the extent's bytes or CRC-32C differ from the volume's", tc.caps)
		}
		if f := rs.next(); f.typ != typeReadDone || len(f.body) != 17 || binary.BigEndian.Uint64(f.body[9:]) != uint64(len(want)) {
			t.Fatalf("caps %d: after the Extent got %s, want ReadDone{ID: 1, Bytes: %d}", tc.caps, f, len(want))
		}
	}
}

func conformHappyPath(t *testing.T, s *confServer) {
	want := s.volumeBytes(t, "big")
	rs := s.session(t)

	rs.send(wframe(typeListVolumes))
	f := rs.next()
	if f.typ != typeVolumeList || len(f.body) < 3 {
		t.Fatalf("ListVolumes: got %s, want VolumeList", f)
	}
	vols := map[string]uint64{}
	b := f.body[3:]
	for range int(binary.BigEndian.Uint16(f.body[1:])) {
		if len(b) < 23 {
			t.Fatalf("VolumeList entry cut short: % x", b)
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 22+n || n == 0 {
			t.Fatalf("VolumeList entry cut short: % x", b)
		}
		vols[string(b[2:2+n])] = binary.BigEndian.Uint64(b[2+n:])
		if es := binary.BigEndian.Uint32(b[10+n:]); es == 0 || es > wireMaxExtentLen {
			t.Fatalf("ExtentSize %d out of bounds", es)
		}
		b = b[22+n:]
	}
	if len(b) != 0 || len(vols) != 2 || vols["big"] != uint64(len(want)) || vols["small"] != 100<<10 {
		t.Fatalf("VolumeList: %v, %d trailing bytes", vols, len(b))
	}

	rs.send(wframe(typeStatVolume, wstr("small")))
	if f := rs.next(); f.typ != typeVolumeInfo || len(f.body) != 1+22+5 || binary.BigEndian.Uint64(f.body[1+2+5:]) != 100<<10 {
		t.Fatalf("StatVolume small: got %s", f)
	}

	// Tokens 2 and 5: DataAttached carries the token's index.
	conns := map[uint16]net.Conn{2: rs.attach(2, 0), 5: rs.attach(5, 0)}
	type sink struct {
		mu   sync.Mutex
		b    []byte
		done chan struct{}
	}
	sinks := map[uint16]*sink{}
	for i, c := range conns {
		k := &sink{done: make(chan struct{})}
		sinks[i] = k
		go func() {
			defer close(k.done)
			buf := make([]byte, 256<<10)
			for {
				n, err := c.Read(buf)
				k.mu.Lock()
				k.b = append(k.b, buf[:n]...)
				k.mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}

	off, length := uint64(1234567), uint64(9<<20+4321)
	rs.send(readFrame(7, "big", off, length, time.Now().Add(time.Minute).UnixNano()))
	var extents []wireExtent
	next := map[uint16]uint64{} // next stream offset per data connection
	var done uint64
	for done == 0 {
		f := rs.next()
		switch f.typ {
		case typeExtent:
			x, err := f.asExtent()
			if err != nil {
				t.Fatal(err)
			}
			if x.id != 7 || x.length == 0 || x.length > wireMaxExtentLen || conns[x.conn] == nil {
				t.Fatalf("bad announcement %s", f)
			}
			if x.streamOff != next[x.conn] {
				t.Fatalf("%s: stream offset %d, want %d (section 7.3)", f, x.streamOff, next[x.conn])
			}
			next[x.conn] += uint64(x.length)
			extents = append(extents, x)
		case typeReadDone:
			if len(f.body) != 17 || binary.BigEndian.Uint64(f.body[1:]) != 7 {
				t.Fatalf("got %s", f)
			}
			done = binary.BigEndian.Uint64(f.body[9:])
			if done != length {
				t.Fatalf("ReadDone.Bytes %d, want Read.Length %d", done, length)
			}
		default:
			t.Fatalf("during the read: got %s", f)
		}
	}
	// The extents cover [off, off+length) exactly, without overlap.
	covered := make([]bool, length)
	for _, x := range extents {
		if x.volOff < off || x.volOff+uint64(x.length) > off+length {
			t.Fatalf("extent [%d,+%d) outside the read", x.volOff, x.length)
		}
		for i := x.volOff - off; i < x.volOff-off+uint64(x.length); i++ {
			if covered[i] {
				t.Fatalf("extents overlap at volume offset %d", off+i)
			}
			covered[i] = true
		}
	}
	for i, c := range covered {
		if !c {
			t.Fatalf("no extent covers volume offset %d", off+uint64(i))
		}
	}
	// Wait for every announced byte, then end the session: each stream
	// holds exactly its announced extents, nothing else.
	deadline := time.Now().Add(waitLimit)
	for i, k := range sinks {
		for {
			k.mu.Lock()
			n := uint64(len(k.b))
			k.mu.Unlock()
			if n >= next[i] || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	rs.ctl.Close()
	for i, k := range sinks {
		select {
		case <-k.done:
		case <-time.After(waitLimit):
			t.Fatalf("data connection %d not closed after the session ended (section 6.2)", i)
		}
		if uint64(len(k.b)) != next[i] {
			t.Fatalf("data connection %d carried %d bytes, announced %d", i, len(k.b), next[i])
		}
	}
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	got := make([]byte, length)
	for _, x := range extents {
		p := sinks[x.conn].b[x.streamOff : x.streamOff+uint64(x.length)]
		if c := crc32.Checksum(p, castagnoli); c != x.crc {
			t.Fatalf("extent at volume offset %d: CRC32C %08x, announced %08x", x.volOff, c, x.crc)
		}
		copy(got[x.volOff-off:], p)
	}
	if !bytes.Equal(got, want[off:off+length]) {
		t.Fatal("payload differs from the volume file")
	}
	t.Logf("read [%d,+%d) in %d extents over data connections 2 and 5 (%d and %d bytes), byte-exact", off, length, len(extents), next[2], next[5])
}

// withTrailingByte returns frame f with one byte appended to its body.
func withTrailingByte(f []byte) []byte {
	body := append(append([]byte{}, f[4:]...), 0)
	return append(be32(uint32(len(body))), body...)
}
