package tcp_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// rcvlowat reads the socket's SO_RCVLOWAT from the kernel.
func rcvlowat(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	return v
}

// TestReceiveWaitsOnlyForOwedBytes: the receiver has the kernel wake it
// only once many bytes have arrived (SO_RCVLOWAT), but never waits for
// more than the stream owes the receive in hand: an extent's last bytes,
// and a short extent after a long one, arrive with nothing behind them and
// must still be read. Against the real kernel; the read deadline turns a
// receive waiting for bytes that are not coming into a failure.
func TestReceiveWaitsOnlyForOwedBytes(t *testing.T) {
	hm := hostmem.New()
	defer hm.Close()
	ctx := context.Background()
	const long = 3<<20 + 123 // several marks' worth, and a ragged end
	buf, err := hm.Alloc(ctx, long, false)
	if err != nil {
		t.Fatal(err)
	}
	c, s := pair(t)
	r, err := (&tcp.Transport{}).NewReceiver(c, hm)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if got := rcvlowat(t, c.(syscall.Conn)); got != 1 {
		t.Fatalf("SO_RCVLOWAT before any receive: %d, want the kernel's default 1", got)
	}

	payload := make([]byte, long)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	tail := []byte("the last 37 bytes of the whole stream")
	// The sender writes the long extent in uneven pieces, then the short
	// one, and then nothing more (no FIN).
	go func() {
		for p := payload; len(p) > 0; {
			n := min(len(p), 100_000+rng.IntN(200_000))
			s.Write(p[:n])
			p = p[n:]
		}
		s.Write(tail)
	}()
	if err := r.Receive(ctx, buf.ID, 0, long); err != nil {
		t.Fatalf("receive the long extent: %v", err)
	}
	mem, _ := hm.Bytes(buf.ID)
	if !bytes.Equal(mem[:long], payload) {
		t.Fatal("long extent: bytes differ")
	}
	if err := r.Discard(ctx, int64(len(tail))); err != nil {
		t.Fatalf("discard the short extent after the long one: %v", err)
	}
	// The last mark set is what the last read was owed: the short extent.
	if got := rcvlowat(t, c.(syscall.Conn)); got != len(tail) {
		t.Errorf("SO_RCVLOWAT after the short extent: %d, want %d", got, len(tail))
	}

	// A receive of a few bytes after the mark was lowered, and one larger
	// than a mark: each gets its bytes.
	go s.Write(payload[:700<<10])
	if err := r.Receive(ctx, buf.ID, 0, 700<<10); err != nil {
		t.Fatalf("receive 700 KiB: %v", err)
	}
	if !bytes.Equal(mem[:700<<10], payload[:700<<10]) {
		t.Fatal("700 KiB: bytes differ")
	}
}
