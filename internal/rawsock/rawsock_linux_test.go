package rawsock_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/blockxfer/blockxfer/internal/rawsock"
)

// pair returns the two ends of a loopback TCP connection, the first one
// wrapped.
func pair(t *testing.T) (*rawsock.Conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	w, ok := rawsock.Wrap(c).(*rawsock.Conn)
	if !ok {
		t.Fatalf("Wrap(%T) did not wrap it", c)
	}
	t.Cleanup(func() { w.Close(); peer.Close() })
	return w, peer.(*net.TCPConn)
}

func TestWrapLeavesOtherConnsAlone(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := rawsock.Wrap(a); got != a {
		t.Fatalf("Wrap(net.Pipe) = %T, want the pipe itself", got)
	}
}

// TestRoundTrip moves 8 MiB each way at once, far more than the socket
// buffers hold, so both Write and Read wait in the poller (EAGAIN) many
// times; every byte must arrive in order.
func TestRoundTrip(t *testing.T) {
	w, peer := pair(t)
	out := make([]byte, 8<<20)
	in := make([]byte, 8<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range out {
		out[i] = byte(rng.Uint32())
		in[i] = byte(rng.Uint32())
	}
	errc := make(chan error, 2)
	go func() {
		_, err := peer.Write(in)
		errc <- err
	}()
	var echoed bytes.Buffer
	go func() {
		_, err := io.CopyN(&echoed, peer, int64(len(out)))
		errc <- err
	}()
	if n, err := w.Write(out); err != nil || n != len(out) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(out))
	}
	got := make([]byte, len(in))
	if _, err := io.ReadFull(w, got); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, in) {
		t.Error("bytes read differ from the bytes the peer wrote")
	}
	if !bytes.Equal(echoed.Bytes(), out) {
		t.Error("bytes the peer read differ from the bytes written")
	}
	if n, err := w.Read(nil); n != 0 || err != nil {
		t.Errorf("Read(nil) = %d, %v; want 0, nil", n, err)
	}
}

func TestEOFAndHalfClose(t *testing.T) {
	w, peer := pair(t)
	if err := w.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(peer); err != nil || len(b) != 0 {
		t.Fatalf("peer read %q, %v after CloseWrite; want EOF", b, err)
	}
	peer.Write([]byte("last"))
	peer.CloseWrite()
	b, err := io.ReadAll(w)
	if err != nil || string(b) != "last" {
		t.Fatalf("ReadAll = %q, %v; want \"last\"", b, err)
	}
	if n, err := w.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("Read after the end = %d, %v; want io.EOF", n, err)
	}
}

func TestDeadline(t *testing.T) {
	w, _ := pair(t)
	w.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := w.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past its deadline: %v; want a timeout", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Errorf("error %v: want a *net.OpError with Op read", err)
	}
	// The peer reads nothing, so the writes fill both socket buffers
	// and then wait until the deadline.
	w.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	n, err := w.Write(make([]byte, 64<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("Write past its deadline: %d, %v; want a write timeout", n, err)
	}
	if n <= 0 || n >= 64<<20 {
		t.Errorf("Write past its deadline wrote %d bytes; want what the buffers took", n)
	}
}

func TestCloseWakesRead(t *testing.T) {
	w, _ := pair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := w.Read(make([]byte, 1))
		errc <- err
	}()
	// The Read may start before or after Close; either way it must end
	// with net.ErrClosed.
	w.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read on a closed conn: %v; want net.ErrClosed", err)
	}
}

func TestReset(t *testing.T) {
	w, peer := pair(t)
	peer.SetLinger(0) // close sends RST
	w.Write([]byte("unread"))
	peer.Close()
	var err error
	for err == nil {
		_, err = w.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read after the peer reset: %v; want ECONNRESET", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" || oe.Addr == nil {
		t.Errorf("error %v: want a *net.OpError naming read and the peer", err)
	}
}
