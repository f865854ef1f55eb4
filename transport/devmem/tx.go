package devmem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

// TXConfig configures a Sender.
type TXConfig struct {
	// Kernel performs the socket calls: Host() or a *SoftNIC.
	Kernel Kernel
	// Binding is the TX binding whose dmabuf the pool's buffers are in;
	// sends name it in an SCM_DEVMEM_DMABUF control message and pass
	// dmabuf offsets as iov_base. If nil, the sender does plain
	// MSG_ZEROCOPY sends from Mem instead (the kernel pins the pages; on
	// loopback it copies them), which needs no NIC support.
	Binding *Binding
	// Pool hands out the buffers sends are made from; Buf.Off is an
	// offset in the dmabuf (and in Mem). Several senders may share a
	// pool; each has its own cache.
	Pool *BufferPool
	// Mem is the CPU mapping of the dmabuf (for example a udmabuf mmap).
	// SendExtent fills buffers through it; without a Binding it is what is
	// sent. It must stay mapped while the sender is in use.
	Mem []byte
	// Sync, if set, brackets SendExtent's writes into Mem with
	// DMA_BUF_IOCTL_SYNC (start before a batch of buffers is filled, end
	// once it is, before it is sent), which a non-coherent system needs for
	// the NIC to read the bytes the CPU wrote. Set it when Mem maps a
	// dmabuf; nil (no bracket) for other memory. Callers that fill
	// buffers from Get themselves bracket their writes the same way.
	Sync *DmabufSync
	// MaxIovecs is the most buffers one sendmsg carries. Default 16.
	MaxIovecs int
	// FirstCounter is the socket's zerocopy counter at the sender's first
	// send: 0 unless the socket already sent with MSG_ZEROCOPY.
	FirstCounter uint32
}

// A Segment is the first Len bytes of a pool buffer, to be sent.
type Segment struct {
	Buf Buf
	Len int64
}

// TXStats are a Sender's counters.
type TXStats struct {
	Bytes    int64 // bytes handed to the kernel
	Sendmsgs int64 // sendmsg calls that sent data
	Partial  int64 // of which sent less than asked
	NoBufs   int64 // ENOBUFS (optmem limit) waits
	// LostSends counts send calls still in flight when the sender was
	// closed without their completion (the connection failed): their
	// buffers are never returned to the pool, because the NIC may still
	// read them.
	LostSends  int
	Completion TrackerStats
}

// A Sender sends the payload of one data connection from pool buffers with
// devmem TX (or plain MSG_ZEROCOPY), and returns each buffer to the pool only
// when the kernel reports the completion of every send that used it. It
// implements transport.Sender.
//
// A Sender is used by one goroutine at a time.
type Sender struct {
	cfg     TXConfig
	sock    socket
	cache   *PoolCache
	tracker *CompletionTracker

	iov     []uapi.Iovec
	control []byte
	oob     []byte
	touched []uint32
	segs    []Segment
	base    uintptr // address of Mem for plain zerocopy

	closed bool
	stats  TXStats
}

// NewSender prepares the established connection conn for sending: it sets
// SO_ZEROCOPY. The sender does not own conn; Close does not close it.
func NewSender(conn net.Conn, cfg TXConfig) (*Sender, error) {
	if cfg.Kernel == nil || cfg.Pool == nil {
		return nil, errors.New("devmem: TXConfig needs Kernel and Pool")
	}
	if cfg.Binding != nil && (cfg.Binding.Kind() != BindingTX || cfg.Binding.ID() == 0) {
		// Id 0 would make the kernel treat the dmabuf offsets in iov_base
		// as user pointers (an ordinary MSG_ZEROCOPY send).
		return nil, fmt.Errorf("devmem: %v is not a TX binding", cfg.Binding)
	}
	if cfg.Binding == nil && len(cfg.Mem) == 0 {
		return nil, errors.New("devmem: plain zerocopy sends need TXConfig.Mem")
	}
	if cfg.Mem != nil && int64(len(cfg.Mem)) < cfg.Pool.base+int64(cfg.Pool.Len())*cfg.Pool.BufSize() {
		return nil, errors.New("devmem: TXConfig.Mem is smaller than the pool")
	}
	if cfg.MaxIovecs <= 0 {
		cfg.MaxIovecs = 16
	}
	sock, err := cfg.Kernel.open(conn)
	if err != nil {
		return nil, err
	}
	if err := sock.setZerocopy(); err != nil {
		_ = sock.close()
		return nil, err
	}
	s := &Sender{
		cfg:     cfg,
		sock:    sock,
		cache:   cfg.Pool.NewCache(),
		iov:     make([]uapi.Iovec, cfg.MaxIovecs),
		oob:     make([]byte, 128),
		touched: make([]uint32, 0, cfg.MaxIovecs),
		segs:    make([]Segment, 0, cfg.MaxIovecs),
	}
	if cfg.Binding != nil {
		s.control = appendDmabufIDCmsg(nil, cfg.Binding.ID())
	} else {
		s.base = uintptr(unsafe.Pointer(&cfg.Mem[0]))
	}
	s.tracker = NewCompletionTracker(cfg.FirstCounter, func(b uint32) { s.cache.Put(cfg.Pool.Buf(b)) })
	return s, nil
}

// Stats returns the sender's counters.
func (s *Sender) Stats() TXStats {
	st := s.stats
	st.Completion = s.tracker.Stats()
	return st
}

// InFlight returns the number of send calls awaiting their completion.
func (s *Sender) InFlight() int { return s.tracker.InFlight() }

// Get returns a free buffer, waiting for completions of this sender's sends
// (or for other senders to return buffers to the pool) when none is free.
func (s *Sender) Get(ctx context.Context) (Buf, error) {
	if s.closed {
		return Buf{}, ErrClosed
	}
	stop := s.sock.watch(ctx)
	defer stop()
	b, err := s.get(ctx)
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return b, err
}

func (s *Sender) get(ctx context.Context) (Buf, error) {
	for {
		if b, ok := s.cache.Get(); ok {
			return b, nil
		}
		if s.tracker.InFlight() > 0 {
			if err := s.complete(true); err != nil {
				return Buf{}, err
			}
			continue
		}
		if err := s.cfg.Pool.Wait(ctx); err != nil {
			return Buf{}, err
		}
	}
}

// Put returns a buffer that was taken with Get and not sent.
func (s *Sender) Put(b Buf) { s.cache.Put(b) }

// complete reads one completion notification (waiting for it if wait) and
// releases the buffers of the sends it covers.
func (s *Sender) complete(wait bool) error {
	oobn, err := s.sock.recvErrqueue(s.oob, wait)
	if err != nil {
		return err
	}
	c, err := ParseErrqueue(s.oob[:oobn])
	if err != nil {
		return err
	}
	return s.tracker.Complete(c)
}

// Reap processes the completions already queued, without waiting.
func (s *Sender) Reap() error {
	for s.tracker.InFlight() > 0 {
		err := s.complete(false)
		if errors.Is(err, syscall.EAGAIN) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Send sends the segments, in order, and takes ownership of their buffers:
// each returns to the pool once the sends that carried it are complete.
// Buffers of segments that could not be sent are returned at once.
func (s *Sender) Send(ctx context.Context, segs []Segment) error {
	if s.closed {
		return ErrClosed
	}
	stop := s.sock.watch(ctx)
	defer stop()
	err := s.send(segs)
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return err
}

func (s *Sender) send(segs []Segment) error {
	for _, seg := range segs {
		if seg.Len <= 0 || seg.Len > s.cfg.Pool.BufSize() {
			for _, seg := range segs {
				s.cache.Put(seg.Buf)
			}
			return fmt.Errorf("devmem: segment of %d bytes in buffers of %d", seg.Len, s.cfg.Pool.BufSize())
		}
	}
	// The sender holds every buffer until its last byte is sent: a
	// completion of the part already sent must not free it.
	for _, seg := range segs {
		s.tracker.Hold(seg.Buf.Index)
	}
	i := 0         // first segment not fully sent
	var done int64 // bytes of segs[i] already sent
	fail := func(err error) error {
		for _, seg := range segs[i:] {
			s.tracker.Drop(seg.Buf.Index)
		}
		return err
	}
	for i < len(segs) {
		k := 0
		for j := i; j < len(segs) && k < len(s.iov); j++ {
			off := uintptr(segs[j].Buf.Off)
			l := uintptr(segs[j].Len)
			if j == i {
				off += uintptr(done)
				l -= uintptr(done)
			}
			s.iov[k] = uapi.Iovec{Base: s.base + off, Len: l}
			k++
		}
		n, err := s.sock.sendmsg(s.iov[:k], s.control, uapi.MSG_ZEROCOPY)
		if errors.Is(err, syscall.ENOBUFS) && s.tracker.InFlight() > 0 {
			// Too many notifications outstanding (optmem): wait for one.
			s.stats.NoBufs++
			if err := s.complete(true); err != nil {
				return fail(err)
			}
			continue
		}
		if err == nil && n == 0 {
			err = io.ErrShortWrite
		}
		if err != nil {
			return fail(err)
		}
		// Record the call with every buffer it touched.
		s.touched = s.touched[:0]
		left := int64(n)
		var want int64
		for j := i; j < i+k; j++ {
			want += segs[j].Len
		}
		if left < want-done {
			s.stats.Partial++
		}
		first := i
		for left > 0 {
			rest := segs[i].Len - done
			s.touched = append(s.touched, segs[i].Buf.Index)
			if left >= rest {
				left -= rest
				i++
				done = 0
			} else {
				done += left
				left = 0
			}
		}
		s.tracker.Sent(s.touched...)
		for _, b := range s.touched[:i-first] { // fully sent now
			s.tracker.Drop(b)
		}
		s.stats.Sendmsgs++
		s.stats.Bytes += int64(n)
		if err := s.Reap(); err != nil {
			return fail(err)
		}
	}
	return nil
}

// SendExtent sends n bytes of f starting at off: it reads them into pool
// buffers through TXConfig.Mem (bracketed by TXConfig.Sync, if set) and
// sends those. It returns once the bytes are handed to the kernel; the
// buffers are recycled on completion.
func (s *Sender) SendExtent(f *os.File, off, n int64) error {
	if s.closed {
		return ErrClosed
	}
	if s.cfg.Mem == nil {
		return errors.New("devmem: SendExtent needs TXConfig.Mem")
	}
	ctx := context.Background()
	size := s.cfg.Pool.BufSize()
	var srcErr error // once the file fails, the rest is sent as zeros
	for n > 0 {
		segs := s.segs[:0]
		for len(segs) < cap(segs) && n > 0 {
			b, ok := s.cache.Get()
			if !ok {
				if len(segs) > 0 {
					break // send what is filled before waiting
				}
				var err error
				if b, err = s.get(ctx); err != nil {
					return err
				}
			}
			if len(segs) == 0 && s.cfg.Sync != nil {
				// CPU writes into the dmabuf start (ended below,
				// before the NIC reads them).
				if err := s.cfg.Sync.BeginWrite(); err != nil {
					s.cache.Put(b)
					return err
				}
			}
			l := min(size, n)
			mem := s.cfg.Mem[b.Off : b.Off+l]
			if srcErr == nil {
				k, err := f.ReadAt(mem, off)
				if err != nil && k < len(mem) {
					if errors.Is(err, io.EOF) {
						err = fmt.Errorf("volume file ends at %d", off+int64(k))
					}
					srcErr = err
					clear(mem[k:])
				}
			} else {
				clear(mem)
			}
			segs = append(segs, Segment{Buf: b, Len: l})
			off += l
			n -= l
		}
		if s.cfg.Sync != nil {
			if err := s.cfg.Sync.EndWrite(); err != nil {
				for _, seg := range segs {
					s.cache.Put(seg.Buf)
				}
				return err
			}
		}
		if err := s.send(segs); err != nil {
			return err
		}
	}
	// Hand back what has completed, so idle senders do not sit on buffers
	// other connections of the shared pool are waiting for.
	if err := s.Reap(); err != nil {
		return err
	}
	s.cache.Drain()
	if srcErr != nil {
		return fmt.Errorf("devmem: %w: %w", transport.ErrSource, srcErr)
	}
	return nil
}

// Close waits for the completions of every send still in flight, returns the
// cached buffers to the pool, and releases the socket state. If the
// connection fails first, the buffers still in flight are not returned to
// the pool (the NIC may still read them) and counted in TXStats.Lost. Close
// does not close the connection.
func (s *Sender) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	for s.tracker.InFlight() > 0 {
		if err = s.complete(true); err != nil {
			s.stats.LostSends = s.tracker.InFlight()
			err = fmt.Errorf("devmem: %d sends never completed, their buffers are withheld from the pool: %w", s.stats.LostSends, err)
			break
		}
	}
	s.cache.Drain()
	return errors.Join(err, s.sock.close())
}

var _ transport.Sender = (*Sender)(nil)
