//go:build linux

package devmem

// Tests against the running kernel (CI runs them as root on Linux 6.18).
// The machine has no NIC with header split, so binds fail; what is tested
// is that every call reaches the kernel and that its answers (errnos,
// extack, encodings) are the documented ones.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"github.com/mdlayher/genetlink"
	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

func dialNetdev(t *testing.T) *Client {
	t.Helper()
	c, err := Dial()
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestKernelFamily(t *testing.T) {
	leakCheck(t)
	c := dialNetdev(t)
	if c.FamilyID() == 0 || c.FamilyVersion() != uapi.NETDEV_FAMILY_VERSION {
		t.Errorf("family id %d version %d", c.FamilyID(), c.FamilyVersion())
	}
	ops, err := c.familyOps()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("netdev family %d, ops (id: GENL flags) %v", c.FamilyID(), ops)
	// The command ids of uapi, as the running kernel lists them.
	for _, id := range []uint32{uapi.NETDEV_CMD_DEV_GET, uapi.NETDEV_CMD_PAGE_POOL_GET, uapi.NETDEV_CMD_QUEUE_GET,
		uapi.NETDEV_CMD_NAPI_GET, uapi.NETDEV_CMD_QSTATS_GET, uapi.NETDEV_CMD_BIND_RX, uapi.NETDEV_CMD_NAPI_SET, uapi.NETDEV_CMD_BIND_TX} {
		if _, ok := ops[id]; !ok {
			t.Errorf("kernel lists no netdev op %d", id)
		}
	}
	if _, ok := ops[uapi.NETDEV_CMD_PAGE_POOL_STATS_GET]; !ok {
		t.Logf("no page-pool-stats-get (op %d): kernel built without CONFIG_PAGE_POOL_STATS", uapi.NETDEV_CMD_PAGE_POOL_STATS_GET)
	}
	if f := ops[uapi.NETDEV_CMD_BIND_RX]; f&unix.GENL_ADMIN_PERM == 0 || f&unix.GENL_CMD_CAP_DO == 0 {
		t.Errorf("bind-rx flags %#x, want GENL_ADMIN_PERM|GENL_CMD_CAP_DO", f)
	}
	if f := ops[uapi.NETDEV_CMD_BIND_TX]; f&(unix.GENL_ADMIN_PERM|unix.GENL_UNS_ADMIN_PERM) != 0 || f&unix.GENL_CMD_CAP_DO == 0 {
		t.Errorf("bind-tx flags %#x, want do without a permission flag", f)
	}
}

// ipLinks returns the ifindexes and up-state of the devices "ip -j link"
// lists (or, without iproute2, the standard library's).
func ipLinks(t *testing.T) map[int]bool {
	t.Helper()
	links := make(map[int]bool)
	out, err := exec.Command("ip", "-j", "link").Output()
	if err != nil {
		t.Logf("ip -j link: %v; using net.Interfaces", err)
		ifs, err := net.Interfaces()
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range ifs {
			links[i.Index] = i.Flags&net.FlagUp != 0
		}
		return links
	}
	var js []struct {
		Ifindex int      `json:"ifindex"`
		Ifname  string   `json:"ifname"`
		Flags   []string `json:"flags"`
	}
	if err := json.Unmarshal(out, &js); err != nil {
		t.Fatal(err)
	}
	for _, l := range js {
		links[l.Ifindex] = slices.Contains(l.Flags, "UP")
	}
	return links
}

func TestKernelDevices(t *testing.T) {
	leakCheck(t)
	c := dialNetdev(t)
	devs, err := c.Devices()
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[int]Device)
	for _, d := range devs {
		got[d.Ifindex] = d
		t.Logf("device %+v", d)
	}
	links := ipLinks(t)
	if _, ok := links[1]; !ok {
		t.Fatal("ip link lists no lo (ifindex 1)")
	}
	for idx := range links {
		if _, ok := got[idx]; !ok {
			t.Errorf("ip link lists ifindex %d, the netdev dump does not", idx)
		}
	}
	if len(got) != len(links) {
		t.Errorf("netdev dump has %d devices, ip link %d", len(got), len(links))
	}
}

func TestKernelQueues(t *testing.T) {
	leakCheck(t)
	c := dialNetdev(t)
	for idx, up := range ipLinks(t) {
		qs, err := c.Queues(idx)
		if err != nil {
			t.Errorf("Queues(%d): %v", idx, err)
			continue
		}
		t.Logf("ifindex %d (up %v): queues %+v", idx, up, qs)
		var rx, tx int
		for _, q := range qs {
			if q.Ifindex != idx {
				t.Errorf("queue %+v in the dump of ifindex %d", q, idx)
			}
			if q.DmabufID != 0 {
				t.Errorf("queue %+v has a dmabuf bound on a machine without devmem NICs", q)
			}
			switch q.Type {
			case QueueRX:
				rx++
			case QueueTX:
				tx++
			}
		}
		// The kernel lists the queues of devices that are up.
		if up && (rx == 0 || tx == 0) {
			t.Errorf("ifindex %d is up with %d rx and %d tx queues", idx, rx, tx)
		}
	}
	all, err := c.Queues(0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(all, func(q Queue) bool { return q.Ifindex == 1 && q.Type == QueueRX && q.ID == 0 }) {
		t.Errorf("dump of all queues lacks lo rx 0: %+v", all)
	}
	_, err = c.Queues(1 << 30)
	if !errors.Is(err, os.ErrNotExist) || !errors.Is(err, unix.ENODEV) {
		t.Errorf("Queues of a missing device = %v, want ENODEV (os.ErrNotExist)", err)
	}
}

func TestKernelQStatsAndPagePools(t *testing.T) {
	leakCheck(t)
	c := dialNetdev(t)
	_, err := c.QStats(1)
	t.Logf("QStats(lo): %v", err)
	if !errors.Is(err, ErrNotSupported) {
		t.Errorf("QStats(lo) = %v, want EOPNOTSUPP (loopback has no queue stats)", err)
	}
	all, err := c.QStats(0)
	if err != nil {
		t.Fatalf("QStats(0): %v", err)
	}
	for _, s := range all {
		t.Logf("qstats ifindex %d %v queue %d: rx %d B, tx %d B, counters %v", s.Ifindex, s.QueueType, s.QueueID, s.RXBytes, s.TXBytes, s.Counters)
	}
	pools, err := c.PagePools()
	if err != nil {
		t.Fatalf("PagePools: %v", err)
	}
	for _, p := range pools {
		t.Logf("page pool %+v", p)
		if p.DmabufID != 0 {
			t.Errorf("page pool %+v has a dmabuf", p)
		}
	}
}

// bindErrnos are the errnos bind-rx and bind-tx may return for a device
// that cannot do devmem (devmem-uapi.md 5.3).
var bindErrnos = []syscall.Errno{unix.EOPNOTSUPP, unix.EINVAL, unix.ENODEV, unix.ERANGE, unix.EEXIST, unix.EBUSY, unix.EPERM}

func TestKernelBindErrors(t *testing.T) {
	leakCheck(t)
	c := dialNetdev(t)
	fd, _ := memfd(t, 1<<20)
	for idx, up := range ipLinks(t) {
		for _, kind := range []string{"bind-rx", "bind-tx"} {
			var b *Binding
			var err error
			if kind == "bind-rx" {
				b, err = c.BindRX(idx, fd, []uint32{0})
			} else {
				b, err = c.BindTX(idx, fd)
			}
			if err == nil {
				b.Close()
				t.Errorf("%s on ifindex %d with a memfd succeeded", kind, idx)
				continue
			}
			var oe *OpError
			if !errors.As(err, &oe) {
				t.Errorf("%s on ifindex %d: %T %v, want *OpError", kind, idx, err, err)
				continue
			}
			t.Logf("%s ifindex %d (up %v): errno %d (%v), kernel message %q, offset %d", kind, idx, up, oe.Err, oe.Err, oe.Message, oe.Offset)
			errno, ok := oe.Err.(syscall.Errno)
			if !ok || !slices.Contains(bindErrnos, errno) {
				t.Errorf("%s on ifindex %d: errno %v not among the documented ones", kind, idx, oe.Err)
			}
			if oe.Op != kind {
				t.Errorf("Op = %q, want %q", oe.Op, kind)
			}
			// The extack, when sent, points at our ifindex attribute
			// (right after nlmsghdr and genlmsghdr) or explains itself.
			if oe.Offset != 0 && oe.Offset != 16+4 {
				t.Errorf("%s: extack offset %d, want 20 (the ifindex attribute)", kind, oe.Offset)
			}
			if errno == unix.EOPNOTSUPP && !errors.Is(err, ErrNotSupported) {
				t.Errorf("EOPNOTSUPP does not match ErrNotSupported")
			}
		}
	}
	// Loopback specifically (devmem-uapi.md 5.3).
	_, err := c.BindTX(1, fd)
	var oe *OpError
	if !errors.As(err, &oe) || oe.Err != unix.EOPNOTSUPP || oe.Message != "Driver does not support netmem TX" {
		t.Errorf("bind-tx on lo = %v, want EOPNOTSUPP with the kernel's message", err)
	}
	_, err = c.BindRX(1, fd, []uint32{0})
	if !errors.Is(err, unix.EOPNOTSUPP) || !errors.Is(err, ErrNotSupported) {
		t.Errorf("bind-rx on lo = %v, want EOPNOTSUPP", err)
	}
	_, err = c.BindRX(1<<30, fd, []uint32{0})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bind-rx on a missing device = %v, want ENODEV (os.ErrNotExist)", err)
	}
	if _, err := c.BindRX(1, fd, nil); !errors.Is(err, unix.EINVAL) {
		t.Errorf("bind-rx without queues = %v, want EINVAL", err)
	}
	// The Host kernel seam goes through the same client.
	if _, err := Host().BindTX(1, fd); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Host().BindTX(lo) = %v", err)
	}
}

// TestKernelBindRXNeedsCapNetAdmin opens the netlink socket on a thread
// without CAP_NET_ADMIN: bind-rx (GENL_ADMIN_PERM) must fail with EPERM,
// bind-tx (no permission flag) must get past the permission check.
func TestKernelBindRXNeedsCapNetAdmin(t *testing.T) {
	leakCheck(t)
	fd, _ := memfd(t, 1<<20)
	var rxErr, txErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The thread's credentials change: never give it back.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			rxErr = err
			return
		}
		const capNetAdmin = 12
		data[0].Effective &^= 1 << capNetAdmin
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			rxErr = err
			return
		}
		c, err := newClient(func() (*genetlink.Conn, error) { return dialGenl() })
		if err != nil {
			rxErr = err
			return
		}
		defer c.Close()
		_, rxErr = c.BindRX(1, fd, []uint32{0})
		_, txErr = c.BindTX(1, fd)
	}()
	wg.Wait()
	t.Logf("without CAP_NET_ADMIN: bind-rx: %v; bind-tx: %v", rxErr, txErr)
	if !errors.Is(rxErr, os.ErrPermission) || !errors.Is(rxErr, unix.EPERM) {
		t.Errorf("bind-rx without CAP_NET_ADMIN = %v, want EPERM (os.ErrPermission)", rxErr)
	}
	if !errors.Is(txErr, unix.EOPNOTSUPP) {
		t.Errorf("bind-tx without CAP_NET_ADMIN = %v, want EOPNOTSUPP from the driver check", txErr)
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

	// The receive pipeline on the real kernel: plain data is a clear error,
	// or, if allowed, copied in; MSG_TRUNC discards.
	p2 := newHostProvider()
	defer p2.Close()
	dst, _ := p2.Alloc(context.Background(), 64, false)
	bind := newBinding(1, 1, BindingRX, []uint32{0}, nopCloser{})
	r, err := NewReceiver(client, RXConfig{Kernel: Host(), Binding: bind, Arena: 99, Gather: p2.Gather, CopyIn: p2.CopyIn})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := server.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	if err := r.Receive(context.Background(), dst.ID, 0, 10); !errors.Is(err, ErrNotDevmem) {
		t.Errorf("Receive of plain data = %v, want ErrNotDevmem", err)
	}
	if err := r.Close(); err != nil {
		t.Error(err)
	}
	r, err = NewReceiver(client, RXConfig{Kernel: Host(), Binding: bind, Arena: 99, Gather: p2.Gather, CopyIn: p2.CopyIn, AllowPlain: true})
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
	snd, err := NewSender(client, TXConfig{Kernel: Host(), Binding: newBinding(0x7fff0001, 1, BindingTX, nil, nopCloser{}), Pool: pool})
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
