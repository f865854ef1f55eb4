package devmem

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

// fakeDontneed records SO_DEVMEM_DONTNEED calls, enforcing the kernel's
// limits, and frees the tokens it knows.
type fakeDontneed struct {
	t     *testing.T
	live  map[uint32]bool
	calls [][]uapi.DmabufToken
}

func (f *fakeDontneed) dontneed(opt []byte) (int, error) {
	f.t.Helper()
	if len(opt)%uapi.SizeofDmabufToken != 0 || len(opt) > uapi.MAX_DONTNEED_TOKENS*uapi.SizeofDmabufToken {
		f.t.Fatalf("optlen %d breaks the kernel's limits", len(opt))
	}
	var call []uapi.DmabufToken
	frags, freed := 0, 0
	for i := 0; i < len(opt); i += uapi.SizeofDmabufToken {
		tok := uapi.DmabufToken{
			TokenStart: binary.NativeEndian.Uint32(opt[i:]),
			TokenCount: binary.NativeEndian.Uint32(opt[i+4:]),
		}
		call = append(call, tok)
		for j := uint32(0); j < tok.TokenCount; j++ {
			frags++
			if f.live[tok.TokenStart+j] {
				delete(f.live, tok.TokenStart+j)
				freed++
			}
		}
	}
	if frags > uapi.MAX_DONTNEED_FRAGS {
		f.t.Fatalf("%d frags in one call, the kernel stops at %d", frags, uapi.MAX_DONTNEED_FRAGS)
	}
	f.calls = append(f.calls, call)
	return freed, nil
}

func newFakeDontneed(t *testing.T, tokens ...uint32) *fakeDontneed {
	f := &fakeDontneed{t: t, live: make(map[uint32]bool)}
	for _, tok := range tokens {
		f.live[tok] = true
	}
	return f
}

func TestTokenBatcherCoalesces(t *testing.T) {
	toks := []uint32{1, 2, 3, 7, 8, 5, 6, 9}
	f := newFakeDontneed(t, toks...)
	b := NewTokenBatcher(f.dontneed)
	b.Received(len(toks))
	for _, tok := range toks {
		if err := b.Release(tok); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.Outstanding(); got != int64(len(toks)) {
		t.Errorf("Outstanding before flush = %d, want %d", got, len(toks))
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	want := [][]uapi.DmabufToken{{{TokenStart: 1, TokenCount: 3}, {TokenStart: 7, TokenCount: 2}, {TokenStart: 5, TokenCount: 2}, {TokenStart: 9, TokenCount: 1}}}
	if diff := cmp.Diff(want, f.calls); diff != "" {
		t.Errorf("unexpected calls (-want +got):\n%s", diff)
	}
	if err := b.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
	if s := b.Stats(); s.Received != 8 || s.Returned != 8 || s.Freed != 8 || s.Calls != 1 {
		t.Errorf("Stats = %+v", s)
	}
}

func TestTokenBatcherLimits(t *testing.T) {
	t.Run("128 ranges", func(t *testing.T) {
		// Every other token: no coalescing, 300 ranges -> 3 calls.
		var toks []uint32
		for i := uint32(0); i < 300; i++ {
			toks = append(toks, 1+2*i)
		}
		f := newFakeDontneed(t, toks...)
		b := NewTokenBatcher(f.dontneed)
		b.Received(len(toks))
		for _, tok := range toks {
			if err := b.Release(tok); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Flush(); err != nil {
			t.Fatal(err)
		}
		if len(f.calls) != 3 || len(f.calls[0]) != 128 || len(f.calls[1]) != 128 || len(f.calls[2]) != 44 {
			t.Errorf("call sizes: %d calls, first %d", len(f.calls), len(f.calls[0]))
		}
		if err := b.Check(); err != nil {
			t.Error(err)
		}
	})
	t.Run("1024 frags", func(t *testing.T) {
		// 3000 consecutive tokens: ranges are capped at 1024 frags per call.
		var toks []uint32
		for i := uint32(1); i <= 3000; i++ {
			toks = append(toks, i)
		}
		f := newFakeDontneed(t, toks...)
		b := NewTokenBatcher(f.dontneed)
		b.Received(len(toks))
		for _, tok := range toks {
			if err := b.Release(tok); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Flush(); err != nil {
			t.Fatal(err)
		}
		want := [][]uapi.DmabufToken{{{TokenStart: 1, TokenCount: 1024}}, {{TokenStart: 1025, TokenCount: 1024}}, {{TokenStart: 2049, TokenCount: 952}}}
		if diff := cmp.Diff(want, f.calls); diff != "" {
			t.Errorf("unexpected calls (-want +got):\n%s", diff)
		}
		if err := b.Check(); err != nil {
			t.Error(err)
		}
	})
	t.Run("random", func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		var toks []uint32
		next := uint32(1)
		for i := 0; i < 5000; i++ {
			if r.IntN(4) == 0 {
				next += uint32(r.IntN(5)) + 1
			}
			toks = append(toks, next)
			next++
		}
		f := newFakeDontneed(t, toks...)
		b := NewTokenBatcher(f.dontneed)
		b.Received(len(toks))
		for _, tok := range toks {
			if err := b.Release(tok); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := b.Check(); err != nil {
			t.Error(err)
		}
		if len(f.live) != 0 {
			t.Errorf("%d tokens never returned", len(f.live))
		}
	})
}

func TestTokenBatcherLeaks(t *testing.T) {
	f := newFakeDontneed(t, 1, 2)
	b := NewTokenBatcher(f.dontneed)
	b.Received(3)
	for _, tok := range []uint32{1, 2} {
		_ = b.Release(tok)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := b.Check(); !errors.Is(err, ErrTokenLeak) {
		t.Errorf("one token not returned: Check = %v, want ErrTokenLeak", err)
	}
	// Returning an unknown token: the kernel frees nothing.
	_ = b.Release(99)
	_ = b.Flush()
	if err := b.Check(); !errors.Is(err, ErrTokenLeak) {
		t.Errorf("unknown token: Check = %v, want ErrTokenLeak", err)
	}
}

// TestTokenBatcherClosedConnection: a return that finds the connection
// closed is no leak (the kernel released the tokens with the socket); any
// other failure is.
func TestTokenBatcherClosedConnection(t *testing.T) {
	for _, tc := range []struct {
		err  error
		leak bool
	}{
		{err: &OpError{Subsystem: "devmem", Op: "setsockopt SO_DEVMEM_DONTNEED", Err: net.ErrClosed}},
		{err: &OpError{Subsystem: "devmem", Op: "setsockopt SO_DEVMEM_DONTNEED", Err: syscall.EBADF}, leak: true},
	} {
		b := NewTokenBatcher(func([]byte) (int, error) { return 0, tc.err })
		b.Received(3)
		for _, tok := range []uint32{1, 2, 5} {
			_ = b.Release(tok)
		}
		if err := b.Flush(); !errors.Is(err, tc.err) {
			t.Errorf("Flush = %v, want %v", err, tc.err)
		}
		st := b.Stats()
		if err := b.Check(); errors.Is(err, ErrTokenLeak) != tc.leak || b.Outstanding() != 0 {
			t.Errorf("%v: Check = %v, %d outstanding, stats %+v", tc.err, err, b.Outstanding(), st)
		}
		if tc.leak && (st.Abandoned != 3 || st.Closed != 0) || !tc.leak && (st.Closed != 3 || st.Abandoned != 0) {
			t.Errorf("%v: stats %+v", tc.err, st)
		}
	}
}

func TestTokenBatcherNoAlloc(t *testing.T) {
	b := NewTokenBatcher(func(opt []byte) (int, error) { return len(opt) / 8, nil })
	allocs := testing.AllocsPerRun(100, func() {
		b.Received(256)
		for i := uint32(1); i <= 256; i++ {
			_ = b.Release(i * 2)
		}
		_ = b.Flush()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per batch", allocs)
	}
}
