package tcp_test

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/blockxfer/blockxfer/engine"
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

// volumeFile returns a file holding data, closed when the test ends.
func volumeFile(t *testing.T, data []byte) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vol")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestSendExtentFromOffset(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<14) // 256 KiB
	f := volumeFile(t, data)
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
	f := volumeFile(t, []byte("abcdef"))
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

// staged is a host provider that is not mapped here but lends staging and
// checksums copy-ins, as a plugin does; refuse makes CopyInChecksum fail
// with memory.ErrNoCopyInChecksum, as a plugin without it does.
type staged struct {
	unmapped
	staging      []byte
	refuse       bool
	sums, copies int
}

func (p *staged) Stage(context.Context) ([]byte, func(), error) { return p.staging, func() {}, nil }

func (p *staged) CopyIn(ctx context.Context, dst memory.BufferID, off int64, src []byte) error {
	p.copies++
	return p.unmapped.CopyIn(ctx, dst, off, src)
}

func (p *staged) CopyInChecksum(ctx context.Context, dst memory.BufferID, off int64, src []byte, crc uint32) (uint32, error) {
	if p.refuse {
		return 0, memory.ErrNoCopyInChecksum
	}
	p.sums++
	if err := p.unmapped.CopyIn(ctx, dst, off, src); err != nil {
		return 0, err
	}
	mem, _ := p.Bytes(dst)
	return crc32.Update(crc, crc32.MakeTable(crc32.Castagnoli), mem[off:off+int64(len(src))]), nil
}

func TestReceiveChecksum(t *testing.T) {
	ctx := context.Background()
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	hm := hostmem.New()
	defer hm.Close()
	payload := bytes.Repeat([]byte{1, 2, 3, 4, 5}, 100<<10) // 500 KiB
	for _, refuse := range []bool{false, true} {
		p := &staged{unmapped: unmapped{hm}, staging: make([]byte, 64<<10), refuse: refuse}
		buf, _ := p.Alloc(ctx, int64(len(payload)), false)
		c, s := pair(t)
		r, err := (&tcp.Transport{}).NewReceiver(c, p)
		if err != nil {
			t.Fatal(err)
		}
		cr, ok := r.(engine.ChecksumReceiver)
		if !ok {
			t.Fatalf("the receiver for a provider that checksums copy-ins is %T, not a ChecksumReceiver", r)
		}
		go s.Write(payload)
		// Two calls, the second continuing the first's checksum, each
		// over several staging chunks.
		half := int64(len(payload) / 2)
		sum, ok1, err := cr.ReceiveChecksum(ctx, buf.ID, 0, half, 0)
		if err != nil {
			t.Fatal(err)
		}
		sum, ok2, err := cr.ReceiveChecksum(ctx, buf.ID, half, int64(len(payload))-half, sum)
		if err != nil {
			t.Fatal(err)
		}
		mem, _ := hm.Bytes(buf.ID)
		if !bytes.Equal(mem, payload) {
			t.Fatalf("refuse=%v: the bytes that landed differ from those sent", refuse)
		}
		perChunk := func(n int64) int { return int((n + int64(len(p.staging)) - 1) / int64(len(p.staging))) }
		chunks := perChunk(half) + perChunk(int64(len(payload))-half)
		if refuse {
			// Refused once, then copied in plainly without asking again.
			if ok1 || ok2 || p.copies != chunks || p.sums != 0 {
				t.Errorf("refusing provider: ok %v %v, %d copy-ins, %d checksummed, want false false %d 0", ok1, ok2, p.copies, p.sums, chunks)
			}
		} else {
			if want := crc32.Checksum(payload, castagnoli); !ok1 || !ok2 || sum != want {
				t.Errorf("checksum %#x ok %v %v, want %#x true true", sum, ok1, ok2, want)
			}
			if p.copies != 0 || p.sums != chunks {
				t.Errorf("%d plain copy-ins, %d checksummed, want 0 and %d", p.copies, p.sums, chunks)
			}
		}
		r.Close()
	}
	// A provider without CopyInChecksum gets the plain receiver.
	c, _ := pair(t)
	r, _ := (&tcp.Transport{}).NewReceiver(c, unmapped{hm})
	if _, ok := r.(engine.ChecksumReceiver); ok {
		t.Error("the receiver for a provider that does not checksum copy-ins offers ReceiveChecksum")
	}
}

// TestSendExtentAfter: a header, then the file's bytes, with the short-file
// padding of SendExtent, over a TCP socket (sendfile) and over a pipe
// (through user space).
func TestSendExtentAfter(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<12) // 64 KiB
	f := volumeFile(t, data)
	hdr := []byte("header:")
	for name, conns := range map[string]func() (net.Conn, net.Conn){
		"tcp": func() (net.Conn, net.Conn) { return pair(t) },
		"pipe": func() (net.Conn, net.Conn) {
			c, s := net.Pipe()
			t.Cleanup(func() { c.Close(); s.Close() })
			return c, s
		},
	} {
		c, s := conns()
		snd, err := (&tcp.Transport{}).NewSender(s)
		if err != nil {
			t.Fatal(err)
		}
		hs, ok := snd.(transport.HeaderSender)
		if !ok {
			t.Fatalf("%s: %T is not a transport.HeaderSender", name, snd)
		}
		errc := make(chan error, 2)
		go func() {
			errc <- hs.SendExtentAfter(hdr, f, 100, int64(len(data))-100)
			errc <- hs.SendExtentAfter(hdr, f, int64(len(data))-4, 10) // 4 bytes, then 6 zeros
		}()
		got := make([]byte, 2*len(hdr)+len(data)-100+10)
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		want := slices.Concat(hdr, data[100:], hdr, data[len(data)-4:], make([]byte, 6))
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: received bytes differ from header, file range, header, padded range", name)
		}
		if err := <-errc; err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := <-errc; !errors.Is(err, transport.ErrSource) {
			t.Fatalf("%s: short file: %v, want ErrSource", name, err)
		}
	}
}
