package devmem

import (
	"errors"
	"fmt"
	"net"
	"unsafe"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

// A TokenBatcher returns devmem RX tokens to the kernel in as few
// SO_DEVMEM_DONTNEED calls as possible: it coalesces consecutive tokens
// into one struct dmabuf_token range and flushes calls of at most 128 ranges
// (MAX_DONTNEED_TOKENS; more is EINVAL) and at most 1024 frags
// (MAX_DONTNEED_FRAGS; the kernel silently ignores the rest).
//
// It also keeps the books: Outstanding counts the tokens received from the
// kernel and not yet returned, and Check reports leaks.
//
// A TokenBatcher is not safe for concurrent use.
type TokenBatcher struct {
	flush func(opt []byte) (int, error)

	ranges [uapi.MAX_DONTNEED_TOKENS]uapi.DmabufToken
	n      int // ranges in use
	frags  int // tokens in ranges

	outstanding int64
	stats       TokenStats
}

// TokenStats are a TokenBatcher's counters.
type TokenStats struct {
	Received int64 // tokens received from the kernel
	Returned int64 // tokens passed to successful SO_DEVMEM_DONTNEED calls
	Freed    int64 // frags the kernel reported freed
	Calls    int64 // SO_DEVMEM_DONTNEED calls
	// Abandoned counts tokens whose SO_DEVMEM_DONTNEED call failed. The
	// kernel keeps their frags pinned until the socket is destroyed.
	Abandoned int64
	// Closed counts tokens whose SO_DEVMEM_DONTNEED call found the
	// connection closed (net.ErrClosed): the kernel releases them with
	// the socket (tcp_release_user_frags), so they are no leak. The
	// engine closes data connections before their receivers.
	Closed int64
}

// NewTokenBatcher returns a batcher that returns tokens with dontneed, which
// is given the option bytes (an array of struct dmabuf_token) and returns
// the number of frags freed: the return value of
// setsockopt(SO_DEVMEM_DONTNEED).
func NewTokenBatcher(dontneed func(opt []byte) (freed int, err error)) *TokenBatcher {
	return &TokenBatcher{flush: dontneed}
}

// Received records n tokens handed out by the kernel.
func (b *TokenBatcher) Received(n int) {
	b.outstanding += int64(n)
	b.stats.Received += int64(n)
}

// Release queues token for return, flushing first if the pending call is
// full. Tokens are returned in the order released; a token one past the end
// of the last range extends it.
func (b *TokenBatcher) Release(token uint32) error {
	if b.extend(token) {
		return nil
	}
	if b.n == len(b.ranges) || b.frags == uapi.MAX_DONTNEED_FRAGS {
		if err := b.Flush(); err != nil {
			return err
		}
	}
	b.ranges[b.n] = uapi.DmabufToken{TokenStart: token, TokenCount: 1}
	b.n++
	b.frags++
	return nil
}

// ReleaseAll queues every token of toks, as Release does.
func (b *TokenBatcher) ReleaseAll(toks []uint32) error {
	for _, tok := range toks {
		if b.extend(tok) {
			continue
		}
		if err := b.Release(tok); err != nil {
			return err
		}
	}
	return nil
}

// extend queues token by extending the last range, if token is one past
// its end and the pending call has room; it reports whether it did.
func (b *TokenBatcher) extend(token uint32) bool {
	if b.n == 0 || b.frags == uapi.MAX_DONTNEED_FRAGS {
		return false
	}
	last := &b.ranges[b.n-1]
	if last.TokenStart+last.TokenCount != token {
		return false
	}
	last.TokenCount++
	b.frags++
	return true
}

// Pending returns the number of tokens queued and not yet flushed.
func (b *TokenBatcher) Pending() int { return b.frags }

// Flush returns the queued tokens to the kernel in one call. If the call
// fails the tokens are dropped from the books as abandoned (or, when the
// connection was closed, as closed): the kernel releases them when the
// socket is destroyed.
func (b *TokenBatcher) Flush() error {
	if b.n == 0 {
		return nil
	}
	opt := unsafe.Slice((*byte)(unsafe.Pointer(&b.ranges[0])), b.n*uapi.SizeofDmabufToken)
	freed, err := b.flush(opt)
	b.stats.Calls++
	b.outstanding -= int64(b.frags)
	switch {
	case err == nil:
		b.stats.Returned += int64(b.frags)
		b.stats.Freed += int64(freed)
	case errors.Is(err, net.ErrClosed):
		b.stats.Closed += int64(b.frags)
	default:
		b.stats.Abandoned += int64(b.frags)
	}
	b.n, b.frags = 0, 0
	return err
}

// Outstanding returns the number of tokens received and not yet flushed back
// to the kernel (queued ones included).
func (b *TokenBatcher) Outstanding() int64 { return b.outstanding }

// Stats returns the batcher's counters.
func (b *TokenBatcher) Stats() TokenStats { return b.stats }

// Check reports a leak: tokens received and never returned, tokens whose
// return failed, or fewer frags freed by the kernel than tokens returned
// (tokens returned twice or unknown to the kernel, which means some real
// token is still pinned). The error wraps ErrTokenLeak.
func (b *TokenBatcher) Check() error {
	if b.outstanding != 0 {
		return fmt.Errorf("%w: %d tokens received and not returned", ErrTokenLeak, b.outstanding)
	}
	if b.stats.Abandoned != 0 {
		return fmt.Errorf("%w: SO_DEVMEM_DONTNEED failed for %d tokens", ErrTokenLeak, b.stats.Abandoned)
	}
	if b.stats.Freed != b.stats.Returned {
		return fmt.Errorf("%w: returned %d tokens, kernel freed %d frags", ErrTokenLeak, b.stats.Returned, b.stats.Freed)
	}
	return nil
}
