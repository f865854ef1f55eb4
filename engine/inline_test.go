package engine_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/engine"
)

// tamperProxy stands between a client and a server: it forwards data
// connections as they are and passes every frame of the control
// connection through edit (toClient: sent by the server), as a hostile
// server, or a hostile network, could change them. Frames carry no MAC
// after the handshake.
type tamperProxy struct {
	t    *testing.T
	l    net.Listener
	to   string
	edit func(m blockproto.Msg, toClient bool) blockproto.Msg
	wg   sync.WaitGroup
}

func newTamperProxy(t *testing.T, to string, edit func(blockproto.Msg, bool) blockproto.Msg) *tamperProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tamperProxy{t: t, l: l, to: to, edit: edit}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() { l.Close(); p.wg.Wait() })
	return p
}

func (p *tamperProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.relay(c)
		}()
	}
}

// relay forwards one connection until either side closes it.
func (p *tamperProxy) relay(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", p.to)
	if err != nil {
		return
	}
	defer s.Close()
	pre := make([]byte, 8)
	if _, err := io.ReadFull(c, pre); err != nil {
		return
	}
	if _, err := s.Write(pre); err != nil {
		return
	}
	var once sync.Once
	both := func() { c.Close(); s.Close() }
	pipe := func(dst, src net.Conn, toClient bool) {
		defer once.Do(both)
		if string(pre[:3]) != "BXC" {
			// Plain reads and writes: io.Copy between two TCP
			// connections would splice through pipes that Go keeps
			// pooled, which the test's fd count would see as leaked.
			io.Copy(struct{ io.Writer }{dst}, struct{ io.Reader }{src})
			return
		}
		in, out := blockproto.NewConn(src), blockproto.NewConn(dst)
		for {
			m, err := in.ReadMsg()
			if err != nil {
				return
			}
			if err := out.WriteMsg(p.edit(m, toClient)); err != nil {
				return
			}
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); pipe(c, s, true) }()
	pipe(s, c, false)
	wg.Wait()
}

// TestInlineExtentsFromAHostileServer: extents whose bytes come inline in
// their Extent are held to the same rules as those on data connections.
// A client that did not offer CapInlineData refuses them; one outside its
// request ends the session; bytes that do not match the Extent's CRC fail
// the read. No such read returns success.
func TestInlineExtentsFromAHostileServer(t *testing.T) {
	for _, tc := range []struct {
		name     string
		noInline bool // the client does not offer CapInlineData; the proxy offers it for it
		extent   func(*blockproto.Extent)
		want     func(error) bool
	}{
		{"not offered", true, nil, func(err error) bool {
			return errors.Is(err, engine.ErrSessionClosed) && strings.Contains(err.Error(), "did not offer")
		}},
		{"outside the request", false, func(e *blockproto.Extent) { e.VolumeOffset += 64 << 10 }, func(err error) bool {
			return errors.Is(err, engine.ErrSessionClosed) && strings.Contains(err.Error(), "outside the request")
		}},
		{"bytes changed", false, func(e *blockproto.Extent) { e.Data[100] ^= 1 }, func(err error) bool {
			return errors.Is(err, engine.ErrChecksum)
		}},
		{"untouched", false, func(*blockproto.Extent) {}, func(err error) bool { return err == nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{})
			want := e.volume("v", 1<<20, 256<<10)
			var inlined sync.WaitGroup
			inlined.Add(1)
			var seen sync.Once
			proxy := newTamperProxy(t, e.addr, func(m blockproto.Msg, toClient bool) blockproto.Msg {
				switch m := m.(type) {
				case *blockproto.Hello:
					if tc.noInline {
						m.Caps |= blockproto.CapInlineData
					}
				case *blockproto.Extent:
					if toClient && m.Data != nil {
						seen.Do(inlined.Done)
						if tc.extent != nil {
							tc.extent(m)
						}
					}
				}
				return m
			})
			e.addr = proxy.l.Addr().String()
			c := e.client(func(c *engine.Config) {
				if tc.noInline {
					engine.WithoutInline(c)
				}
			})
			r := engine.Range{Offset: 300 << 10, Length: 4 << 10} // inside one extent: sent inline
			buf, mem := c.alloc(t, r.Length)
			_, err := c.Read(context.Background(), "v", []engine.Range{r}, buf)
			inlined.Wait() // the server did send it inline
			if !tc.want(err) {
				t.Fatalf("read: %v", err)
			}
			if err == nil && !bytes.Equal(mem, want[r.Offset:r.Offset+r.Length]) {
				t.Fatal("bytes differ")
			}
		})
	}
}
