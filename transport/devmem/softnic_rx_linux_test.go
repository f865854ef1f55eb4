//go:build linux

package devmem

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

// rxSetup is a software NIC with an RX binding over a provider arena.
type rxSetup struct {
	nic   *SoftNIC
	p     *hostProvider
	arena memory.Buffer
	bind  *Binding
}

func newRXSetup(t *testing.T, cfg SoftNICConfig, arenaSize int64) *rxSetup {
	t.Helper()
	nic, err := NewSoftNIC(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := newHostProvider()
	arena, err := p.Alloc(context.Background(), arenaSize, true)
	if err != nil {
		t.Fatal(err)
	}
	bind, err := nic.BindRX(1, arena.DmabufFD, []uint32{0})
	if err != nil {
		t.Fatal(err)
	}
	s := &rxSetup{nic: nic, p: p, arena: arena, bind: bind}
	t.Cleanup(func() {
		_ = bind.Close()
		if err := nic.Check(); err != nil {
			t.Errorf("software NIC after the test: %v", err)
		}
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// writeAll writes data to c from a goroutine that the test waits for.
func writeAll(t *testing.T, c net.Conn, data []byte) (wait func()) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := c.Write(data); err != nil {
			t.Errorf("write: %v", err)
		}
	}()
	return wg.Wait
}

func TestSoftNICReceive(t *testing.T) {
	for _, tc := range []struct {
		name      string
		nic       SoftNICConfig
		rx        RXConfig
		network   string
		maxExtent int
	}{
		{name: "devmem only", network: "tcp4", maxExtent: 300 << 10},
		{name: "linear frags", nic: SoftNICConfig{LinearEvery: 3, LinearBytes: 1000, SkbSize: 16 << 10}, network: "tcp4", maxExtent: 100 << 10},
		{name: "whole linear skbs", nic: SoftNICConfig{LinearEvery: 2, LinearBytes: 1 << 20}, network: "tcp6", maxExtent: 64 << 10},
		{name: "unsplit skbs", nic: SoftNICConfig{UnsplitEvery: 3, SkbSize: 16 << 10}, network: "tcp4", maxExtent: 100 << 10},
		{name: "unsplit and linear skbs small iovec", rx: RXConfig{IOBufSize: 32 << 10}, nic: SoftNICConfig{UnsplitEvery: 4, LinearEvery: 3, LinearBytes: 500, SkbSize: 8 << 10}, network: "tcp6", maxExtent: 20 << 10},
		{name: "small extents", rx: RXConfig{IOBufSize: 64 << 10}, nic: SoftNICConfig{LinearEvery: 5, LinearBytes: 300}, network: "tcp4", maxExtent: 10 << 10},
		{name: "tiny budget and batches", rx: RXConfig{FragBudget: 3, GatherBatch: 2}, network: "tcp4", maxExtent: 50 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			s := newRXSetup(t, tc.nic, 1<<20)
			client, server := tcpPair(t, tc.network)
			if err := s.nic.Steer(client, 0); err != nil {
				t.Fatal(err)
			}
			const total = 4 << 20
			data := pattern(total, 1)
			dst, err := s.p.Alloc(context.Background(), total, false)
			if err != nil {
				t.Fatal(err)
			}
			rt := &RecvTransport{Kernel: s.nic, Binding: s.bind, Arena: s.arena.ID, Config: tc.rx}
			if rt.Name() != transport.DevmemEmulated {
				t.Errorf("Name = %q", rt.Name())
			}
			er, err := rt.NewReceiver(client, s.p)
			if err != nil {
				t.Fatal(err)
			}
			r := er.(*Receiver)
			wait := writeAll(t, server, data)
			defer func() {
				if t.Failed() {
					server.Close() // unblock the writer of a failed test
				}
				wait()
			}()

			rnd := rand.New(rand.NewPCG(uint64(len(tc.name)), 7))
			want := make([]byte, total)
			ctx := context.Background()
			for off := int64(0); off < total; {
				n := min(int64(1+rnd.IntN(tc.maxExtent)), total-off)
				if rnd.IntN(10) == 0 {
					if err := r.Discard(ctx, n); err != nil {
						t.Fatalf("Discard(%d) at %d: %v", n, off, err)
					}
				} else {
					if err := r.Receive(ctx, dst.ID, off, n); err != nil {
						t.Fatalf("Receive(%d) at %d: %v", n, off, err)
					}
					copy(want[off:off+n], data[off:off+n])
				}
				off += n
			}
			got, _ := s.p.Bytes(dst.ID)
			if !bytes.Equal(got, want) {
				i := 0
				for i < total && got[i] == want[i] {
					i++
				}
				t.Fatalf("received bytes differ from the sent ones, first at %d", i)
			}
			st := r.Stats()
			if st.Bytes != total || st.DevmemBytes+st.LinearBytes+st.DiscardedBytes < total-st.DiscardedBytes {
				t.Errorf("stats %+v", st)
			}
			if tc.nic.LinearEvery > 0 && st.LinearBytes == 0 {
				t.Error("no linear frags received")
			}
			if unsplit := s.nic.Stats().UnsplitBytes; unsplit > 0 && st.PlainBytes == 0 {
				t.Errorf("the NIC left %d bytes unsplit, the receiver counted none as plain", unsplit)
			}
			if tc.nic.UnsplitEvery > 0 && st.PlainBytes == 0 {
				t.Error("no unsplit skbs received")
			}
			if tc.rx.FragBudget > 0 && st.MaxHeld > tc.rx.FragBudget {
				t.Errorf("held %d tokens, budget %d", st.MaxHeld, tc.rx.FragBudget)
			}
			if err := r.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			t.Logf("stats: %+v; nic %+v", st, s.nic.Stats())
		})
	}
}

// TestSoftNICBackPressure runs more data than the arena holds through three
// receivers sharing one small binding whose budgets together exceed it: the
// NIC runs out of chunks and stops reading sockets until tokens come back.
func TestSoftNICBackPressure(t *testing.T) {
	leakCheck(t)
	s := newRXSetup(t, SoftNICConfig{SkbSize: 16 << 10}, 16*4096)
	const total = 2 << 20
	var wg sync.WaitGroup
	var waits []func()
	for i := 0; i < 3; i++ {
		client, server := tcpPair(t, "tcp4")
		if err := s.nic.Steer(client, 0); err != nil {
			t.Fatal(err)
		}
		data := pattern(total, byte(10+i))
		dst, err := s.p.Alloc(context.Background(), total, false)
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewReceiver(client, RXConfig{Kernel: s.nic, Binding: s.bind, Arena: s.arena.ID, Gather: s.p.Gather, CopyIn: s.p.CopyIn, FragBudget: 8})
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, writeAll(t, server, data))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := int64(0); off < total; off += 96 << 10 {
				n := min(96<<10, total-off)
				if err := r.Receive(context.Background(), dst.ID, off, n); err != nil {
					t.Errorf("Receive: %v", err)
					break
				}
			}
			got, _ := s.p.Bytes(dst.ID)
			if !bytes.Equal(got, data) {
				t.Error("received bytes differ")
			}
			if st := r.Stats(); st.MaxHeld > 8 {
				t.Errorf("held %d tokens, budget 8", st.MaxHeld)
			}
			if err := r.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}()
	}
	wg.Wait()
	for _, w := range waits {
		w()
	}
	st := s.nic.Stats()
	t.Logf("nic: %+v", st)
	if st.FreeChunks != 16 || st.Tokens != 0 {
		t.Errorf("after the transfers: %d of 16 chunks free, %d tokens out", st.FreeChunks, st.Tokens)
	}
}

// hogChunks takes every free chunk of s's arena through another steered
// connection, as a receiver holding its tokens would; giveBack returns them.
func hogChunks(t *testing.T, s *rxSetup, arenaSize int) (giveBack func()) {
	t.Helper()
	c, srv := tcpPair(t, "tcp4")
	if err := s.nic.Steer(c, 0); err != nil {
		t.Fatal(err)
	}
	sock := openSoft(t, s.nic, c)
	if _, err := srv.Write(pattern(arenaSize, 4)); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, arenaSize)
	oob := make([]byte, arenaSize/4096*devmemCmsgSpace)
	var toks []uapi.DmabufToken
	for s.nic.Stats().FreeChunks > 0 {
		_, oobn, _, err := sock.recvmsg(p, oob, unix.MSG_SOCK_DEVMEM)
		if err != nil {
			t.Fatal(err)
		}
		frags, err := ParseCmsgs(nil, oob[:oobn])
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frags {
			toks = append(toks, uapi.DmabufToken{TokenStart: f.Token, TokenCount: 1})
		}
	}
	return func() {
		t.Helper()
		if freed, err := sock.dontneed(tokenOpt(toks...)); err != nil || freed != len(toks) {
			t.Errorf("returning the hogged chunks: %d of %d freed, %v", freed, len(toks), err)
		}
	}
}

func TestSoftNICBindingClosedMidTransfer(t *testing.T) {
	for _, how := range []string{"unbind", "cancel"} {
		t.Run(how, func(t *testing.T) {
			leakCheck(t)
			// Another connection holds every chunk: the receiver waits
			// for the NIC, which waits for a chunk.
			const arenaSize = 16 * 4096
			s := newRXSetup(t, SoftNICConfig{SkbSize: 16 << 10}, arenaSize)
			giveBack := hogChunks(t, s, arenaSize)
			defer giveBack()
			client, server := tcpPair(t, "tcp4")
			if err := s.nic.Steer(client, 0); err != nil {
				t.Fatal(err)
			}
			dst, _ := s.p.Alloc(context.Background(), arenaSize, false)
			r, err := NewReceiver(client, RXConfig{Kernel: s.nic, Binding: s.bind, Arena: s.arena.ID, Gather: s.p.Gather, CopyIn: s.p.CopyIn, FragBudget: 64})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := server.Write(pattern(arenaSize, 3)); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var once sync.Once
			s.nic.mu.Lock()
			s.nic.testHookPoolWait = func() {
				once.Do(func() {
					if how == "unbind" {
						_ = s.bind.Close()
					} else {
						cancel()
					}
				})
			}
			s.nic.mu.Unlock()
			err = r.Receive(ctx, dst.ID, 0, arenaSize)
			switch how {
			case "unbind":
				if !errors.Is(err, ErrBindingClosed) || !errors.Is(err, ErrNotDevmem) {
					t.Fatalf("Receive = %v, want ErrBindingClosed", err)
				}
			case "cancel":
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("Receive = %v, want context.Canceled", err)
				}
			}
			t.Logf("Receive failed as expected: %v", err)
			if err := r.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}

// TestSoftNICReturnsTokensBeforeWaiting: a receiver keeps the tokens of
// gathered frags across Receive calls, and returns them when a recvmsg
// would wait, here for the page pool, which its own tokens emptied: it must
// not wait on itself.
func TestSoftNICReturnsTokensBeforeWaiting(t *testing.T) {
	leakCheck(t)
	const arenaSize = 16 * 4096
	s := newRXSetup(t, SoftNICConfig{SkbSize: 4096}, arenaSize)
	client, server := tcpPair(t, "tcp4")
	if err := s.nic.Steer(client, 0); err != nil {
		t.Fatal(err)
	}
	dst, _ := s.p.Alloc(context.Background(), 3*4096, false)
	r, err := NewReceiver(client, RXConfig{Kernel: s.nic, Binding: s.bind, Arena: s.arena.ID, Gather: s.p.Gather, CopyIn: s.p.CopyIn})
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(3*4096, 6)
	if _, err := server.Write(data[:2*4096]); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.Receive(ctx, dst.ID, 0, 2*4096); err != nil {
		t.Fatal(err)
	}
	held := r.Held()
	if held == 0 || s.nic.Stats().Tokens != held {
		t.Fatalf("after the first extent: receiver holds %d tokens, the NIC has %d out; want them kept", held, s.nic.Stats().Tokens)
	}
	giveBack := hogChunks(t, s, arenaSize)
	defer giveBack()
	s.nic.mu.Lock()
	s.nic.testHookPoolWait = func() {
		t.Errorf("the receiver waits for the page pool holding %d tokens", r.Held())
		giveBack() // unblock it
		giveBack = func() {}
	}
	s.nic.mu.Unlock()
	if _, err := server.Write(data[2*4096:]); err != nil {
		t.Fatal(err)
	}
	waits := r.Stats().WaitReturns
	if err := r.Receive(ctx, dst.ID, 2*4096, 4096); err != nil {
		t.Fatal(err)
	}
	if got := r.Stats().WaitReturns - waits; got != 1 {
		t.Errorf("%d recvmsg calls returned tokens before waiting, want 1", got)
	}
	got, _ := s.p.Bytes(dst.ID)
	if !bytes.Equal(got, data) {
		t.Error("received bytes differ")
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestSoftNICFailHeaderSplit makes packets fail header split on demand: the
// kernel returns such a packet as an ordinary readable skb (no devmem cmsg,
// readable even without MSG_SOCK_DEVMEM, never in the same call as devmem
// frags), and a Receiver copies its bytes in, counts them as linear and
// goes on; with RejectPlain it stops with ErrNotDevmem.
func TestSoftNICFailHeaderSplit(t *testing.T) {
	t.Run("socket", func(t *testing.T) {
		leakCheck(t)
		s := newRXSetup(t, SoftNICConfig{SkbSize: 4096}, 16*4096)
		client, server := tcpPair(t, "tcp4")
		if err := s.nic.Steer(client, 0); err != nil {
			t.Fatal(err)
		}
		sock := openSoft(t, s.nic, client)
		data := pattern(3*4096, 9)
		if _, err := server.Write(data); err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 64<<10)
		oob := make([]byte, 16*devmemCmsgSpace)
		// A devmem skb, then a 1-byte call leaves most of it queued.
		n, oobn, _, err := sock.recvmsg(p[:1], oob, unix.MSG_SOCK_DEVMEM)
		if err != nil || n != 1 || oobn != devmemCmsgSpace {
			t.Fatalf("recvmsg = %d, %d, %v", n, oobn, err)
		}
		frags, _ := ParseCmsgs(nil, oob[:oobn])
		s.nic.FailHeaderSplit(1)
		// The rest of the devmem skb comes alone: the next skb is not
		// filled while one is queued.
		n, oobn, _, err = sock.recvmsg(p, oob, unix.MSG_SOCK_DEVMEM)
		if err != nil || n != 4095 {
			t.Fatalf("recvmsg = %d, %v; want the 4095 bytes left of the devmem skb", n, err)
		}
		frags, _ = ParseCmsgs(frags, oob[:oobn])
		// The unsplit skb: plain bytes, no cmsg, readable without
		// MSG_SOCK_DEVMEM.
		n, oobn, _, err = sock.recvmsg(p, oob, 0)
		if err != nil || n != 4096 || oobn != 0 || !bytes.Equal(p[:n], data[4096:8192]) {
			t.Fatalf("recvmsg of the unsplit skb = %d, %d cmsg bytes, %v; want 4096 plain bytes", n, oobn, err)
		}
		// Header split works again for the next skb.
		if _, _, _, err := sock.recvmsg(p, oob, 0); !errors.Is(err, unix.EFAULT) {
			t.Fatalf("recvmsg without MSG_SOCK_DEVMEM of a devmem skb = %v, want EFAULT", err)
		}
		n, oobn, _, err = sock.recvmsg(p, oob, unix.MSG_SOCK_DEVMEM)
		if err != nil || n != 4096 || oobn != devmemCmsgSpace {
			t.Fatalf("recvmsg = %d, %d, %v", n, oobn, err)
		}
		frags, _ = ParseCmsgs(frags, oob[:oobn])
		var opt []uapi.DmabufToken
		for _, f := range frags {
			opt = append(opt, uapi.DmabufToken{TokenStart: f.Token, TokenCount: 1})
		}
		if freed, err := sock.dontneed(tokenOpt(opt...)); err != nil || freed != len(frags) {
			t.Fatalf("dontneed = %d, %v", freed, err)
		}
		if st := s.nic.Stats(); st.UnsplitSkbs != 1 || st.UnsplitBytes != 4096 || st.Skbs != 2 {
			t.Errorf("stats %+v", st)
		}
	})
	for _, reject := range []bool{false, true} {
		name := "receiver"
		if reject {
			name = "receiver with RejectPlain"
		}
		t.Run(name, func(t *testing.T) {
			leakCheck(t)
			s := newRXSetup(t, SoftNICConfig{SkbSize: 16 << 10}, 64*4096)
			client, server := tcpPair(t, "tcp4")
			if err := s.nic.Steer(client, 0); err != nil {
				t.Fatal(err)
			}
			const total = 1 << 20
			data := pattern(total, 4)
			dst, err := s.p.Alloc(context.Background(), total, false)
			if err != nil {
				t.Fatal(err)
			}
			r, err := NewReceiver(client, RXConfig{Kernel: s.nic, Binding: s.bind, Arena: s.arena.ID,
				Gather: s.p.Gather, CopyIn: s.p.CopyIn, FragBudget: 32, RejectPlain: reject})
			if err != nil {
				t.Fatal(err)
			}
			wait := writeAll(t, server, data)
			defer func() {
				if t.Failed() {
					server.Close() // unblock the writer of a failed test
				}
				wait()
			}()
			ctx := context.Background()
			// A third of the way in, four packets fail header split.
			if err := r.Receive(ctx, dst.ID, 0, total/3); err != nil {
				t.Fatal(err)
			}
			s.nic.FailHeaderSplit(4)
			err = r.Receive(ctx, dst.ID, total/3, total-total/3)
			if reject {
				if !errors.Is(err, ErrNotDevmem) || errors.Is(err, ErrBindingClosed) {
					t.Fatalf("Receive = %v, want ErrNotDevmem", err)
				}
				if err := r.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
				server.Close()
				return
			}
			if err != nil {
				t.Fatalf("Receive across packets that failed header split: %v", err)
			}
			got, _ := s.p.Bytes(dst.ID)
			if !bytes.Equal(got, data) {
				t.Fatal("received bytes differ from the sent ones")
			}
			st, nst := r.Stats(), s.nic.Stats()
			b, f := r.LinearPlaced()
			if nst.UnsplitSkbs != 4 || st.PlainBytes != nst.UnsplitBytes || st.PlainRecvmsgs < 1 || b != st.PlainBytes || f < st.PlainRecvmsgs {
				t.Errorf("receiver %+v, LinearPlaced %d bytes %d frags; nic %+v", st, b, f, nst)
			}
			if st.DevmemBytes+st.LinearBytes != total {
				t.Errorf("devmem %d + linear %d bytes, want %d", st.DevmemBytes, st.LinearBytes, total)
			}
			if err := r.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}

func TestSoftNICSocketRules(t *testing.T) {
	leakCheck(t)
	s := newRXSetup(t, SoftNICConfig{SkbSize: 8192}, 64*4096)
	client, server := tcpPair(t, "tcp4")
	if err := s.nic.Steer(client, 0); err != nil {
		t.Fatal(err)
	}
	sock := openSoft(t, s.nic, client)
	if _, err := server.Write(pattern(64<<10, 5)); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 64<<10)
	oob := make([]byte, 64*devmemCmsgSpace)

	_, _, _, err := sock.recvmsg(p, oob, 0)
	if !errors.Is(err, unix.EFAULT) {
		t.Errorf("recvmsg without MSG_SOCK_DEVMEM = %v, want EFAULT", err)
	}
	_, _, _, err = sock.recvmsg(p, oob[:devmemCmsgSpace-1], unix.MSG_SOCK_DEVMEM)
	if !errors.Is(err, syscall.Errno(525)) {
		t.Errorf("recvmsg with a %d-byte control buffer = %v, want errno 525", devmemCmsgSpace-1, err)
	}

	// A 5000-byte iovec cuts the second frag; its rest comes next with a
	// new token, at the same place in the chunk.
	n, oobn, _, err := sock.recvmsg(p[:5000], oob, unix.MSG_SOCK_DEVMEM)
	if err != nil || n != 5000 {
		t.Fatalf("recvmsg = %d, %v", n, err)
	}
	frags, err := ParseCmsgs(nil, oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	id := s.bind.ID()
	want := []Frag{{Offset: 0, Size: 4096, Token: 1, DmabufID: id}, {Offset: 4096, Size: 904, Token: 2, DmabufID: id}}
	if diff := cmp.Diff(want, frags); diff != "" {
		t.Fatalf("frags (-want +got):\n%s", diff)
	}
	// Token 1 back: the next frag reuses it (lowest free, like xa_alloc).
	if freed, err := sock.dontneed(tokenOpt(uapi.DmabufToken{TokenStart: 1, TokenCount: 1})); err != nil || freed != 1 {
		t.Fatalf("dontneed = %d, %v", freed, err)
	}
	n, oobn, _, err = sock.recvmsg(p[:4000], oob, unix.MSG_SOCK_DEVMEM)
	if err != nil || n != 3192 {
		t.Fatalf("recvmsg = %d, %v; want the 3192 bytes left of the skb", n, err)
	}
	frags, _ = ParseCmsgs(nil, oob[:oobn])
	want = []Frag{{Offset: 4096 + 904, Size: 3192, Token: 1, DmabufID: id}}
	if diff := cmp.Diff(want, frags); diff != "" {
		t.Fatalf("frags (-want +got):\n%s", diff)
	}

	// SO_DEVMEM_DONTNEED rules.
	for _, optlen := range []int{0, 1, 4, 12, 129 * 8} {
		if _, err := sock.dontneed(make([]byte, optlen)); !errors.Is(err, unix.EINVAL) {
			t.Errorf("dontneed optlen %d = %v, want EINVAL", optlen, err)
		}
	}
	// Unknown tokens are skipped; the count is what was freed.
	freed, err := sock.dontneed(tokenOpt(uapi.DmabufToken{TokenStart: 100, TokenCount: 5}, uapi.DmabufToken{TokenStart: 1, TokenCount: 3}))
	if err != nil || freed != 2 {
		t.Errorf("dontneed = %d, %v; want 2 freed", freed, err)
	}
	// At most 1024 frags are processed: a token after that is not freed.
	_, oobn, _, _ = sock.recvmsg(p[:4096], oob, unix.MSG_SOCK_DEVMEM)
	frags, _ = ParseCmsgs(nil, oob[:oobn])
	if len(frags) != 1 || frags[0].Token != 1 {
		t.Fatalf("frags %+v", frags)
	}
	freed, err = sock.dontneed(tokenOpt(uapi.DmabufToken{TokenStart: 1000, TokenCount: 1024}, uapi.DmabufToken{TokenStart: 1, TokenCount: 1}))
	if err != nil || freed != 0 {
		t.Errorf("dontneed past 1024 frags freed %d, %v; want 0", freed, err)
	}
	freed, _ = sock.dontneed(tokenOpt(uapi.DmabufToken{TokenStart: 1, TokenCount: 1}))
	if freed != 1 {
		t.Errorf("freed %d, want 1", freed)
	}

	// MSG_TRUNC drops bytes without tokens.
	// It stops at the end of the queued skb, as the kernel stops when no
	// more data is queued.
	n, oobn, _, err = sock.recvmsg(p[:10000], oob, unix.MSG_TRUNC|unix.MSG_SOCK_DEVMEM)
	if err != nil || n != 4096 || oobn != 0 {
		t.Errorf("MSG_TRUNC recvmsg = %d, %d, %v", n, oobn, err)
	}
	if st := s.nic.Stats(); st.Tokens != 0 {
		t.Errorf("%d tokens outstanding", st.Tokens)
	}

	// An unsteered connection gets plain data and no cmsgs.
	c2, s2 := tcpPair(t, "tcp4")
	plain := openSoft(t, s.nic, c2)
	if _, err := s2.Write([]byte("plain")); err != nil {
		t.Fatal(err)
	}
	n, oobn, _, err = plain.recvmsg(p, oob, unix.MSG_SOCK_DEVMEM)
	if err != nil || string(p[:n]) != "plain" || oobn != 0 {
		t.Errorf("unsteered recvmsg = %q, %d cmsg bytes, %v", p[:n], oobn, err)
	}
}

// TestRecvmsgDontwait: with MSG_DONTWAIT, recvmsg fails with EAGAIN instead
// of waiting, on the host kernel and on the software NIC, and reads what is
// there.
func TestRecvmsgDontwait(t *testing.T) {
	leakCheck(t)
	p := make([]byte, 64<<10)
	oob := make([]byte, 16*devmemCmsgSpace)
	t.Run("host", func(t *testing.T) {
		client, server := tcpPair(t, "tcp4")
		sock, err := Host().open(client)
		if err != nil {
			t.Fatal(err)
		}
		defer sock.close()
		if _, _, _, err := sock.recvmsg(p, oob, unix.MSG_SOCK_DEVMEM|unix.MSG_DONTWAIT); !errors.Is(err, syscall.EAGAIN) {
			t.Fatalf("recvmsg on an empty socket = %v, want EAGAIN", err)
		}
		if _, err := server.Write([]byte("data")); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := sock.recvmsg(p[:1], nil, unix.MSG_PEEK); err != nil { // waits for the bytes
			t.Fatal(err)
		}
		if n, _, _, err := sock.recvmsg(p, oob, unix.MSG_SOCK_DEVMEM|unix.MSG_DONTWAIT); err != nil || string(p[:n]) != "data" {
			t.Fatalf("recvmsg = %q, %v", p[:n], err)
		}
	})
	t.Run("software NIC", func(t *testing.T) {
		s := newRXSetup(t, SoftNICConfig{SkbSize: 4096}, 16*4096)
		client, server := tcpPair(t, "tcp4")
		if err := s.nic.Steer(client, 0); err != nil {
			t.Fatal(err)
		}
		sock := openSoft(t, s.nic, client)
		if _, _, _, err := sock.recvmsg(p, oob, unix.MSG_SOCK_DEVMEM|unix.MSG_DONTWAIT); !errors.Is(err, syscall.EAGAIN) {
			t.Fatalf("recvmsg on an empty socket = %v, want EAGAIN", err)
		}
		if _, err := server.Write(pattern(4096, 8)); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := sock.host.recvmsg(p[:1], nil, unix.MSG_PEEK); err != nil { // waits for the bytes
			t.Fatal(err)
		}
		n, oobn, _, err := sock.recvmsg(p, oob, unix.MSG_SOCK_DEVMEM|unix.MSG_DONTWAIT)
		if err != nil || n != 4096 {
			t.Fatalf("recvmsg = %d, %v", n, err)
		}
		frags, err := ParseCmsgs(nil, oob[:oobn])
		if err != nil || len(frags) != 1 || frags[0].Token != 1 {
			t.Fatalf("frags %+v, %v", frags, err)
		}
		if freed, err := sock.dontneed(tokenOpt(uapi.DmabufToken{TokenStart: 1, TokenCount: 1})); err != nil || freed != 1 {
			t.Fatalf("dontneed = %d, %v", freed, err)
		}
		if _, _, _, err := sock.recvmsg(p, oob, unix.MSG_SOCK_DEVMEM|unix.MSG_DONTWAIT); !errors.Is(err, syscall.EAGAIN) {
			t.Fatalf("recvmsg on a drained socket = %v, want EAGAIN", err)
		}
	})
}

// TestHostDontneedAfterClose: on a closed connection SO_DEVMEM_DONTNEED
// fails with net.ErrClosed, which TokenBatcher counts as tokens released
// with the socket.
func TestHostDontneedAfterClose(t *testing.T) {
	leakCheck(t)
	client, _ := tcpPair(t, "tcp4")
	sock, err := Host().open(client)
	if err != nil {
		t.Fatal(err)
	}
	defer sock.close()
	client.Close()
	if _, err := sock.dontneed(tokenOpt(uapi.DmabufToken{TokenStart: 1, TokenCount: 1})); !errors.Is(err, net.ErrClosed) {
		t.Errorf("dontneed on a closed connection = %v, want net.ErrClosed", err)
	}
}
