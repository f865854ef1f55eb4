package devmem

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
)

// benchSocket hands out pre-encoded control messages, as the kernel would
// have written them, so that the benchmark measures the pipeline without
// system calls: parse, stream mapping, gather dispatch and token batching.
// Each recvmsg reports as many 4 KiB frags as its iovec and control buffer
// take, up to perCall, the next ones of a cyclic stream whose tokens run
// consecutively (the kernel allocates the lowest free token) through more
// values than a receiver can hold, so no live token is handed out again.
type benchSocket struct {
	cmsgs   []byte // the stream's control messages, devmemCmsgSpace each
	frags   int    // frags in cmsgs
	perCall int
	next    int // next frag
	frees   int
}

// watch costs what a real socket's watch costs, less the deadline change.
func (s *benchSocket) watch(ctx context.Context) func() {
	stop := context.AfterFunc(ctx, func() {})
	return func() { stop() }
}

func (s *benchSocket) recvmsg(p, oob []byte, flags int) (int, int, int, error) {
	k := min(s.perCall, len(p)/4096, len(oob)/devmemCmsgSpace, s.frags-s.next)
	if k == 0 {
		panic(fmt.Sprintf("bench: iovec %d, control buffer %d", len(p), len(oob)))
	}
	o := copy(oob, s.cmsgs[s.next*devmemCmsgSpace:(s.next+k)*devmemCmsgSpace])
	s.next += k
	if s.next == s.frags {
		s.next = 0
	}
	return k * 4096, o, 0, nil
}

func (s *benchSocket) dontneed(opt []byte) (int, error) {
	n := 0
	for i := 0; i < len(opt); i += 8 {
		n += int(uint32(opt[i+4]) | uint32(opt[i+5])<<8 | uint32(opt[i+6])<<16 | uint32(opt[i+7])<<24)
	}
	s.frees += n
	return n, nil
}

func (s *benchSocket) setZerocopy() error                             { return nil }
func (s *benchSocket) sendmsg([]uapi.Iovec, []byte, int) (int, error) { return 0, syscall.EINVAL }
func (s *benchSocket) recvErrqueue([]byte, bool) (int, error)         { return 0, syscall.EAGAIN }
func (s *benchSocket) close() error                                   { return nil }

type benchKernel struct{ s *benchSocket }

func (k benchKernel) Name() string                                { return "bench" }
func (k benchKernel) BindRX(int, int, []uint32) (*Binding, error) { return nil, ErrNotSupported }
func (k benchKernel) BindTX(int, int) (*Binding, error)           { return nil, ErrNotSupported }
func (k benchKernel) open(net.Conn) (socket, error)               { return k.s, nil }

// BenchmarkRXPipeline measures the CPU cost per 4 KiB frag of the receive
// pipeline, system calls excluded: one op is one frag. The gather is a no-op.
// Extents are received one Receive each, as the engine does, or (batch)
// that many per ReceiveBatch.
func BenchmarkRXPipeline(b *testing.B) {
	for _, tc := range []struct {
		extent int // bytes per Receive
		linear bool
		batch  int // extents per ReceiveBatch, 0: Receive
	}{
		{extent: 4 << 10},
		{extent: 256 << 10},
		{extent: 4 << 20},
		{extent: 4 << 20, linear: true},
		{extent: 4 << 10, batch: 64},
	} {
		name := fmt.Sprintf("extent=%dKiB", tc.extent>>10)
		if tc.linear {
			name += "/linear=1in8"
		}
		if tc.batch > 0 {
			name += fmt.Sprintf("/batch=%d", tc.batch)
		}
		b.Run(name, func(b *testing.B) {
			// 64 frags per recvmsg (a full 256 KiB iovec), over a
			// stream of 4096 frags; linear frags carry no token.
			s := &benchSocket{perCall: 64, frags: 4096}
			tok := uint32(1)
			for i := 0; i < s.frags; i++ {
				f := Frag{Offset: uint64(i) * 4096, Size: 4096, Token: tok, DmabufID: 1}
				if tc.linear && i%8 == 7 {
					f = Frag{Size: 4096, Linear: true}
				} else {
					tok++
				}
				s.cmsgs = appendDevmemCmsg(s.cmsgs, f)
			}
			nop := func(context.Context, []memory.Copy) error { return nil }
			nopIn := func(context.Context, memory.BufferID, int64, []byte) error { return nil }
			r, err := NewReceiver(nil, RXConfig{
				Kernel:  benchKernel{s},
				Binding: netdev.NewBinding(1, 1, BindingRX, []uint32{0}, nopCloser{}),
				Arena:   1,
				Gather:  nop,
				CopyIn:  nopIn,
			})
			if err != nil {
				b.Fatal(err)
			}
			// The engine passes a cancellable context.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			fragsPerExtent := tc.extent / 4096
			var pieces []Piece
			for i := 0; i < tc.batch; i++ {
				pieces = append(pieces, Piece{Dst: 2, Off: int64(i * tc.extent), N: int64(tc.extent)})
			}
			b.SetBytes(4096)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; {
				if tc.batch > 0 {
					if err := r.ReceiveBatch(ctx, pieces); err != nil {
						b.Fatal(err)
					}
					i += fragsPerExtent * tc.batch
					continue
				}
				if err := r.Receive(ctx, 2, 0, int64(tc.extent)); err != nil {
					b.Fatal(err)
				}
				i += fragsPerExtent
			}
			b.StopTimer()
			if err := r.Close(); err != nil {
				b.Fatal(err)
			}
			if st := r.Stats(); st.Tokens.Received != st.Tokens.Returned || int64(s.frees) != st.Tokens.Received {
				b.Fatalf("tokens: %d received, %d returned, %d freed", st.Tokens.Received, st.Tokens.Returned, s.frees)
			}
		})
	}
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }
