package engine_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"sync/atomic"
	"testing"

	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// trying is the TCP transport whose senders' TrySendExtent takes only
// part of what it is offered (keep: n → bytes to try), as a socket with
// little room would, and counts the calls.
type trying struct {
	tcp.Transport
	keep  func(n int64) int64
	tries atomic.Int64
}

func (t *trying) NewSender(c net.Conn) (transport.Sender, error) {
	s, err := t.Transport.NewSender(c)
	if err != nil {
		return nil, err
	}
	return &tryingSender{Sender: s, t: t}, nil
}

type tryingSender struct {
	transport.Sender
	t *trying
}

func (s *tryingSender) TrySendExtent(f *os.File, off, n int64) int64 {
	s.t.tries.Add(1)
	return s.Sender.(transport.TrySender).TrySendExtent(f, off, s.t.keep(n))
}

// TestLoneReadSentByAnnouncer: the small extent of a session's only read
// is sent by the goroutine that announced it (TrySendExtent), and what the
// connection did not take at once (half of it, or all of it) is sent by
// the connection's sender after it: the bytes arrive whole and in order
// either way.
func TestLoneReadSentByAnnouncer(t *testing.T) {
	for _, tc := range []struct {
		name string
		keep func(n int64) int64
	}{
		{"whole", func(n int64) int64 { return n }},
		{"half", func(n int64) int64 { return n / 2 }},
		{"none", func(int64) int64 { return 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &trying{keep: tc.keep}
			e := newEnv(t, envOpts{transport: tr})
			const ext = 64 << 10
			want := e.volume("vol", 16*ext, ext)
			c := e.client(nil)
			buf, mem := c.alloc(t, ext)
			for _, i := range []int{3, 0, 15, 7} { // whole extents: sent from the file
				off := int64(i) * ext
				if _, err := c.Read(context.Background(), "vol", []engine.Range{{Offset: off, Length: ext}}, buf); err != nil {
					t.Fatalf("read extent %d: %v", i, err)
				}
				if !bytes.Equal(mem, want[off:off+ext]) {
					t.Fatalf("extent %d: bytes differ", i)
				}
			}
			if n := tr.tries.Load(); n != 4 {
				t.Errorf("TrySendExtent called %d times for 4 lone reads, want 4", n)
			}
		})
	}
}
