package tcp_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		acc <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-acc
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestSendExtentFromOffset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vol")
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<14) // 256 KiB
	os.WriteFile(path, data, 0o644)
	f, _ := os.Open(path)
	defer f.Close()
	c, s := pair(t)
	snd, err := (&tcp.Transport{}).NewSender(s)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		errc <- errors.Join(snd.SendExtent(f, 1000, 5000), snd.SendExtent(f, 7, 3))
	}()
	got := make([]byte, 5003)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:5000], data[1000:6000]) || !bytes.Equal(got[5000:], data[7:10]) {
		t.Fatal("sent bytes differ from the file ranges")
	}
}

// A backing file shorter than the extent: the sender pads with zeros so the
// stream stays in step, and reports transport.ErrSource.
func TestSendExtentPadsShortFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vol")
	os.WriteFile(path, []byte("abcdef"), 0o644)
	f, _ := os.Open(path)
	defer f.Close()
	c, s := pair(t)
	snd, _ := (&tcp.Transport{}).NewSender(s)
	errc := make(chan error, 1)
	go func() { errc <- snd.SendExtent(f, 2, 10) }()
	got := make([]byte, 10)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if want := append([]byte("cdef"), make([]byte, 6)...); !bytes.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if err := <-errc; !errors.Is(err, transport.ErrSource) {
		t.Fatalf("error %v, want ErrSource", err)
	}
}

// unmapped hides hostmem's Mapper, so the receiver stages and calls CopyIn.
type unmapped struct{ *hostmem.Provider }

func (u unmapped) Capabilities() memory.Capabilities {
	c := u.Provider.Capabilities()
	c.CPUMappable = false
	return c
}

func TestReceiveStagedAndProviderFailure(t *testing.T) {
	hm := hostmem.New()
	defer hm.Close()
	p := unmapped{hm}
	buf, _ := p.Alloc(context.Background(), 3<<20, false)
	c, s := pair(t)
	r, err := (&tcp.Transport{Staging: 64 << 10}).NewReceiver(c, p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	payload := bytes.Repeat([]byte{7, 8, 9}, 1<<20)
	go s.Write(append(payload, []byte("tail")...))
	// Past the end of the buffer: the provider refuses, the bytes are
	// consumed anyway and the error says the stream is still good.
	err = r.Receive(context.Background(), buf.ID, 1<<20, 3<<20)
	if !errors.Is(err, transport.ErrProvider) || !errors.Is(err, memory.ErrOutOfBounds) {
		t.Fatalf("receive past the end: %v", err)
	}
	if err := r.Receive(context.Background(), buf.ID, 0, 4); err != nil {
		t.Fatal(err)
	}
	mem, _ := hm.Bytes(buf.ID)
	if string(mem[:4]) != "tail" {
		t.Fatalf("stream out of step after a provider failure: %q", mem[:4])
	}
}
