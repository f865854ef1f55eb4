//go:build linux

package devmem

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

// txSetup is a software NIC with a TX binding over a memfd and a buffer pool
// inside it.
type txSetup struct {
	nic  *SoftNIC
	bind *Binding
	mem  []byte
	pool *BufferPool
}

func newTXSetup(t *testing.T, cfg SoftNICConfig, size, bufSize int64) *txSetup {
	t.Helper()
	nic, err := NewSoftNIC(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fd, mem := memfd(t, int(size))
	bind, err := nic.BindTX(1, fd)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := NewBufferPool(0, size, bufSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = bind.Close()
		if err := nic.Check(); err != nil {
			t.Error(err)
		}
	})
	return &txSetup{nic: nic, bind: bind, mem: mem, pool: pool}
}

func TestSoftNICSend(t *testing.T) {
	leakCheck(t)
	s := newTXSetup(t, SoftNICConfig{}, 1<<20, 64<<10)
	client, server := tcpPair(t, "tcp4")
	const total = 5<<20 + 12345
	data := pattern(total, 9)
	path := filepath.Join(t.TempDir(), "volume")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st := &SendTransport{Kernel: s.nic, Binding: s.bind, Pool: s.pool, Mem: s.mem, Config: TXConfig{MaxIovecs: 4}}
	es, err := st.NewSender(server)
	if err != nil {
		t.Fatal(err)
	}
	snd := es.(*Sender)
	got := make([]byte, total)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := io.ReadFull(client, got); err != nil {
			t.Errorf("read: %v", err)
		}
	}()
	// Two extents, the second starting mid-file.
	if err := snd.SendExtent(f, 0, 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := snd.SendExtent(f, 3<<20, total-3<<20); err != nil {
		t.Fatal(err)
	}
	if err := snd.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if !bytes.Equal(got, data) {
		i := 0
		for got[i] == data[i] {
			i++
		}
		t.Fatalf("bytes received differ from the file, first at %d (stats %+v)", i, snd.Stats())
	}
	stats := snd.Stats()
	if stats.Bytes != total || stats.Completion.Completed != uint64(stats.Sendmsgs) || stats.Completion.Copied != 0 {
		t.Errorf("stats %+v", stats)
	}
	if s.pool.Free() != s.pool.Len() {
		t.Errorf("%d of %d buffers back in the pool", s.pool.Free(), s.pool.Len())
	}
	t.Logf("stats %+v", stats)
}

func TestSoftNICCompletionsCoalesceAndWrap(t *testing.T) {
	leakCheck(t)
	s := newTXSetup(t, SoftNICConfig{ZerocopyStart: 0xfffffffe, HoldCompletions: true}, 4*4096, 4096)
	client, server := tcpPair(t, "tcp6")
	snd, err := NewSender(server, TXConfig{Kernel: s.nic, Binding: s.bind, Pool: s.pool, Mem: s.mem, MaxIovecs: 1, FirstCounter: 0xfffffffe})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var segs []Segment
	for i := 0; i < 4; i++ {
		b, err := snd.Get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		copy(s.mem[b.Off:b.Off+4096], pattern(4096, byte(i)))
		segs = append(segs, Segment{Buf: b, Len: 4096})
	}
	// MaxIovecs 1: four sendmsg calls, counters 0xfffffffe .. 1.
	if err := snd.Send(ctx, segs); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4*4096)
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	// Completions are held: no buffer may be reused yet.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := snd.Get(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get before completions = %v, want to wait (context.Canceled)", err)
	}
	if snd.InFlight() != 4 {
		t.Fatalf("InFlight = %d", snd.InFlight())
	}
	s.nic.ReleaseCompletions()
	if err := snd.Reap(); err != nil {
		t.Fatal(err)
	}
	st := snd.Stats().Completion
	if st.Notifications != 1 || st.Completed != 4 || st.Released != 4 {
		t.Errorf("one coalesced completion across 2^32 expected: %+v", st)
	}
	if err := snd.Close(); err != nil {
		t.Fatal(err)
	}
	if s.pool.Free() != 4 {
		t.Errorf("%d buffers back in the pool", s.pool.Free())
	}
	for i := 0; i < 4; i++ {
		if !bytes.Equal(got[i*4096:(i+1)*4096], pattern(4096, byte(i))) {
			t.Errorf("buffer %d arrived corrupted", i)
		}
	}
}

func TestSoftNICSendRules(t *testing.T) {
	leakCheck(t)
	s := newTXSetup(t, SoftNICConfig{}, 4*4096, 4096)
	_, server := tcpPair(t, "tcp4")
	sock := openSoft(t, s.nic, server)
	ctl := appendDmabufIDCmsg(nil, s.bind.ID())
	iov := []uapi.Iovec{{Base: 0, Len: 100}}
	send := func(iov []uapi.Iovec, ctl []byte, flags int) (int, error) { return sock.sendmsg(iov, ctl, flags) }

	if _, err := send(iov, ctl, unix.MSG_ZEROCOPY); !errors.Is(err, unix.EINVAL) {
		t.Errorf("without SO_ZEROCOPY = %v, want EINVAL", err)
	}
	if err := sock.setZerocopy(); err != nil {
		t.Fatal(err)
	}
	if _, err := send(iov, ctl, 0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("without MSG_ZEROCOPY = %v, want EINVAL", err)
	}
	if _, err := send(iov, appendDmabufIDCmsg(nil, 77), unix.MSG_ZEROCOPY); !errors.Is(err, unix.EINVAL) {
		t.Errorf("unknown binding = %v, want EINVAL", err)
	}
	rxfd, _ := memfd(t, 4096)
	rx, err := s.nic.BindRX(1, rxfd, []uint32{0})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := send(iov, appendDmabufIDCmsg(nil, rx.ID()), unix.MSG_ZEROCOPY); !errors.Is(err, unix.EINVAL) {
		t.Errorf("RX binding = %v, want EINVAL", err)
	}
	_ = rx.Close()
	long, p := appendCmsg(nil, unix.SOL_SOCKET, unix.SCM_DEVMEM_DMABUF, 8)
	binary.NativeEndian.PutUint32(p, s.bind.ID())
	if _, err := send(iov, long, unix.MSG_ZEROCOPY); !errors.Is(err, unix.EINVAL) {
		t.Errorf("cmsg of CMSG_LEN(8) = %v, want EINVAL", err)
	}
	if _, err := send([]uapi.Iovec{{Base: 4 * 4096, Len: 10}}, ctl, unix.MSG_ZEROCOPY); !errors.Is(err, unix.EFAULT) {
		t.Errorf("offset past the end = %v, want EFAULT", err)
	}
	n, err := send([]uapi.Iovec{{Base: 4*4096 - 10, Len: 100}}, ctl, unix.MSG_ZEROCOPY)
	if err != nil || n != 10 {
		t.Errorf("send straddling the end = %d, %v; want a partial send of 10", n, err)
	}
	n, err = send(iov, ctl, unix.MSG_ZEROCOPY)
	if err != nil || n != 100 {
		t.Errorf("good send = %d, %v", n, err)
	}
	// Two sends sent data: counters 0 and 1, coalesced.
	oob := make([]byte, 128)
	oobn, err := sock.recvErrqueue(oob, false)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseErrqueue(oob[:oobn])
	if err != nil || c != (Completion{Lo: 0, Hi: 1}) {
		t.Errorf("completion %+v, %v; want [0, 1]", c, err)
	}
	if _, err := sock.recvErrqueue(oob, false); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("empty error queue = %v, want EAGAIN", err)
	}
}
