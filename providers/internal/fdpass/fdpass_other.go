//go:build !linux

package fdpass

import (
	"context"
	"os"
)

// Conn is one end of the side socket; on this system it cannot be created.
type Conn struct{}

// Options configure a Conn.
type Options struct {
	// Accept is the one Kind of record this end receives.
	Accept Kind
	// Strict: only fds whose tag was announced with Expect are kept.
	Strict bool
	// Logf reports dropped records.
	Logf func(format string, args ...any)
}

// Socketpair returns ErrNotSupported.
func Socketpair() (local, remote *os.File, err error) { return nil, nil, ErrNotSupported }

// FromFD returns ErrNotSupported.
func FromFD(fd int) (*os.File, error) { return nil, ErrNotSupported }

// New returns ErrNotSupported.
func New(f *os.File, opts Options) (*Conn, error) { return nil, ErrNotSupported }

// Send returns ErrNotSupported.
func (c *Conn) Send(kind Kind, tag uint64, fd int) error { return ErrNotSupported }

// Expect does nothing.
func (c *Conn) Expect(tag uint64) {}

// Take returns ErrNotSupported.
func (c *Conn) Take(ctx context.Context, tag uint64) (int, error) { return -1, ErrNotSupported }

// Forget does nothing.
func (c *Conn) Forget(tag uint64) {}

// Done returns a closed channel.
func (c *Conn) Done() <-chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}

// Err returns ErrNotSupported.
func (c *Conn) Err() error { return ErrNotSupported }

// Close returns nil.
func (c *Conn) Close() error { return nil }
