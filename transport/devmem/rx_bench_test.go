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

// benchSocket hands out pre-encoded control buffers, as the kernel would
// have written them, so that the benchmark measures the pipeline without
// system calls: parse, stream mapping, gather dispatch and token batching.
type benchSocket struct {
	oobs  [][]byte // one per recvmsg, rotating; tokens unique across them
	n     int      // bytes each recvmsg reports
	next  int
	frees int
}

func (s *benchSocket) watch(context.Context) func() { return func() {} }

func (s *benchSocket) recvmsg(p, oob []byte, flags int) (int, int, int, error) {
	o := s.oobs[s.next]
	s.next++
	if s.next == len(s.oobs) {
		s.next = 0
	}
	if len(p) < s.n || len(oob) < len(o) {
		panic(fmt.Sprintf("bench: iovec %d control %d, need %d and %d", len(p), len(oob), s.n, len(o)))
	}
	return s.n, copy(oob, o), 0, nil
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
func BenchmarkRXPipeline(b *testing.B) {
	for _, tc := range []struct {
		extent int // bytes per Receive
		linear bool
	}{
		{extent: 4 << 10},
		{extent: 256 << 10},
		{extent: 4 << 20},
		{extent: 4 << 20, linear: true},
	} {
		name := fmt.Sprintf("extent=%dKiB", tc.extent>>10)
		if tc.linear {
			name += "/linear=1in8"
		}
		b.Run(name, func(b *testing.B) {
			const perCall = 64 // frags per recvmsg (256 KiB iovec)
			fragsPerExtent := tc.extent / 4096
			calls := max(fragsPerExtent/perCall, 1)
			fragsPerCall := min(fragsPerExtent, perCall)
			s := &benchSocket{n: fragsPerCall * 4096}
			tok := uint32(1)
			for c := 0; c < calls; c++ {
				var o []byte
				for i := 0; i < fragsPerCall; i++ {
					f := Frag{Offset: uint64(tok) * 4096, Size: 4096, Token: tok, DmabufID: 1}
					if tc.linear && i%8 == 7 {
						f = Frag{Size: 4096, Linear: true}
					} else {
						tok++
					}
					o = appendDevmemCmsg(o, f)
				}
				s.oobs = append(s.oobs, o)
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
			ctx := context.Background()
			b.SetBytes(4096)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += fragsPerExtent {
				if err := r.Receive(ctx, 2, 0, int64(tc.extent)); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if err := r.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }
