package fdpass

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/blockxfer/blockxfer/internal/fdcount"
	"golang.org/x/sys/unix"
)

// pair returns a Conn receiving kind on one end and the raw fd of the other.
func pair(t *testing.T, opts Options) (*Conn, int) {
	t.Helper()
	local, remote, err := Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(local, opts)
	if err != nil {
		t.Fatal(err)
	}
	peer := int(remote.Fd())
	t.Cleanup(func() {
		c.Close()
		remote.Close()
	})
	return c, peer
}

// memfdWith returns a memfd holding s.
func memfdWith(t *testing.T, s string) int {
	t.Helper()
	fd, err := unix.MemfdCreate("fdpass-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(fd, []byte(s)); err != nil {
		t.Fatal(err)
	}
	return fd
}

func readAll(t *testing.T, fd int) string {
	t.Helper()
	buf := make([]byte, 64)
	n, err := unix.Pread(fd, buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// sendRaw sends data with the given fds from the raw peer socket.
func sendRaw(t *testing.T, peer int, data []byte, fds ...int) {
	t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(peer, data, oob, nil, 0); err != nil {
		t.Fatal(err)
	}
}

func record(kind Kind, tag uint64) []byte {
	var b [RecordSize]byte
	encodeRecord(&b, kind, tag)
	return b[:]
}

func TestSendTake(t *testing.T) {
	before := fdcount.Open(t)
	local, remote, err := Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	rf, err := FromFD(int(remote.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	host, err := New(local, Options{Accept: KindDmabuf, Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	plugin, err := New(rf, Options{Accept: KindStaging})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Plugin to host, strict: announced first.
	host.Expect(7)
	fd := memfdWith(t, "dmabuf bytes")
	if err := plugin.Send(KindDmabuf, 7, fd); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	got, err := host.Take(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	if s := readAll(t, got); s != "dmabuf bytes" {
		t.Errorf("received fd holds %q", s)
	}
	if flags, _ := unix.FcntlInt(uintptr(got), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC == 0 {
		t.Error("received fd is not close-on-exec (MSG_CMSG_CLOEXEC missing)")
	}
	unix.Close(got)

	// Host to plugin, not strict: the fd may arrive before Take.
	fd = memfdWith(t, "staging")
	if err := host.Send(KindStaging, 1, fd); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	got, err = plugin.Take(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if s := readAll(t, got); s != "staging" {
		t.Errorf("received fd holds %q", s)
	}
	unix.Close(got)

	if _, err := host.Take(ctx, 99); err == nil || !strings.Contains(err.Error(), "not expected") {
		t.Errorf("Take of an unannounced tag on a strict conn: %v", err)
	}

	host.Close()
	<-plugin.Done()
	if !errors.Is(plugin.Err(), io.EOF) {
		t.Errorf("plugin end after host close: Err() = %v, want io.EOF", plugin.Err())
	}
	plugin.Close()
	if got := fdcount.Open(t); got != before {
		t.Errorf("%d fds open after closing both ends, want %d", got, before)
	}
}

// TestBadRecords sends malformed records and checks that every fd they carry
// is closed and that the conn keeps working.
func TestBadRecords(t *testing.T) {
	var dropped []string
	var mu sync.Mutex
	logf := func(format string, args ...any) {
		mu.Lock()
		dropped = append(dropped, format)
		mu.Unlock()
	}
	c, peer := pair(t, Options{Accept: KindDmabuf, Strict: true, Logf: logf})
	ctx := context.Background()
	many := make([]int, 20)
	for i := range many {
		many[i] = memfdWith(t, "x")
	}
	two := many[:2]
	before := fdcount.Open(t)

	c.Expect(1)
	c.Expect(2)
	c.Expect(3)
	sendRaw(t, peer, record(KindDmabuf, 1), two...)          // two fds
	sendRaw(t, peer, record(KindDmabuf, 2), many...)         // MSG_CTRUNC
	sendRaw(t, peer, record(KindDmabuf, 3))                  // no fd
	sendRaw(t, peer, record(KindStaging, 4), many[0])        // wrong kind
	sendRaw(t, peer, []byte("not a record at all"), many[0]) // bad header
	sendRaw(t, peer, append(record(KindDmabuf, 5), make([]byte, 100)...), many[0])
	sendRaw(t, peer, record(KindDmabuf, 6), many[0]) // unexpected tag
	c.Expect(8)
	sendRaw(t, peer, record(KindDmabuf, 8), many[0])
	sendRaw(t, peer, record(KindDmabuf, 8), many[1]) // duplicate

	for tag, want := range map[uint64]string{1: "2 fds", 2: "MSG_CTRUNC", 3: "0 fds"} {
		_, err := c.Take(ctx, tag)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Take(%d) error = %v, want one mentioning %q", tag, err, want)
		}
	}
	// Records are handled in order: the good record 8 proves the bad ones
	// before it were handled; the duplicate after it is proven by a 9.
	fd, err := c.Take(ctx, 8)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	c.Expect(9)
	sendRaw(t, peer, record(KindDmabuf, 9), many[0])
	fd, err = c.Take(ctx, 9)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if got := fdcount.Open(t); got != before {
		t.Errorf("%d fds open after bad records, want %d: a bad record's fd leaked", got, before)
	}
	mu.Lock()
	if len(dropped) < 5 {
		t.Errorf("only %d drops logged: %q", len(dropped), dropped)
	}
	mu.Unlock()
	for _, fd := range many {
		unix.Close(fd)
	}
}

func TestTakeCancelAndClose(t *testing.T) {
	c, peer := pair(t, Options{Accept: KindDmabuf, Strict: true})
	before := fdcount.Open(t)

	c.Expect(1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Take(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Take with cancelled ctx: %v", err)
	}
	// The forgotten tag's fd is closed on arrival.
	fd := memfdWith(t, "late")
	sendRaw(t, peer, record(KindDmabuf, 1), fd)
	c.Expect(2)
	sendRaw(t, peer, record(KindDmabuf, 2), fd)
	got, err := c.Take(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(got)
	unix.Close(fd)
	if n := fdcount.Open(t); n != before {
		t.Errorf("%d fds open, want %d: late fd not closed", n, before)
	}

	// Forget closes an fd that already arrived.
	c.Expect(3)
	c.Expect(4)
	fd = memfdWith(t, "x")
	sendRaw(t, peer, record(KindDmabuf, 3), fd)
	sendRaw(t, peer, record(KindDmabuf, 4), fd)
	unix.Close(fd)
	if got, err = c.Take(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	unix.Close(got)
	c.Forget(3)
	if n := fdcount.Open(t); n != before {
		t.Errorf("%d fds open after Forget, want %d", n, before)
	}

	// Close wakes waiters with ErrClosed and closes fds not taken.
	c.Expect(5)
	c.Expect(6)
	fd = memfdWith(t, "x")
	sendRaw(t, peer, record(KindDmabuf, 6), fd)
	c.Expect(7)
	sendRaw(t, peer, record(KindDmabuf, 7), fd)
	unix.Close(fd)
	if got, err = c.Take(context.Background(), 7); err != nil {
		t.Fatal(err)
	}
	unix.Close(got)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Take(context.Background(), 5)
		errc <- err
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("waiting Take after Close: %v, want ErrClosed", err)
	}
	if _, err := c.Take(context.Background(), 6); !errors.Is(err, ErrClosed) {
		t.Errorf("Take after Close: %v, want ErrClosed", err)
	}
	if err := c.Send(KindDmabuf, 1, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v, want ErrClosed", err)
	}
	if n := fdcount.Open(t); n != before-1 { // the conn's own socket is gone too
		t.Errorf("%d fds open after Close, want %d", n, before-1)
	}
}

func TestFromFDRejectsOtherFiles(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := FromFD(int(f.Fd())); err == nil {
		t.Error("FromFD accepted a regular file")
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if _, err := FromFD(fds[0]); err == nil || !strings.Contains(err.Error(), "SOCK_SEQPACKET") {
		t.Errorf("FromFD(stream socket) = %v, want a SOCK_SEQPACKET error", err)
	}
}

func TestDecodeRecord(t *testing.T) {
	k, tag, err := decodeRecord(record(KindStaging, 1<<40+3))
	if err != nil || k != KindStaging || tag != 1<<40+3 {
		t.Errorf("decodeRecord(encode) = %v, %d, %v", k, tag, err)
	}
	if _, _, err := decodeRecord(record(KindStaging, 1)[:15]); err == nil {
		t.Error("short record accepted")
	}
	bad := record(KindStaging, 1)
	bad[0] = 'X'
	if _, _, err := decodeRecord(bad); err == nil {
		t.Error("bad magic accepted")
	}
}

// FuzzParseRights checks that arbitrary control bytes never panic the parser
// and that an error-free parse only reports SCM_RIGHTS payloads.
func FuzzParseRights(f *testing.F) {
	f.Add(unix.UnixRights(3, 4))
	f.Add(append(unix.UnixRights(5), unix.UnixCredentials(&unix.Ucred{Pid: 1})...))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, oob []byte) {
		fds, err := parseRights(oob)
		if 4*len(fds) > len(oob) {
			t.Fatalf("%d fds from %d control bytes", len(fds), len(oob))
		}
		if err == nil && len(oob) > 0 && len(oob) < unix.SizeofCmsghdr {
			t.Fatalf("%d bytes parsed without error", len(oob))
		}
	})
}

func TestParseRights(t *testing.T) {
	oob := append(unix.UnixRights(3, 4), unix.UnixRights(5)...)
	fds, err := parseRights(oob)
	if err != nil || len(fds) != 3 || fds[0] != 3 || fds[1] != 4 || fds[2] != 5 {
		t.Errorf("parseRights(rights 3 4, rights 5) = %v, %v", fds, err)
	}
	oob = append(unix.UnixCredentials(&unix.Ucred{Pid: 1}), unix.UnixRights(6)...)
	fds, err = parseRights(oob)
	if err == nil || len(fds) != 1 || fds[0] != 6 {
		t.Errorf("parseRights(credentials, rights 6) = %v, %v; want [6] and an error", fds, err)
	}
	if fds, err := parseRights(unix.UnixRights(7)[:10]); err == nil || len(fds) != 0 {
		t.Errorf("parseRights(short) = %v, %v; want an error", fds, err)
	}
}
