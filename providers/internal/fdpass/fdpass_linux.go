package fdpass

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxRecvFDs is how many fds the receive buffer has room for. A record must
// carry exactly one; room for more lets a bad record's extra fds be received
// and closed instead of truncating the control message.
const maxRecvFDs = 8

// Conn is one end of the side socket. It sends records with Send and
// receives records of one Kind in a background goroutine, holding each fd
// until Take claims it by tag. It is safe for concurrent use.
type Conn struct {
	f      *os.File
	rc     syscall.RawConn
	accept Kind
	strict bool
	logf   func(format string, args ...any)

	mu    sync.Mutex
	slots map[uint64]*slot
	err   error // why receiving stopped; set before done is closed
	done  chan struct{}
}

// slot is the state of one tag: waiting for its fd, or holding it.
type slot struct {
	fd    int   // received fd, or -1
	err   error // the tag's record was bad
	ready chan struct{}
}

// Options configure a Conn.
type Options struct {
	// Accept is the one Kind of record this end receives.
	Accept Kind
	// Strict: only fds whose tag was announced with Expect are kept; any
	// other fd is closed on arrival. The host runs strict; the plugin, which
	// receives staging fds before the call that names them, does not.
	Strict bool
	// Logf reports dropped records; nil discards the reports.
	Logf func(format string, args ...any)
}

// Socketpair returns a connected SOCK_SEQPACKET pair created with
// SOCK_CLOEXEC: local for this process (pass it to New) and remote for the
// child (put it in exec.Cmd.ExtraFiles and close it after Start).
func Socketpair() (local, remote *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("fdpass: %w", os.NewSyscallError("socketpair", err))
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("fdpass: %w", os.NewSyscallError("setnonblock", err))
	}
	return os.NewFile(uintptr(fds[0]), "blockxfer-fdpass"), os.NewFile(uintptr(fds[1]), "blockxfer-fdpass-child"), nil
}

// FromFD adopts an inherited side socket (fd 3 in a plugin): it checks that fd
// is an AF_UNIX SOCK_SEQPACKET socket, marks it close-on-exec and
// non-blocking, and returns it as a file for New.
func FromFD(fd int) (*os.File, error) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("fdpass: fd %d is not a socket: %w", fd, os.NewSyscallError("getsockopt", err))
	}
	dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, fmt.Errorf("fdpass: fd %d: %w", fd, os.NewSyscallError("getsockopt", err))
	}
	if typ != unix.SOCK_SEQPACKET || dom != unix.AF_UNIX {
		return nil, fmt.Errorf("fdpass: fd %d is not an AF_UNIX SOCK_SEQPACKET socket (domain %d, type %d)", fd, dom, typ)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("fdpass: %w", os.NewSyscallError("setnonblock", err))
	}
	return os.NewFile(uintptr(fd), "blockxfer-fdpass"), nil
}

// New takes ownership of f (a non-blocking SOCK_SEQPACKET socket, from
// Socketpair or FromFD) and starts receiving.
func New(f *os.File, opts Options) (*Conn, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("fdpass: %w", err)
	}
	c := &Conn{
		f:      f,
		rc:     rc,
		accept: opts.Accept,
		strict: opts.Strict,
		logf:   opts.Logf,
		slots:  make(map[uint64]*slot),
		done:   make(chan struct{}),
	}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	go c.receive()
	return c, nil
}

// Send sends fd tagged with kind and tag. The fd stays open in this process;
// the peer receives its own copy.
func (c *Conn) Send(kind Kind, tag uint64, fd int) error {
	var hdr [RecordSize]byte
	encodeRecord(&hdr, kind, tag)
	rights := unix.UnixRights(fd)
	var serr error
	err := c.rc.Write(func(s uintptr) bool {
		for {
			serr = unix.Sendmsg(int(s), hdr[:], rights, nil, unix.MSG_NOSIGNAL)
			if serr != unix.EINTR {
				return serr != unix.EAGAIN
			}
		}
	})
	if err != nil {
		// The only failure of RawConn.Write itself is a closed file.
		return fmt.Errorf("fdpass: send %s %d: %w (%v)", kind, tag, ErrClosed, err)
	}
	if serr != nil {
		if serr == unix.EPIPE || serr == unix.ECONNRESET {
			return fmt.Errorf("fdpass: send %s %d: %w", kind, tag, ErrClosed)
		}
		return fmt.Errorf("fdpass: send %s %d: %w", kind, tag, os.NewSyscallError("sendmsg", serr))
	}
	return nil
}

// Expect announces that an fd tagged tag may arrive, so a strict Conn keeps
// it. Call it before the request that makes the peer send the fd; finish with
// Take or Forget.
func (c *Conn) Expect(tag uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.slots[tag]; !ok {
		c.slots[tag] = &slot{fd: -1, ready: make(chan struct{})}
	}
}

// Take waits for the fd tagged tag and hands it to the caller, who then owns
// it. On a strict Conn the tag must have been announced with Expect. It fails
// when ctx ends, when the record for tag was bad, or with ErrClosed when the
// Conn is closed or the peer went away.
func (c *Conn) Take(ctx context.Context, tag uint64) (int, error) {
	c.mu.Lock()
	s, ok := c.slots[tag]
	if !ok {
		select {
		case <-c.done:
			err := c.closedErrLocked()
			c.mu.Unlock()
			return -1, err
		default:
		}
		if c.strict {
			c.mu.Unlock()
			return -1, fmt.Errorf("fdpass: take %s %d: tag not expected", c.accept, tag)
		}
		s = &slot{fd: -1, ready: make(chan struct{})}
		c.slots[tag] = s
	}
	c.mu.Unlock()

	select {
	case <-s.ready:
	case <-c.done:
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.fd >= 0 || s.err != nil {
		delete(c.slots, tag)
		fd := s.fd
		s.fd = -1
		if s.err != nil {
			return -1, s.err
		}
		return fd, nil
	}
	if err := ctx.Err(); err != nil {
		c.forgetLocked(tag)
		return -1, err
	}
	return -1, c.closedErrLocked()
}

// Forget gives up on tag: an fd that already arrived is closed, and one that
// arrives later is closed on arrival (strict Conn) or kept until Close.
func (c *Conn) Forget(tag uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forgetLocked(tag)
}

// forgetLocked is Forget; c.mu must be held.
func (c *Conn) forgetLocked(tag uint64) {
	if s, ok := c.slots[tag]; ok {
		if s.fd >= 0 {
			unix.Close(s.fd)
			s.fd = -1
		}
		delete(c.slots, tag)
	}
}

// Done is closed when receiving has stopped: the peer closed its end (Err is
// io.EOF), the Conn was closed, or receiving failed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err reports why receiving stopped, or nil while it runs.
func (c *Conn) Err() error {
	select {
	case <-c.done:
	default:
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the socket, stops receiving and closes every fd received but
// not taken. Waiting Takes return ErrClosed.
func (c *Conn) Close() error {
	err := c.f.Close()
	<-c.done
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// closedErrLocked is the error for a Take that found the Conn done.
func (c *Conn) closedErrLocked() error {
	if c.err == nil || errors.Is(c.err, ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("%w: %w", ErrClosed, c.err)
}

// receive reads records until the socket fails or reaches EOF.
func (c *Conn) receive() {
	buf := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(4*maxRecvFDs))
	var err error
	for {
		if err = c.receiveOne(buf, oob); err != nil {
			break
		}
	}
	c.mu.Lock()
	c.err = err
	for tag, s := range c.slots {
		if s.fd >= 0 {
			unix.Close(s.fd)
			s.fd = -1
		}
		delete(c.slots, tag)
	}
	close(c.done)
	c.mu.Unlock()
}

// receiveOne receives one record into buf and oob and files its fd. It
// returns a non-nil error only when receiving must stop (io.EOF when the peer
// closed its end).
func (c *Conn) receiveOne(buf, oob []byte) error {
	var (
		n, oobn, flags int
		rerr           error
	)
	err := c.rc.Read(func(s uintptr) bool {
		for {
			n, oobn, flags, _, rerr = unix.Recvmsg(int(s), buf, oob, unix.MSG_CMSG_CLOEXEC)
			if rerr != unix.EINTR {
				return rerr != unix.EAGAIN
			}
		}
	})
	if err != nil {
		// The only failure of RawConn.Read itself is a closed file.
		return ErrClosed
	}
	if rerr != nil {
		return fmt.Errorf("fdpass: %w", os.NewSyscallError("recvmsg", rerr))
	}
	fds, perr := parseRights(oob[:oobn])
	if n == 0 && oobn == 0 && flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) == 0 {
		return io.EOF // SOCK_SEQPACKET: 0 bytes is the peer's close; records are never empty
	}
	kind, tag, herr := decodeRecord(buf[:n])
	var bad error
	switch {
	case flags&unix.MSG_CTRUNC != 0:
		bad = errors.New("control message truncated (MSG_CTRUNC): too many fds in one record")
	case flags&unix.MSG_TRUNC != 0:
		bad = fmt.Errorf("record truncated (MSG_TRUNC): more than %d bytes", len(buf))
	case perr != nil:
		bad = perr
	case herr != nil:
		bad = herr
	case kind != c.accept:
		bad = fmt.Errorf("record of kind %s, this end accepts %s", kind, c.accept)
	case len(fds) != 1:
		bad = fmt.Errorf("record carries %d fds, want 1", len(fds))
	}
	if bad == nil {
		c.deliver(tag, fds[0], nil)
		return nil
	}
	closeAll(fds)
	if herr != nil || kind != c.accept || flags&unix.MSG_TRUNC != 0 {
		// The tag cannot be trusted: nobody to tell but the log.
		c.logf("fdpass: dropped record (%d fds closed): %v", len(fds), bad)
		return nil
	}
	bad = fmt.Errorf("fdpass: %s %d: %w", kind, tag, bad)
	c.logf("%v (%d fds closed)", bad, len(fds))
	c.deliver(tag, -1, bad)
	return nil
}

// deliver files fd (or err) under tag.
func (c *Conn) deliver(tag uint64, fd int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.slots[tag]
	if !ok {
		if c.strict {
			if fd >= 0 {
				unix.Close(fd)
				c.logf("fdpass: closed unexpected %s fd for tag %d", c.accept, tag)
			}
			return
		}
		s = &slot{fd: -1, ready: make(chan struct{})}
		c.slots[tag] = s
	}
	if s.fd >= 0 || s.err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		c.logf("fdpass: closed duplicate %s fd for tag %d", c.accept, tag)
		return
	}
	s.fd, s.err = fd, err
	close(s.ready)
}

// parseRights returns every fd in every SCM_RIGHTS message of oob, and an
// error for anything else in it. Whatever the error, the fds it returns are
// all those received, so the caller can close them. It reads the cmsghdr
// layout itself (rather than with x/sys, which converts a short buffer to a
// *Cmsghdr before checking its length), so no input makes it read out of
// bounds.
func parseRights(oob []byte) ([]int, error) {
	const (
		word = int(unsafe.Sizeof(uintptr(0))) // CMSG_ALIGN unit and size of cmsg_len
		hdr  = unix.SizeofCmsghdr             // cmsg_len, then int32 level and type
	)
	var (
		fds  []int
		errs []error
	)
	for len(oob) > 0 {
		if len(oob) < hdr {
			errs = append(errs, fmt.Errorf("%d trailing control bytes", len(oob)))
			break
		}
		var length uint64
		if word == 8 {
			length = binary.NativeEndian.Uint64(oob)
		} else {
			length = uint64(binary.NativeEndian.Uint32(oob))
		}
		level := int32(binary.NativeEndian.Uint32(oob[hdr-8:]))
		typ := int32(binary.NativeEndian.Uint32(oob[hdr-4:]))
		if length < hdr || length > uint64(len(oob)) {
			// A bad length hides the rest; the kernel never writes one.
			errs = append(errs, fmt.Errorf("control message length %d of %d bytes", length, len(oob)))
			break
		}
		data := oob[hdr:length]
		if level != unix.SOL_SOCKET || typ != unix.SCM_RIGHTS {
			errs = append(errs, fmt.Errorf("unexpected control message level %d type %d", level, typ))
		} else {
			if len(data)%4 != 0 {
				errs = append(errs, fmt.Errorf("SCM_RIGHTS payload of %d bytes", len(data)))
			}
			for i := 0; i+4 <= len(data); i += 4 {
				fds = append(fds, int(int32(binary.NativeEndian.Uint32(data[i:]))))
			}
		}
		next := (int(length) + word - 1) &^ (word - 1)
		if next >= len(oob) {
			break
		}
		oob = oob[next:]
	}
	return fds, errors.Join(errs...)
}

// closeAll closes every fd in fds.
func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
