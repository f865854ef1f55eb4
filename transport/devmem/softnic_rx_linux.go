//go:build linux

package devmem

import (
	"container/heap"
	"encoding/binary"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

// The software NIC's devmem RX: skbs received into page-pool chunks,
// reported as SCM_DEVMEM_* control messages with per-socket tokens, and
// SO_DEVMEM_DONTNEED.

type softSkb struct {
	b       *softBinding
	linear  []byte
	linOff  int
	frags   []softFrag
	fragIdx int
	// plain: the skb has no frag in the dmabuf (header split failed for
	// its whole payload), so it is readable: its bytes are returned
	// without devmem control messages.
	plain bool
}

type softFrag struct {
	chunk     int32
	size, off uint32 // bytes in the chunk; bytes already reported
}

type softToken struct {
	b     *softBinding
	chunk int32
}

// tokenHeap holds freed tokens, smallest first, so that tokens are
// allocated lowest-free like xa_alloc does.
type tokenHeap []uint32

func (h tokenHeap) Len() int           { return len(h) }
func (h tokenHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h tokenHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *tokenHeap) Push(x any)        { *h = append(*h, x.(uint32)) }
func (h *tokenHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (s *softSocket) allocTokenLocked(b *softBinding, chunk int32) uint32 {
	var tok uint32
	if s.freeTokens.Len() > 0 {
		tok = heap.Pop(&s.freeTokens).(uint32)
	} else {
		if len(s.tokens) == 0 {
			s.tokens = append(s.tokens, softToken{}) // token 0 is never used
		}
		tok = uint32(len(s.tokens))
		s.tokens = append(s.tokens, softToken{})
	}
	s.tokens[tok] = softToken{b: b, chunk: chunk}
	b.refs[chunk]++
	s.outstanding++
	return tok
}

// freeTokenLocked returns a token; it reports whether it was live and the
// binding whose memory may now be released.
func (s *softSocket) freeTokenLocked(tok uint32) (bool, *softBinding) {
	if tok == 0 || int64(tok) >= int64(len(s.tokens)) || s.tokens[tok].b == nil {
		return false, nil
	}
	t := s.tokens[tok]
	s.tokens[tok] = softToken{}
	heap.Push(&s.freeTokens, tok)
	s.outstanding--
	if t.b.unrefLocked(t.chunk) {
		return true, t.b
	}
	return true, nil
}

func (s *softSocket) recvmsg(p, oob []byte, flags int) (int, int, int, error) {
	const op = "recvmsg"
	if flags&unix.MSG_TRUNC != 0 {
		return s.truncate(p, flags)
	}
	for {
		n := s.nic
		n.mu.Lock()
		if s.closed {
			n.mu.Unlock()
			return 0, 0, 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.EBADF}
		}
		if len(s.rxq) > 0 {
			if s.rxq[0].plain {
				got := s.deliverPlainLocked(p)
				n.mu.Unlock()
				return got, 0, 0, nil
			}
			if flags&unix.MSG_SOCK_DEVMEM == 0 {
				n.mu.Unlock()
				return 0, 0, 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.EFAULT}
			}
			got, oobn, err := s.deliverLocked(p, oob)
			n.mu.Unlock()
			return got, oobn, 0, err
		}
		b := n.rxBindingLocked(s.flow)
		if b == nil {
			// Not steered to a bound queue: plain TCP data, as the
			// kernel delivers it (MSG_SOCK_DEVMEM is harmless).
			n.mu.Unlock()
			return s.host.recvmsg(p, oob, flags&^unix.MSG_SOCK_DEVMEM)
		}
		// The next skb may fail header split: then it is readable, and
		// neither the flag nor a control buffer is needed.
		unsplit := n.unsplitNextLocked()
		if len(p) == 0 || (!unsplit && (flags&unix.MSG_SOCK_DEVMEM == 0 || len(oob) < devmemCmsgSpace)) {
			// The kernel fails only once there is devmem data to read.
			n.mu.Unlock()
			avail, _, _, err := s.host.recvmsg(s.scratch[:], nil, unix.MSG_PEEK|flags&unix.MSG_DONTWAIT)
			if err != nil || avail == 0 || len(p) == 0 {
				return 0, 0, 0, err
			}
			if flags&unix.MSG_SOCK_DEVMEM == 0 {
				return 0, 0, 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.EFAULT}
			}
			return 0, 0, 0, &OpError{Subsystem: "devmem", Op: op, Err: syscall.Errno(uapi.ETOOSMALL)}
		}
		if len(b.free) == 0 && !unsplit {
			// Page pool empty: the NIC cannot take the packet.
			if flags&unix.MSG_DONTWAIT != 0 {
				n.mu.Unlock()
				return 0, 0, 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.EAGAIN}
			}
			n.stats.PoolEmpty++
			wake, cancel, hook := b.waitChanLocked(), s.cancel, n.testHookPoolWait
			n.mu.Unlock()
			if hook != nil {
				hook()
			}
			select {
			case <-wake:
			case <-b.done:
			case <-cancel:
				return 0, 0, 0, &OpError{Subsystem: "devmem", Op: op, Err: errDeadline}
			}
			continue
		}
		n.mu.Unlock()
		if flags&unix.MSG_DONTWAIT != 0 {
			// fill waits for the wire: look without waiting first.
			if _, _, _, err := s.host.recvmsg(s.scratch[:], nil, unix.MSG_PEEK|unix.MSG_DONTWAIT); err != nil {
				return 0, 0, 0, err
			}
		}
		eof, err := s.fill(b)
		if err != nil {
			return 0, 0, 0, err
		}
		if eof {
			return 0, 0, 0, nil
		}
	}
}

// fill receives one skb from the wire into free chunks of b (and, for a
// linear skb, into host memory), up to SkbSize bytes whatever the reader
// asked for, as a NIC would. It blocks until data or EOF arrives.
func (s *softSocket) fill(b *softBinding) (eof bool, err error) {
	n := s.nic
	target := n.cfg.SkbSize
	n.mu.Lock()
	if b.unbound || s.closed {
		n.mu.Unlock()
		return false, nil // caller re-evaluates
	}
	linear := 0
	unsplit := n.unsplitNextLocked()
	switch {
	case unsplit:
		// Header split fails for the whole skb: no chunk is used.
		linear = target
	case n.cfg.LinearEvery > 0 && (n.skbSeq+1)%int64(n.cfg.LinearEvery) == 0:
		linear = min(n.cfg.LinearBytes, target)
	}
	if linear < target && len(b.free) == 0 {
		// Another socket took the free chunks since the caller looked.
		n.mu.Unlock()
		return false, nil // caller re-evaluates
	}
	n.skbSeq++
	if unsplit && n.unsplit > 0 {
		n.unsplit--
	}
	k := min((target-linear+chunkSize-1)/chunkSize, len(b.free))
	want := min(target-linear, k*chunkSize)
	chunks := make([]int32, k)
	for i := range chunks {
		c := b.free[len(b.free)-1]
		b.free = b.free[:len(b.free)-1]
		b.refs[c] = 1 // the skb's reference
		chunks[i] = c
	}
	b.busy++
	n.mu.Unlock()

	if len(s.linear) < linear {
		s.linear = make([]byte, linear)
	}
	iov := make([][]byte, 0, k+1)
	if linear > 0 {
		iov = append(iov, s.linear[:linear])
	}
	rest := want
	for _, c := range chunks {
		l := min(rest, chunkSize)
		iov = append(iov, b.mem[int(c)*chunkSize:int(c)*chunkSize+l])
		rest -= l
	}
	var got int
	var rerr error
	err = s.host.rc.Read(func(fd uintptr) bool {
		got, rerr = unix.Readv(int(fd), iov)
		return rerr != unix.EAGAIN
	})
	if err == nil {
		err = rerr
	}

	n.mu.Lock()
	defer n.mu.Unlock()
	b.busy--
	skb := softSkb{b: b}
	var linearGot int
	if err == nil && got > 0 {
		linearGot = min(got, linear)
		skb.linear = append([]byte(nil), s.linear[:linearGot]...)
		got -= linearGot
	}
	release := false
	for _, c := range chunks {
		if err == nil && got > 0 {
			sz := min(got, chunkSize)
			skb.frags = append(skb.frags, softFrag{chunk: c, size: uint32(sz)})
			got -= sz
			n.stats.DevmemRXBytes += int64(sz)
			continue
		}
		release = b.unrefLocked(c) || release
	}
	if release || b.takeIdleLocked() {
		defer func() { _ = n.release(b) }()
	}
	switch {
	case len(skb.frags) > 0:
		n.stats.Skbs++
		n.stats.DevmemRXBytes += int64(linearGot)
		if linearGot > 0 {
			n.stats.LinearSkbs++
		}
	case linearGot > 0:
		// No frag in the dmabuf: a readable skb.
		skb.plain = true
		n.stats.UnsplitSkbs++
		n.stats.UnsplitBytes += int64(linearGot)
	}
	if err != nil {
		return false, &OpError{Subsystem: "devmem", Op: "recvmsg", Err: err}
	}
	if len(skb.linear) == 0 && len(skb.frags) == 0 {
		return true, nil
	}
	s.rxq = append(s.rxq, skb)
	return false, nil
}

// deliverLocked reports queued skbs the way tcp_recvmsg_dmabuf does: per
// skb, the linear part is copied into the iovec with an SCM_DEVMEM_LINEAR
// message, then each frag gets an SCM_DEVMEM_DMABUF message with a fresh
// token. The iovec length caps the bytes consumed (a frag may be cut, its
// rest reported by the next call with another token); a control message
// that does not fit ends the call, or fails it with ETOOSMALL if nothing was
// delivered yet.
func (s *softSocket) deliverLocked(p, oob []byte) (int, int, error) {
	copied, iovPos, o := 0, 0, 0
	room := func() bool { return o+devmemCmsgSpace <= len(oob) }
	tooSmall := func() (int, int, error) {
		if copied == 0 {
			return 0, 0, &OpError{Subsystem: "devmem", Op: "recvmsg", Err: syscall.Errno(uapi.ETOOSMALL)}
		}
		return copied, o, nil
	}
	for len(s.rxq) > 0 && copied < len(p) && !s.rxq[0].plain {
		skb := &s.rxq[0]
		if skb.linOff < len(skb.linear) {
			if !room() {
				return tooSmall()
			}
			take := min(len(skb.linear)-skb.linOff, len(p)-copied)
			copy(p[iovPos:], skb.linear[skb.linOff:skb.linOff+take])
			o = len(appendDevmemCmsg(oob[:o], Frag{Size: uint32(take), Linear: true}))
			skb.linOff += take
			iovPos += take
			copied += take
		}
		for skb.fragIdx < len(skb.frags) && copied < len(p) {
			if !room() {
				return tooSmall()
			}
			f := &skb.frags[skb.fragIdx]
			take := min(int(f.size-f.off), len(p)-copied)
			tok := s.allocTokenLocked(skb.b, f.chunk)
			o = len(appendDevmemCmsg(oob[:o], Frag{
				Offset:   uint64(f.chunk)*chunkSize + uint64(f.off),
				Size:     uint32(take),
				Token:    tok,
				DmabufID: skb.b.id,
			}))
			f.off += uint32(take)
			copied += take
			if f.off == f.size {
				skb.b.unrefLocked(f.chunk) // the skb's reference; the token holds one
				skb.fragIdx++
			}
		}
		if skb.linOff < len(skb.linear) || skb.fragIdx < len(skb.frags) {
			break
		}
		s.rxq = s.rxq[1:]
	}
	return copied, o, nil
}

// deliverPlainLocked copies the bytes of the queued readable skbs at the
// head of the queue into p, as the kernel copies ordinary skbs: no control
// message, and it stops before a devmem skb (last_copied_dmabuf).
func (s *softSocket) deliverPlainLocked(p []byte) int {
	copied := 0
	for len(s.rxq) > 0 && s.rxq[0].plain && copied < len(p) {
		skb := &s.rxq[0]
		k := copy(p[copied:], skb.linear[skb.linOff:])
		skb.linOff += k
		copied += k
		if skb.linOff < len(skb.linear) {
			break
		}
		s.rxq = s.rxq[1:]
	}
	return copied
}

// unsplitNextLocked reports whether the next skb the NIC fills fails
// header split entirely (FailHeaderSplit, UnsplitEvery). n.mu is held.
func (n *SoftNIC) unsplitNextLocked() bool {
	if n.unsplit > 0 {
		return true
	}
	e := int64(n.cfg.UnsplitEvery)
	return e > 0 && (n.skbSeq+1)%e == 0
}

// truncate drops up to len(p) bytes without reporting them (MSG_TRUNC).
func (s *softSocket) truncate(p []byte, flags int) (int, int, int, error) {
	n := s.nic
	n.mu.Lock()
	if len(s.rxq) == 0 {
		n.mu.Unlock()
		return s.host.recvmsg(p, nil, flags&^unix.MSG_SOCK_DEVMEM)
	}
	dropped := 0
	var release []*softBinding
	for len(s.rxq) > 0 && dropped < len(p) {
		skb := &s.rxq[0]
		take := min(len(skb.linear)-skb.linOff, len(p)-dropped)
		skb.linOff += take
		dropped += take
		for skb.fragIdx < len(skb.frags) && dropped < len(p) {
			f := &skb.frags[skb.fragIdx]
			take := min(int(f.size-f.off), len(p)-dropped)
			f.off += uint32(take)
			dropped += take
			if f.off == f.size {
				if skb.b.unrefLocked(f.chunk) {
					release = append(release, skb.b)
				}
				skb.fragIdx++
			}
		}
		if skb.linOff < len(skb.linear) || skb.fragIdx < len(skb.frags) {
			break
		}
		s.rxq = s.rxq[1:]
	}
	n.mu.Unlock()
	for _, b := range release {
		_ = n.release(b)
	}
	return dropped, 0, 0, nil
}

// dontneed implements SO_DEVMEM_DONTNEED with the checks of
// sock_devmem_dontneed (net/core/sock.c, 6.18).
func (s *softSocket) dontneed(opt []byte) (int, error) {
	const op = "setsockopt SO_DEVMEM_DONTNEED"
	if len(opt) < 4 || len(opt)%uapi.SizeofDmabufToken != 0 || len(opt) > uapi.MAX_DONTNEED_TOKENS*uapi.SizeofDmabufToken {
		return 0, &OpError{Subsystem: "devmem", Op: op, Err: unix.EINVAL}
	}
	n := s.nic
	n.mu.Lock()
	freed, frags := 0, 0
	var release []*softBinding
walk:
	for i := 0; i < len(opt); i += uapi.SizeofDmabufToken {
		start := binary.NativeEndian.Uint32(opt[i:])
		count := binary.NativeEndian.Uint32(opt[i+4:])
		for j := uint32(0); j < count; j++ {
			frags++
			if frags > uapi.MAX_DONTNEED_FRAGS {
				break walk
			}
			ok, b := s.freeTokenLocked(start + j)
			if ok {
				freed++
			}
			if b != nil {
				release = append(release, b)
			}
		}
	}
	n.mu.Unlock()
	for _, b := range release {
		_ = n.release(b)
	}
	return freed, nil
}
