package devmem

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
)

// syncScript is a txScript whose sendmsg is recorded in the same log as
// the DMA_BUF_IOCTL_SYNC calls.
type syncScript struct {
	*txScript
	onSend func(iov []uapi.Iovec)
}

func (s syncScript) sendmsg(iov []uapi.Iovec, control []byte, flags int) (int, error) {
	s.onSend(iov)
	return s.txScript.sendmsg(iov, control, flags)
}

type syncScriptKernel struct{ s socket }

func (k syncScriptKernel) Name() string                                { return "script" }
func (k syncScriptKernel) BindRX(int, int, []uint32) (*Binding, error) { return nil, ErrNotSupported }
func (k syncScriptKernel) BindTX(int, int) (*Binding, error)           { return nil, ErrNotSupported }
func (k syncScriptKernel) open(net.Conn) (socket, error)               { return k.s, nil }

// syncEvent is a DMA_BUF_IOCTL_SYNC call or a send, with the pool mapping as
// it was then.
type syncEvent struct {
	what  string // "start", "end", "send", "ioctl flags N"
	fd    int
	iov   []uapi.Iovec
	mem   []byte
	flags uint64
}

// syncFixture is a sender over a scripted socket with a pool mapping Mem,
// sending a file, with DMA_BUF_IOCTL_SYNC replaced by a recorder.
type syncFixture struct {
	snd    *Sender
	pool   *BufferPool
	mem    []byte
	f      *os.File
	data   []byte
	events []syncEvent
	fail   map[uint64]error // ioctl flags -> error to return
}

const syncFD = 42 // the dmabuf fd the bracket is for

func newSyncFixture(t *testing.T, sync bool) *syncFixture {
	t.Helper()
	fx := &syncFixture{fail: map[uint64]error{}}
	fx.data = make([]byte, 3*4096+100) // four buffers: two sendmsgs of two
	for i := range fx.data {
		fx.data[i] = byte(i%251 + 1) // never zero
	}
	path := filepath.Join(t.TempDir(), "volume")
	if err := os.WriteFile(path, fx.data, 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	if fx.f, err = os.Open(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fx.f.Close() })
	const base, bufs = 8192, 4
	if fx.pool, err = NewBufferPool(base, bufs*4096, 4096); err != nil {
		t.Fatal(err)
	}
	fx.mem = make([]byte, base+bufs*4096)
	old := dmabufSyncIoctl
	t.Cleanup(func() { dmabufSyncIoctl = old })
	dmabufSyncIoctl = func(fd int, flags uint64) error {
		what := fmt.Sprintf("ioctl flags %d", flags)
		switch flags {
		case uapi.DmaBufSyncStart | uapi.DmaBufSyncWrite:
			what = "start"
		case uapi.DmaBufSyncEnd | uapi.DmaBufSyncWrite:
			what = "end"
		}
		fx.events = append(fx.events, syncEvent{what: what, fd: fd, flags: flags, mem: bytes.Clone(fx.mem)})
		return fx.fail[flags]
	}
	s := syncScript{txScript: &txScript{t: t}}
	s.onSend = func(iov []uapi.Iovec) {
		fx.events = append(fx.events, syncEvent{what: "send", iov: append([]uapi.Iovec(nil), iov...), mem: bytes.Clone(fx.mem)})
	}
	cfg := TXConfig{
		Kernel:    syncScriptKernel{s},
		Binding:   netdev.NewBinding(5, 1, BindingTX, nil, nopCloser{}),
		Pool:      fx.pool,
		Mem:       fx.mem,
		MaxIovecs: 2,
	}
	if sync {
		cfg.Sync = NewDmabufSync(syncFD)
	}
	if fx.snd, err = NewSender(nil, cfg); err != nil {
		t.Fatal(err)
	}
	return fx
}

func (fx *syncFixture) sequence() []string {
	var seq []string
	for _, e := range fx.events {
		seq = append(seq, e.what)
	}
	return seq
}

// TestSendExtentDmabufSync checks the DMA_BUF_IOCTL_SYNC bracket around the
// server's writes into the TX pool mapping: START|WRITE before a batch of
// buffers is filled, END|WRITE after and before the batch is sent; the
// mapping changes only inside a bracket, and what is sent is what was
// written inside it.
func TestSendExtentDmabufSync(t *testing.T) {
	fx := newSyncFixture(t, true)
	if err := fx.snd.SendExtent(fx.f, 0, int64(len(fx.data))); err != nil {
		t.Fatal(err)
	}
	if err := fx.snd.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{"start", "end", "send", "start", "end", "send"}
	if got := fx.sequence(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("calls %v, want %v", got, want)
	}
	zero := make([]byte, len(fx.mem))
	prev := zero // the mapping before the bracket opens
	sent := 0
	for i := 0; i < len(fx.events); i += 3 {
		start, end, send := fx.events[i], fx.events[i+1], fx.events[i+2]
		for _, e := range []syncEvent{start, end} {
			if e.fd != syncFD {
				t.Errorf("%s on fd %d, want the dmabuf's %d", e.what, e.fd, syncFD)
			}
		}
		if start.flags != uapi.DmaBufSyncStart|uapi.DmaBufSyncWrite || end.flags != uapi.DmaBufSyncEnd|uapi.DmaBufSyncWrite {
			t.Errorf("bracket flags %#x, %#x; want START|WRITE %#x, END|WRITE %#x", start.flags, end.flags,
				uapi.DmaBufSyncStart|uapi.DmaBufSyncWrite, uapi.DmaBufSyncEnd|uapi.DmaBufSyncWrite)
		}
		if !bytes.Equal(start.mem, prev) {
			t.Errorf("batch %d: the mapping was written before DMA_BUF_SYNC_START", i/3)
		}
		if !bytes.Equal(send.mem, end.mem) {
			t.Errorf("batch %d: the mapping was written after DMA_BUF_SYNC_END", i/3)
		}
		for _, v := range send.iov {
			got := end.mem[v.Base : v.Base+v.Len]
			if bytes.Equal(got, start.mem[v.Base:v.Base+v.Len]) {
				t.Errorf("batch %d: buffer at %d not filled inside the bracket", i/3, v.Base)
			}
			if !bytes.Equal(got, fx.data[sent:sent+int(v.Len)]) {
				t.Errorf("batch %d: buffer at %d sent other bytes than the file's at %d", i/3, v.Base, sent)
			}
			sent += int(v.Len)
		}
		prev = end.mem
	}
	if sent != len(fx.data) {
		t.Errorf("sent %d bytes, want %d", sent, len(fx.data))
	}
}

func TestSendExtentWithoutDmabufSync(t *testing.T) {
	fx := newSyncFixture(t, false)
	if err := fx.snd.SendExtent(fx.f, 0, int64(len(fx.data))); err != nil {
		t.Fatal(err)
	}
	fx.snd.Close()
	if want := []string{"send", "send"}; fmt.Sprint(fx.sequence()) != fmt.Sprint(want) {
		t.Errorf("calls %v, want %v (no bracket without TXConfig.Sync)", fx.sequence(), want)
	}
}

func TestSendExtentDmabufSyncErrors(t *testing.T) {
	for _, tc := range []struct {
		flags uint64
		want  []string
	}{
		{uapi.DmaBufSyncStart | uapi.DmaBufSyncWrite, []string{"start"}},
		{uapi.DmaBufSyncEnd | uapi.DmaBufSyncWrite, []string{"start", "end"}},
	} {
		fx := newSyncFixture(t, true)
		fx.fail[tc.flags] = syscall.EIO
		err := fx.snd.SendExtent(fx.f, 0, int64(len(fx.data)))
		var op *OpError
		if !errors.Is(err, syscall.EIO) || !errors.As(err, &op) || op.Op == "" {
			t.Errorf("SendExtent with DMA_BUF_IOCTL_SYNC %#x failing: %v, want an OpError wrapping EIO", tc.flags, err)
		}
		if fmt.Sprint(fx.sequence()) != fmt.Sprint(tc.want) {
			t.Errorf("ioctl %#x failing: calls %v, want %v (nothing sent)", tc.flags, fx.sequence(), tc.want)
		}
		if err := fx.snd.Close(); err != nil {
			t.Error(err)
		}
		if free := fx.pool.Free(); free != fx.pool.Len() {
			t.Errorf("ioctl %#x failing: %d of %d buffers back in the pool", tc.flags, free, fx.pool.Len())
		}
	}
}
