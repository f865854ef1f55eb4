//go:build linux

package devmem

import (
	"encoding/binary"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

// The software NIC's devmem TX: sendmsg from a TX binding with
// MSG_ZEROCOPY, zerocopy completions and the emulated error queue.

// ReleaseCompletions posts the TX completions held back by
// SoftNICConfig.HoldCompletions.
func (n *SoftNIC) ReleaseCompletions() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for s := range n.socks {
		held := s.held
		s.held = nil
		for _, c := range held {
			s.queueCompletionLocked(c)
		}
	}
}

func (s *softSocket) setZerocopy() error { return s.host.setZerocopy() }

func (s *softSocket) zerocopyEnabled() (bool, error) {
	var v int
	var gerr error
	err := s.host.rc.Control(func(fd uintptr) {
		v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ZEROCOPY)
	})
	if err == nil {
		err = gerr
	}
	return v != 0, err
}

// parseTXControl extracts the dmabuf id of a devmem TX sendmsg the way
// __sock_cmsg_send does: an SCM_DEVMEM_DMABUF message must be exactly
// CMSG_LEN(4); other SOL_SOCKET messages are not emulated (EINVAL).
func parseTXControl(control []byte) (id uint32, err error) {
	for off := 0; off < len(control); {
		b := control[off:]
		if len(b) < uapi.SizeofCmsghdr {
			return 0, unix.EINVAL
		}
		l := readWord(b)
		level := int32(binary.NativeEndian.Uint32(b[wordSize:]))
		typ := int32(binary.NativeEndian.Uint32(b[wordSize+4:]))
		if l < uint64(uapi.SizeofCmsghdr) || l > uint64(len(b)) {
			return 0, unix.EINVAL
		}
		if level == unix.SOL_SOCKET {
			if typ != unix.SCM_DEVMEM_DMABUF || l != uint64(uapi.CmsgLen(4)) {
				return 0, unix.EINVAL
			}
			id = binary.NativeEndian.Uint32(b[uapi.SizeofCmsghdr:])
		}
		next := uapi.CmsgAlign(int(l))
		if next >= len(b) {
			break
		}
		off += next
	}
	return id, nil
}

// sendmsg implements devmem TX with the checks of tcp_sendmsg_locked and
// net_devmem_get_binding (6.18).
func (s *softSocket) sendmsg(iov []uapi.Iovec, control []byte, flags int) (int, error) {
	const op = "sendmsg"
	id, cerr := parseTXControl(control)
	if cerr == nil && id == 0 {
		// Not a devmem send: the kernel's ordinary path.
		return s.host.sendmsg(iov, control, flags)
	}
	zc, err := s.zerocopyEnabled()
	if err != nil {
		return 0, &OpError{Subsystem: "devmem", Op: op, Err: err}
	}
	var size uint64
	for _, v := range iov {
		size += uint64(v.Len)
	}
	n := s.nic
	var b *softBinding
	if flags&unix.MSG_ZEROCOPY != 0 && size > 0 && zc && cerr == nil {
		n.mu.Lock()
		b = n.bindings[id]
		if b == nil || b.kind != BindingTX {
			n.mu.Unlock()
			return 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.EINVAL}
		}
		b.busy++
		n.mu.Unlock()
		defer func() {
			n.mu.Lock()
			b.busy--
			idle := b.takeIdleLocked()
			n.mu.Unlock()
			if idle {
				_ = n.release(b)
			}
		}()
	}
	if cerr == nil && (flags&unix.MSG_ZEROCOPY == 0 || !zc) {
		return 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.EINVAL}
	}
	if cerr != nil {
		return 0, &OpError{Subsystem: "devmem", Op: op, Err: cerr}
	}
	if b == nil {
		return 0, nil
	}
	// The NIC reads page by page from the dmabuf: bytes before the end are
	// sent, the first byte past it is EFAULT.
	var bufs [][]byte
	fault := false
	for _, v := range iov {
		off, l := uint64(v.Base), uint64(v.Len)
		if l == 0 {
			continue
		}
		if off >= uint64(len(b.mem)) {
			fault = true
			break
		}
		end := min(off+l, uint64(len(b.mem)))
		bufs = append(bufs, b.mem[off:end])
		if end < off+l {
			fault = true
			break
		}
	}
	sent := 0
	if len(bufs) > 0 {
		var werr error
		err := s.host.rc.Write(func(fd uintptr) bool {
			sent, werr = unix.Writev(int(fd), bufs)
			return werr != unix.EAGAIN
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			return 0, &OpError{Subsystem: "devmem", Op: op, Err: err}
		}
	}
	if sent == 0 {
		if fault {
			return 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.EFAULT}
		}
		return 0, nil
	}
	n.mu.Lock()
	n.stats.DevmemTXBytes += int64(sent)
	seq := s.zcNext
	s.zcNext++
	c := Completion{Lo: seq, Hi: seq}
	if n.cfg.HoldCompletions {
		s.held = append(s.held, c)
	} else {
		s.queueCompletionLocked(c)
	}
	n.mu.Unlock()
	return sent, nil
}

// queueCompletionLocked appends a completion to the error queue, extending
// the last one when the ranges are consecutive (the kernel's
// skb_zerocopy_notify_extend).
func (s *softSocket) queueCompletionLocked(c Completion) {
	if k := len(s.errq); k > 0 {
		last := &s.errq[k-1]
		if last.Hi+1 == c.Lo && last.Copied == c.Copied && last.Count()+c.Count() < 1<<32 {
			last.Hi = c.Hi
			return
		}
	}
	s.errq = append(s.errq, c)
	if s.errqArmed {
		close(s.errqWake)
		s.errqArmed = false
	}
}

func (s *softSocket) recvErrqueue(oob []byte, wait bool) (int, error) {
	const op = "recvmsg MSG_ERRQUEUE"
	n := s.nic
	n.mu.Lock()
	for len(s.errq) == 0 {
		if !wait || s.closed {
			n.mu.Unlock()
			return 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.EAGAIN}
		}
		if !s.errqArmed {
			s.errqWake = make(chan struct{})
			s.errqArmed = true
		}
		wake, cancel := s.errqWake, s.cancel
		n.mu.Unlock()
		select {
		case <-wake:
		case <-cancel:
			return 0, &OpError{Subsystem: "devmem", Op: op, Err: errDeadline}
		}
		n.mu.Lock()
	}
	need := uapi.CmsgSpace(uapi.SizeofSockExtendedErr + sizeofSockaddrInet4)
	if s.v6 {
		need = uapi.CmsgSpace(uapi.SizeofSockExtendedErr + sizeofSockaddrInet6)
	}
	if len(oob) < need {
		n.mu.Unlock()
		return 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.ENOBUFS, Message: "control message truncated"}
	}
	c := s.errq[0]
	s.errq = s.errq[1:]
	n.mu.Unlock()
	return len(appendZerocopyCmsg(oob[:0], c, s.v6)), nil
}
