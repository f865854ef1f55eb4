package tcp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/transport"
)

// maxSendfile caps one sendfile(2) call, as the kernel does (0x7ffff000).
const maxSendfile = 1 << 30

func newSender(conn net.Conn) (transport.Sender, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return &copySender{byteWriter{conn}}, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tcp: sender: %w", err)
	}
	return &sendfileSender{byteWriter: byteWriter{conn}, rc: rc}, nil
}

// sendfileSender sends with sendfile(2) from an explicit file offset, so
// several connections share one *os.File without seeking it.
type sendfileSender struct {
	byteWriter
	rc syscall.RawConn
}

func (s *sendfileSender) SendExtent(f *os.File, off, n int64) error {
	src := int(f.Fd())
	defer runtime.KeepAlive(f)
	for n > 0 {
		var sent int
		var serr error
		err := s.rc.Write(func(fd uintptr) bool {
			o := off
			sent, serr = unix.Sendfile(int(fd), src, &o, int(min(n, maxSendfile)))
			return !errors.Is(serr, unix.EAGAIN)
		})
		if err == nil {
			err = serr
		}
		if sent > 0 {
			off += int64(sent)
			n -= int64(sent)
		}
		switch {
		case err == nil && sent == 0:
			// sendfile reads nothing at end of file: the backing shrank.
			return pad(s.conn, n, fmt.Errorf("volume file ends at %d", off))
		case err != nil:
			// sendfile reports one errno for both ends; ask the file.
			if _, perr := unix.Pread(src, make([]byte, 1), off); perr != nil {
				return pad(s.conn, n, os.NewSyscallError("pread", perr))
			}
			return fmt.Errorf("tcp: sendfile: %w", err)
		}
	}
	return nil
}

var _ transport.TrySender = (*sendfileSender)(nil)

// TrySendExtent implements transport.TrySender: sendfile(2) calls on the
// non-blocking socket until it would block, the file ends or one fails.
func (s *sendfileSender) TrySendExtent(f *os.File, off, n int64) int64 {
	src := int(f.Fd())
	defer runtime.KeepAlive(f)
	var done int64
	s.rc.Write(func(fd uintptr) bool {
		for done < n {
			o := off + done
			k, err := unix.Sendfile(int(fd), src, &o, int(min(n-done, maxSendfile)))
			if k > 0 {
				done += int64(k)
			}
			if err != nil || k <= 0 {
				break
			}
		}
		return true // never wait for the socket
	})
	return done
}

func (s *sendfileSender) Close() error { return nil }
