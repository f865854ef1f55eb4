//go:build linux

package devmem

// Tests against the running kernel (CI runs them as root on Linux 6.18).
// The machine has no NIC with header split, so binds fail; what is tested
// is that every call reaches the kernel and that its answers (errnos,
// extack, encodings) are the documented ones.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
)

// TestKernelHostBind checks that the Host kernel seam reaches the netdev
// family (whose client is tested in package netdev): loopback can bind
// neither for RX nor for TX.
func TestKernelHostBind(t *testing.T) {
	leakCheck(t)
	fd, _ := memfd(t, 1<<20)
	if _, err := Host().BindTX(1, fd); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Host().BindTX(lo) = %v", err)
	}
	if _, err := Host().BindRX(1, fd, []uint32{0}); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Host().BindRX(lo) = %v", err)
	}
}

func hostSock(t *testing.T, c net.Conn) *hostSocket {
	t.Helper()
	s, err := Host().open(c)
	if err != nil {
		t.Fatal(err)
	}
	return s.(*hostSocket)
}

func TestKernelDontneed(t *testing.T) {
	leakCheck(t)
	client, _ := tcpPair(t, "tcp4")
	s := hostSock(t, client)
	for _, tc := range []struct {
		optlen int
		count  uint32
		errno  syscall.Errno
	}{
		{optlen: 8, count: 1},
		{optlen: 16, count: 1},
		{optlen: 128 * 8, count: 1},
		{optlen: 8, count: 5000}, // beyond 1024 frags: processing stops
		{optlen: 0, errno: unix.EINVAL},
		{optlen: 4, errno: unix.EINVAL},
		{optlen: 12, errno: unix.EINVAL},
		{optlen: 129 * 8, errno: unix.EINVAL},
	} {
		opt := make([]byte, tc.optlen)
		for i := 0; i+8 <= len(opt); i += 8 {
			copy(opt[i:], tokenOpt(uapi.DmabufToken{TokenStart: uint32(1 + i), TokenCount: tc.count}))
		}
		freed, err := s.dontneed(opt)
		if tc.errno != 0 {
			if !errors.Is(err, tc.errno) {
				t.Errorf("optlen %d: %d, %v; want %v", tc.optlen, freed, err, tc.errno)
			}
			continue
		}
		if err != nil || freed != 0 {
			t.Errorf("optlen %d count %d on a plain TCP socket: freed %d, %v; want 0 freed", tc.optlen, tc.count, freed, err)
		}
	}
	// Not a TCP socket.
	u, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	us, err := openHostSocket(u.(*net.UDPConn))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := us.dontneed(tokenOpt(uapi.DmabufToken{TokenStart: 1, TokenCount: 1})); !errors.Is(err, unix.EBADF) {
		t.Errorf("SO_DEVMEM_DONTNEED on UDP = %v, want EBADF", err)
	}
}

func TestKernelRecvmsgDevmemOnLoopback(t *testing.T) {
	leakCheck(t)
	client, server := tcpPair(t, "tcp4")
	s := hostSock(t, client)
	if _, err := server.Write([]byte("plain bytes")); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 64)
	oob := make([]byte, 10*devmemCmsgSpace)
	n, oobn, rflags, err := s.recvmsg(p, oob, unix.MSG_SOCK_DEVMEM)
	if err != nil {
		t.Fatal(err)
	}
	if string(p[:n]) != "plain bytes" || oobn != 0 || rflags&unix.MSG_CTRUNC != 0 {
		t.Errorf("recvmsg(MSG_SOCK_DEVMEM) = %q, %d control bytes, flags %#x; want the plain bytes and no cmsgs", p[:n], oobn, rflags)
	}

	// The receive pipeline on the real kernel: plain data is a clear error
	// with RejectPlain, and by default copied in and counted as linear;
	// MSG_TRUNC discards.
	p2 := newHostProvider()
	defer p2.Close()
	dst, _ := p2.Alloc(context.Background(), 64, false)
	bind := netdev.NewBinding(1, 1, BindingRX, []uint32{0}, nopCloser{})
	r, err := NewReceiver(client, RXConfig{Kernel: Host(), Binding: bind, Arena: 99, Gather: p2.Gather, CopyIn: p2.CopyIn, RejectPlain: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := server.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	if err := r.Receive(context.Background(), dst.ID, 0, 10); !errors.Is(err, ErrNotDevmem) {
		t.Errorf("Receive of plain data with RejectPlain = %v, want ErrNotDevmem", err)
	}
	if err := r.Close(); err != nil {
		t.Error(err)
	}
	r, err = NewReceiver(client, RXConfig{Kernel: Host(), Binding: bind, Arena: 99, Gather: p2.Gather, CopyIn: p2.CopyIn})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := server.Write([]byte("abcdefghij")); err != nil {
		t.Fatal(err)
	}
	if err := r.Discard(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	if err := r.Receive(context.Background(), dst.ID, 0, 6); err != nil {
		t.Fatal(err)
	}
	got, _ := p2.Bytes(dst.ID)
	if string(got[:6]) != "efghij" {
		t.Errorf("after discarding 4 bytes, received %q", got[:6])
	}
	if b, f := r.LinearPlaced(); b != 6 || f != 1 || r.Stats().PlainBytes == 0 {
		t.Errorf("LinearPlaced = %d bytes, %d frags; stats %+v; want the 6 plain bytes counted", b, f, r.Stats())
	}
	if err := r.Close(); err != nil {
		t.Error(err)
	}
}

func TestKernelDevmemSendmsgUnknownBinding(t *testing.T) {
	leakCheck(t)
	client, server := tcpPair(t, "tcp4")
	s := hostSock(t, client)
	iov := []uapi.Iovec{{Base: 0, Len: 100}}
	ctl := appendDmabufIDCmsg(nil, 0x7fff0001)
	// Before SO_ZEROCOPY, with and without MSG_ZEROCOPY; then after.
	for _, step := range []struct {
		name  string
		flags int
	}{
		{"no SO_ZEROCOPY, no MSG_ZEROCOPY", 0},
		{"no SO_ZEROCOPY, MSG_ZEROCOPY", unix.MSG_ZEROCOPY},
		{"SO_ZEROCOPY, no MSG_ZEROCOPY", 0},
		{"SO_ZEROCOPY, MSG_ZEROCOPY", unix.MSG_ZEROCOPY},
	} {
		if step.name == "SO_ZEROCOPY, no MSG_ZEROCOPY" {
			if err := s.setZerocopy(); err != nil {
				t.Fatal(err)
			}
		}
		n, err := s.sendmsg(iov, ctl, step.flags)
		t.Logf("devmem sendmsg with an unknown binding, %s: %d, %v", step.name, n, err)
		if !errors.Is(err, unix.EINVAL) {
			t.Errorf("%s: %d, %v; want EINVAL", step.name, n, err)
		}
	}
	// Id 0 means "not devmem" to the kernel: the offset in iov_base is then
	// taken for a user pointer (0: EFAULT). NewSender refuses id 0.
	if _, err := s.sendmsg(iov, appendDmabufIDCmsg(nil, 0), unix.MSG_ZEROCOPY); !errors.Is(err, unix.EFAULT) {
		t.Errorf("devmem sendmsg with id 0 = %v, want EFAULT (iov_base read as a pointer)", err)
	}
	long, p := appendCmsg(nil, unix.SOL_SOCKET, unix.SCM_DEVMEM_DMABUF, 8)
	copy(p, ctl[uapi.SizeofCmsghdr:uapi.SizeofCmsghdr+4])
	if _, err := s.sendmsg(iov, long, unix.MSG_ZEROCOPY); !errors.Is(err, unix.EINVAL) {
		t.Errorf("SCM_DEVMEM_DMABUF of CMSG_LEN(8) = %v, want EINVAL", err)
	}
	// Through the Sender.
	pool, _ := NewBufferPool(0, 1<<20, 64<<10)
	snd, err := NewSender(client, TXConfig{Kernel: Host(), Binding: netdev.NewBinding(0x7fff0001, 1, BindingTX, nil, nopCloser{}), Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := snd.Get(context.Background())
	if err := snd.Send(context.Background(), []Segment{{Buf: b, Len: 4096}}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Sender.Send with an unknown binding = %v, want EINVAL", err)
	}
	if err := snd.Close(); err != nil {
		t.Error(err)
	}
	if pool.Free() != pool.Len() {
		t.Errorf("buffers of the failed send not returned: %d of %d free", pool.Free(), pool.Len())
	}
	// Nothing reached the peer.
	_ = client.CloseWrite()
	if rest, _ := io.ReadAll(server); len(rest) != 0 {
		t.Errorf("peer received %d bytes", len(rest))
	}
}

// TestKernelZerocopyCompletions sends with MSG_ZEROCOPY on loopback (the
// Sender without a binding) and checks that the kernel's completions free
// exactly the buffers their sends used. Loopback copies: completions carry
// SO_EE_CODE_ZEROCOPY_COPIED.
func TestKernelZerocopyCompletions(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			leakCheck(t)
			client, server := tcpPair(t, network)
			_, mem := memfd(t, 1<<20)
			pool, _ := NewBufferPool(0, 1<<20, 64<<10)
			const total = 6<<20 + 777
			data := pattern(total, 4)
			path := filepath.Join(t.TempDir(), "extent")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			snd, err := NewSender(server, TXConfig{Kernel: Host(), Pool: pool, Mem: mem, MaxIovecs: 4})
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, total)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := io.ReadFull(client, got); err != nil {
					t.Errorf("read: %v", err)
				}
			}()
			if err := snd.SendExtent(f, 0, total); err != nil {
				t.Fatal(err)
			}
			if err := snd.Close(); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			if !bytes.Equal(got, data) {
				t.Fatal("received bytes differ")
			}
			st := snd.Stats()
			t.Logf("%s: %+v", network, st)
			c := st.Completion
			if c.Sends != uint64(st.Sendmsgs) || c.Completed != c.Sends || c.Released < uint64(pool.Len()) {
				t.Errorf("completions do not match the sends: %+v", st)
			}
			if c.Copied != c.Completed {
				t.Logf("%d of %d completions flagged COPIED", c.Copied, c.Completed)
			}
			if pool.Free() != pool.Len() {
				t.Errorf("%d of %d buffers back in the pool", pool.Free(), pool.Len())
			}
		})
	}
}

// TestKernelZerocopyTracker drives the tracker directly with the kernel's
// notifications: a few sends, each of its own buffer.
func TestKernelZerocopyTracker(t *testing.T) {
	leakCheck(t)
	client, server := tcpPair(t, "tcp4")
	s := hostSock(t, server)
	if err := s.setZerocopy(); err != nil {
		t.Fatal(err)
	}
	bufs := make([][]byte, 5)
	var released []uint32
	tr := NewCompletionTracker(0, func(b uint32) { released = append(released, b) })
	for i := range bufs {
		bufs[i] = pattern(1000*(i+1), byte(i))
		iov := []uapi.Iovec{{Base: uintptrOf(bufs[i]), Len: uintptr(len(bufs[i]))}}
		n, err := s.sendmsg(iov, nil, unix.MSG_ZEROCOPY)
		runtime.KeepAlive(bufs[i])
		if err != nil || n != len(bufs[i]) {
			t.Fatalf("sendmsg %d: %d, %v", i, n, err)
		}
		tr.Sent(uint32(i))
	}
	all := make([]byte, 15000)
	if _, err := io.ReadFull(client, all); err != nil {
		t.Fatal(err)
	}
	oob := make([]byte, 128)
	var notes []Completion
	for tr.InFlight() > 0 {
		oobn, err := s.recvErrqueue(oob, true)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseErrqueue(oob[:oobn])
		if err != nil {
			t.Fatal(err)
		}
		notes = append(notes, c)
		if err := tr.Complete(c); err != nil {
			t.Fatal(err)
		}
	}
	runtime.KeepAlive(bufs) // pinned by the kernel until here
	t.Logf("kernel notifications: %+v", notes)
	slices.Sort(released)
	if !slices.Equal(released, []uint32{0, 1, 2, 3, 4}) {
		t.Errorf("released %v", released)
	}
	if _, err := s.recvErrqueue(oob, false); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("empty error queue = %v, want EAGAIN", err)
	}
}

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }
