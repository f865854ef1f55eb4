package tcp_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// TestTrySendExtent, against the kernel: TrySendExtent sends what the
// socket takes at once and returns, with nobody reading (a blocking send
// would hang the test here); SendExtent of the rest completes the stream
// in order; at the end of the file it stops short, and SendExtent pads.
func TestTrySendExtent(t *testing.T) {
	const size = 64 << 20 // more than any socket buffer holds
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{3}).Read(data)
	f := volumeFile(t, data)
	c, s := pair(t)
	snd, err := (&tcp.Transport{}).NewSender(s)
	if err != nil {
		t.Fatal(err)
	}
	ts, ok := snd.(transport.TrySender)
	if !ok {
		t.Fatalf("%T is not a transport.TrySender", snd)
	}
	const off = 123
	n := int64(size - off)
	sent := ts.TrySendExtent(f, off, n)
	if sent <= 0 || sent >= n {
		t.Fatalf("TrySendExtent of %d bytes to an idle reader that reads nothing sent %d, want some but not all", n, sent)
	}
	// The rest, then an extent past the end of the file: TrySendExtent
	// takes what the file has, SendExtent pads the rest with zeros.
	const tail = 100
	errc := make(chan error, 1)
	go func() {
		err := snd.SendExtent(f, off+sent, n-sent)
		if err == nil {
			if k := ts.TrySendExtent(f, size-tail, 2*tail); k > tail {
				err = errors.New("TrySendExtent sent past the end of the file")
			} else if perr := snd.SendExtent(f, size-tail+k, 2*tail-k); !errors.Is(perr, transport.ErrSource) {
				err = errors.Join(errors.New("SendExtent past the end of the file did not report ErrSource"), perr)
			}
		}
		errc <- err
	}()
	got := make([]byte, n+2*tail)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:n], data[off:]) {
		t.Fatal("the stream differs from the file range")
	}
	if !bytes.Equal(got[n:n+tail], data[size-tail:]) || !bytes.Equal(got[n+tail:], make([]byte, tail)) {
		t.Fatal("the extent past the end: want the file's last bytes, then zeros")
	}
}
