package engine_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// preAuthWant is what the server may write to a connection that sends a
// given byte stream and then half-closes, before it has authenticated
// (docs/protocol.md sections 3 and 6.1).
type preAuthWant struct {
	challenge bool            // a Challenge answers a well-formed Hello first
	code      blockproto.Code // then one Error{0, code}; 0: nothing at all
}

// preAuthOracle models the server's checks on stream: the preamble
// (section 3: bad magic, reserved bytes and data connections with unknown
// tokens are closed silently; another version on a control connection gets
// one version Error), then the handshake, which nobody can pass without the
// key and the server's fresh nonce, so it ends in one auth Error, after a
// Challenge if the first frame was a valid Hello of at most
// MaxHandshakeFrame bytes.
func preAuthOracle(stream []byte) preAuthWant {
	if len(stream) < blockproto.PreambleLen {
		return preAuthWant{}
	}
	control := bytes.HasPrefix(stream, []byte("BXC"))
	if !control && !bytes.HasPrefix(stream, []byte("BXD")) {
		return preAuthWant{}
	}
	if stream[3] != blockproto.Version {
		if control {
			return preAuthWant{code: blockproto.CodeVersion}
		}
		return preAuthWant{}
	}
	if !bytes.Equal(stream[4:8], make([]byte, 4)) || !control {
		return preAuthWant{}
	}
	w := preAuthWant{code: blockproto.CodeAuth}
	rest := stream[blockproto.PreambleLen:]
	if len(rest) >= blockproto.FrameHeaderLen {
		n := binary.BigEndian.Uint32(rest)
		if n >= 1 && n <= blockproto.MaxHandshakeFrame && len(rest) >= blockproto.FrameHeaderLen+int(n) {
			m, err := blockproto.Unmarshal(rest[blockproto.FrameHeaderLen : blockproto.FrameHeaderLen+int(n)])
			_, hello := m.(*blockproto.Hello)
			w.challenge = err == nil && hello
		}
	}
	return w
}

func preAuthSeeds(f *testing.F) {
	frame := func(m blockproto.Msg) []byte {
		b, err := blockproto.AppendFrame(nil, m)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	preamble := []byte{'B', 'X', 'C', blockproto.Version, 0, 0, 0, 0}
	hello := frame(&blockproto.Hello{Caps: blockproto.CapTCP, Client: "fuzz"})
	auth := frame(&blockproto.Auth{})
	header := func(n uint32, typ blockproto.Type) []byte {
		return append(binary.BigEndian.AppendUint32(nil, n), byte(typ))
	}
	for _, in := range [][]byte{
		nil,
		hello,
		cat(hello, auth),
		cat(hello, hello),
		cat(hello, header(blockproto.MaxFrame, blockproto.TypeAuth)),
		cat(hello, frame(&blockproto.ListVolumes{})),
		hello[:len(hello)-1],
		cat(hello[:4], []byte{byte(blockproto.TypeHello)}, hello[5:], []byte{0}), // trailing byte, length unchanged
		header(blockproto.MaxHandshakeFrame+1, blockproto.TypeHello),
		header(blockproto.MaxFrame, blockproto.TypeHello),
		header(0xffffffff, blockproto.TypeHello),
		{0, 0, 0, 0},
		{0, 0, 0, 1, 200},
		auth,
		frame(&blockproto.ListVolumes{}),
		frame(&blockproto.Read{ID: 1, Volume: "vol", Length: 1}),
		frame(&blockproto.Ping{Seq: 1}),
		[]byte("garbage that is not blockxfer at all\r\n"),
	} {
		f.Add(true, in)
	}
	for _, in := range [][]byte{
		nil,
		[]byte("BX"),
		[]byte("GET / HTTP/1.1\r\nHost: blockd\r\n\r\n"),
		{'B', 'X', 'C', 2, 0, 0, 0, 0},
		{'B', 'X', 'C', 0, 0, 0, 0, 0},
		{'B', 'X', 'C', blockproto.Version, 0, 0, 1, 0},
		{'B', 'X', 'D', 9, 0, 0, 0, 0},
		cat([]byte{'B', 'X', 'D', blockproto.Version, 0, 0, 0, 0}, make([]byte, blockproto.TokenLen)),
		cat([]byte{'B', 'X', 'D', blockproto.Version, 0, 0, 0, 0}, make([]byte, 5)),
		cat(preamble, hello, auth),
		cat(preamble, header(1<<20, blockproto.TypeHello)),
		bytes.Repeat([]byte{0xff}, 600),
	} {
		f.Add(false, in)
	}
}

// FuzzPreAuth feeds arbitrary bytes to a server as the first bytes of a
// connection, after a valid control preamble when preamble is set, then
// half-closes it. The server writes at most one Error (auth or version),
// preceded only by the Challenge a valid Hello earns, or nothing, and
// closes the connection; it stays usable for a normal client.
func FuzzPreAuth(f *testing.F) {
	store, err := catalog.OpenStore(f.TempDir(), nil)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := store.Create(context.Background(), "vol", 4096, 4096, catalog.FillRandom); err != nil {
		f.Fatal(err)
	}
	srv, err := engine.NewServer(engine.ServerConfig{Key: testKey, Volumes: store, Transport: &tcp.Transport{}, Name: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	f.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, engine.ErrServerClosed) {
			f.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		store.Close()
	})
	preAuthSeeds(f)

	f.Fuzz(func(t *testing.T, preamble bool, in []byte) {
		e := &env{t: t, addr: l.Addr().String(), srv: srv, store: store}
		stream := in
		if preamble {
			stream = append([]byte{'B', 'X', 'C', blockproto.Version, 0, 0, 0, 0}, in...)
		}
		want := preAuthOracle(stream)

		c := e.rawConn(t)
		// The server may close before it has read everything (a reset
		// then fails the write): what it wrote is still read below.
		c.Write(stream)
		c.(*net.TCPConn).CloseWrite()
		out, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection not closed after %d bytes written (%q so far)", len(stream), out)
		}
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read: %v", err)
		}

		var frames []blockproto.Msg
		for rest := out; len(rest) > 0; {
			if len(rest) < blockproto.FrameHeaderLen {
				t.Fatalf("server wrote %q: a cut frame header", out)
			}
			n := binary.BigEndian.Uint32(rest)
			if n == 0 || int(n) > len(rest)-blockproto.FrameHeaderLen {
				t.Fatalf("server wrote %q: not whole frames", out)
			}
			m, err := blockproto.Unmarshal(rest[blockproto.FrameHeaderLen : blockproto.FrameHeaderLen+int(n)])
			if err != nil {
				t.Fatalf("server wrote an invalid frame %q: %v", out, err)
			}
			frames = append(frames, m)
			rest = rest[blockproto.FrameHeaderLen+int(n):]
		}
		if want.challenge {
			if len(frames) == 0 {
				t.Fatalf("a valid Hello got no Challenge; server wrote %q", out)
			}
			if _, ok := frames[0].(*blockproto.Challenge); !ok {
				t.Fatalf("a valid Hello got %#v, want a Challenge", frames[0])
			}
			frames = frames[1:]
		}
		switch {
		case want.code == 0 && len(frames) != 0:
			t.Fatalf("server wrote %d frames (%#v); want the connection closed without a write", len(frames), frames[0])
		case want.code != 0 && len(frames) != 1:
			t.Fatalf("server wrote %d frames %#v; want exactly one Error{0, %s}", len(frames), frames, want.code)
		case want.code != 0:
			pe, ok := frames[0].(*blockproto.Error)
			if !ok || pe.ID != 0 || pe.Code != want.code {
				t.Fatalf("server wrote %#v; want Error{0, %s}", frames[0], want.code)
			}
			if want.code == blockproto.CodeAuth && pe.Message != "authentication failed" {
				t.Fatalf("auth Error says %q: it must not say which check failed", pe.Message)
			}
			if want.code == blockproto.CodeVersion && !strings.Contains(pe.Message, "peer speaks protocol version") {
				t.Fatalf("version Error says %q", pe.Message)
			}
		}

		// The server forgets the connection and still serves.
		eventually(t, "no pending connections", func() bool { return srv.Pending() == 0 })
		vols, err := e.client(func(c *engine.Config) { c.DataConns = 1 }).Volumes(context.Background())
		if err != nil || len(vols) != 1 || vols[0].Name != "vol" {
			t.Fatalf("server unusable after the input: %v, %v", vols, err)
		}
	})
}
