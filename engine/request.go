package engine

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/internal/syserr"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport"
)

// Range is a byte range of a volume.
type Range struct {
	Offset int64
	Length int64
}

// Request asks for Length bytes of Volume at Offset, placed in Dst at DstOff.
type Request struct {
	Volume string
	Offset int64
	Length int64
	Dst    memory.Buffer
	DstOff int64
	// OnExtent, when set, is called as each extent of the request lands
	// whole (and was checked, where the session checks), before the
	// request ends, with its bytes at DstOff+(VolumeOffset-Offset) of Dst
	// and Dst still reserved for the call: the caller can use the bytes at
	// once, for example write them to a file, overlapping the rest of the
	// read. It runs on the goroutine of the extent's data connection, so
	// extents of different connections are reported concurrently and out
	// of order, and a slow OnExtent slows that connection. An error fails
	// the request with it.
	OnExtent func(ExtentTiming) error
	// Generation, when not zero, is the volume generation the caller
	// expects: a server whose volume has another one refuses the read,
	// which fails with ErrVolumeReplaced, and sends none of its bytes.
	Generation uint64
	// Plain asks for the read on plain data connections only, as for a
	// destination that cannot take devmem. In a session with devmem
	// connections it fails with ErrNoPlainPath unless the session also has
	// plain ones and the server chooses per read (docs/devmem.md).
	Plain bool
	// OnDone, when set, is called with the request's Handle once it has
	// ended (after Done is closed), with no engine lock held, on the
	// goroutine that ended it: the session's control reader when the
	// read's last event was a control message (its ReadDone, or an extent
	// whose bytes came in its Extent: ExtentTiming.DataConn -1), a data
	// connection's goroutine when it was that connection's last bytes,
	// else the goroutine that cancelled it, or Submit itself for a request
	// refused at once. It may Submit the next request, so a caller keeps
	// reads in flight without a hand-off between goroutines per read. It
	// must return quickly and never wait (for another read, a channel, a
	// lock held long): the session's other reads wait for it, and a
	// Submit on a data connection's goroutine delays that connection's
	// next extent. A Submit never waits long: it writes at most
	// Config.MaxReads Read frames the server has not answered, which the
	// socket buffers hold.
	OnDone func(*Handle)
}

// Handle follows one submitted request.
type Handle struct{ r *request }

// Done is closed when the request has reached a terminal state and the
// engine has stopped writing into its destination.
func (h *Handle) Done() <-chan struct{} { return h.r.done }

// Result returns the request's outcome. It blocks until Done is closed.
func (h *Handle) Result() Result {
	<-h.r.done
	return h.r.res
}

// Progress returns the payload bytes placed so far.
func (h *Handle) Progress() int64 { return h.r.placed.Load() }

// Cancel abandons the request; it ends in StateCancelled unless it already
// ended. Cancel does not wait for Done.
func (h *Handle) Cancel() {
	h.r.abort(StateCancelled, fmt.Errorf("engine: read %s [%d,+%d): %w", h.r.res.Volume, h.r.offset, h.r.length, context.Canceled))
}

// chunkSize is how much of an extent a data connection receives before it
// checks again whether the request still wants the bytes.
const chunkSize = 1 << 20

// jobQueue bounds the extents queued per data connection.
const jobQueue = 4096

type job struct {
	req *request // nil: the request already ended; discard
	ext blockproto.Extent
	at  time.Time
}

type dataConn struct {
	index     int
	conn      net.Conn
	transport transport.RecvTransport // Config.Transport or PlainTransport
	kind      blockproto.DataKind     // of transport
	// check: landed extents are checked against their CRC-32C (from
	// Config.Verify, the transport and the provider's capabilities: the
	// plain connections of a devmem session check what its devmem ones
	// may not).
	check     bool
	recv      transport.Receiver
	jobs      chan job
	announced uint64 // stream bytes announced; touched by readControl only
}

func (dc *dataConn) close() { dc.conn.Close() }

// request is the client-side state of one read.
type request struct {
	s      *Session
	id     uint64
	dst    memory.BufferID
	dstOff int64
	offset int64
	length int64
	// onExtent is Request.OnExtent.
	onExtent func(ExtentTiming) error
	plain    bool // Request.Plain
	h        *Handle
	onDone   func(*Handle) // Request.OnDone
	done     chan struct{}
	placed   atomic.Int64
	stop     func() bool // stops the context watcher

	mu         sync.Mutex
	state      State // StatePending until the request ends
	active     int   // receives into dst in progress
	announced  int64
	received   int64
	serverSaid bool  // ReadDone arrived
	serverLen  int64 // bytes ReadDone reported
	finished   bool  // done closed
	stall      *time.Timer
	res        Result
	// mainBytes and plainBytes count the bytes of recorded extents that
	// Config.Transport and Config.PlainTransport received (settlePath).
	mainBytes, plainBytes int64
}

// Submit starts reads and returns a handle per request, in order. Each
// request honours ctx: its deadline is sent to the server and ends the
// request in StateTimedOut, its cancellation in StateCancelled. Requests that
// are malformed end at once in StateFailed.
func (s *Session) Submit(ctx context.Context, reqs []Request) []*Handle {
	hs := make([]*Handle, len(reqs))
	for i, q := range reqs {
		hs[i] = s.start(ctx, q).h
	}
	return hs
}

func (s *Session) start(ctx context.Context, q Request) *request {
	r := &request{
		s:      s,
		dst:    q.Dst.ID,
		dstOff: q.DstOff,
		offset: q.Offset,
		length: q.Length,
		done:   make(chan struct{}),

		onExtent: q.OnExtent,
		plain:    q.Plain,
		onDone:   q.OnDone,
		res: Result{
			Volume: q.Volume, Offset: q.Offset, Length: q.Length,
			Transport: s.cfg.Transport.Name(), FallbackReason: s.cfg.FallbackReason, ServerSend: s.serverSend,
			Start: time.Now(),
		},
	}
	r.h = &Handle{r: r}
	switch {
	case q.Length <= 0 || q.Offset < 0:
		r.abort(StateFailed, fmt.Errorf("engine: read %s: bad range offset %d length %d", q.Volume, q.Offset, q.Length))
		return r
	case q.DstOff < 0 || q.DstOff+q.Length > q.Dst.Size:
		r.abort(StateFailed, fmt.Errorf("engine: read %s: %d bytes at %d do not fit a %d-byte buffer: %w",
			q.Volume, q.Length, q.DstOff, q.Dst.Size, memory.ErrOutOfBounds))
		return r
	case ctx.Err() != nil:
		r.abort(ctxState(ctx.Err()), ctx.Err())
		return r
	case q.Plain && s.hasDevmem && (!s.hasPlain || !s.kinds):
		r.abort(StateFailed, fmt.Errorf("engine: read %s [%d,+%d): %w", q.Volume, q.Offset, q.Length, s.noPlainPath()))
		return r
	}
	deadline, _ := ctx.Deadline()
	s.mu.Lock()
	if s.closed || s.draining {
		err := s.err
		if !s.closed {
			err = fmt.Errorf("engine: read %s: %w", q.Volume, ErrDraining)
		}
		s.mu.Unlock()
		r.abort(StateFailed, err)
		return r
	}
	s.nextID++
	r.id = s.nextID
	s.reqs[r.id] = r
	msg := &blockproto.Read{ID: r.id, Volume: q.Volume, Offset: uint64(q.Offset), Length: uint64(q.Length), Deadline: deadline,
		Generation: q.Generation}
	if q.Plain && s.hasDevmem {
		msg.Flags = blockproto.ReadPlain
	}
	if s.sent >= s.cfg.MaxReads {
		s.backlog = append(s.backlog, msg)
		msg = nil
	} else {
		s.sent++
	}
	s.mu.Unlock()
	if msg != nil && !s.sendRead(msg) {
		return r
	}
	stop := context.AfterFunc(ctx, func() {
		r.abort(ctxState(ctx.Err()), fmt.Errorf("engine: read %s [%d,+%d): %w", q.Volume, q.Offset, q.Length, ctx.Err()))
	})
	r.mu.Lock()
	if r.finished {
		r.mu.Unlock()
		stop()
		return r
	}
	r.stop = stop
	r.mu.Unlock()
	return r
}

// sendRead writes a Read; false if the write failed and ended the session.
// A Read sent while another goroutine writes Reads is queued, and that
// goroutine writes every Read queued meanwhile in one write once its own
// returns: a burst of Reads costs one write(2), as blockd batches its
// answers. So is a Read sent while the control reader holds Reads back
// (holdReads), to be written when it has dispatched the frames it has
// read. The queued Read's sender returns true at once; if that write
// fails, the session ends and its request with it. Not under s.mu: a
// write blocked by a busy server must not stop the control reader, which
// takes s.mu, from draining the server's messages.
func (s *Session) sendRead(m *blockproto.Read) bool {
	s.rmu.Lock()
	s.rq = append(s.rq, m)
	if s.rwriting || s.rhold && len(s.rq) < maxHeldReads {
		s.rmu.Unlock()
		return true
	}
	return s.writeReads()
}

// holdReads makes sendRead queue Reads until releaseReads, or until
// maxHeldReads are queued. The control reader holds them while it
// dispatches a burst of frames, each of which may end a read whose OnDone
// submits the next: those go out in pairs, one write for two Reads.
func (s *Session) holdReads() {
	s.rmu.Lock()
	s.rhold = true
	s.rmu.Unlock()
}

// maxHeldReads is how many Reads holdReads lets queue before they are
// written. Two: at queue depth 8 that took a sixth off the client's CPU
// per 4 KiB read, with 5% more reads a second; holding a whole burst took
// more off, but the reads then travelled in convoys, the client and the
// server each idle while the other worked, and 4 KiB reads ran 27% slower
// (docs/performance.md).
const maxHeldReads = 2

// releaseReads ends holdReads and writes the Reads queued meanwhile.
func (s *Session) releaseReads() {
	s.rmu.Lock()
	s.rhold = false
	if s.rwriting || len(s.rq) == 0 {
		s.rmu.Unlock()
		return
	}
	s.writeReads()
}

// writeReads writes the queued Reads until none is left; it is called
// with s.rmu held, and returns with it released. False if a write failed
// and ended the session.
func (s *Session) writeReads() bool {
	s.rwriting = true
	var err error
	for len(s.rq) > 0 && err == nil {
		batch := s.rq
		s.rq = s.rqSpare[:0]
		s.rmu.Unlock()
		err = s.proto.WriteMsgs(batch)
		clear(batch)
		s.rmu.Lock()
		s.rqSpare = batch[:0]
	}
	s.rq = s.rq[:0]
	s.rwriting = false
	s.rmu.Unlock()
	if err != nil {
		s.fail(fmt.Errorf("%w: write: %w", ErrSessionClosed, err))
		return false
	}
	return true
}

// readEnded notes the server's terminal message for a Read (ReadDone or an
// Error with its ID) and sends the oldest waiting Read whose request is
// still open, in its own goroutine so the control reader never blocks on a
// write.
func (s *Session) readEnded() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent--
	for len(s.backlog) > 0 && s.sent < s.cfg.MaxReads {
		m := s.backlog[0]
		s.backlog[0] = nil
		s.backlog = s.backlog[1:]
		if s.reqs[m.ID] == nil {
			continue // ended (cancelled, timed out) before it was sent
		}
		s.sent++
		go s.sendRead(m)
	}
}

func ctxState(err error) State {
	if errors.Is(err, context.DeadlineExceeded) {
		return StateTimedOut
	}
	return StateCancelled
}

// Read fetches ranges of volume into dst, placed one after another from
// offset 0, and waits for all of them. It returns a result per range and the
// first failure.
func (s *Session) Read(ctx context.Context, volume string, ranges []Range, dst memory.Buffer) ([]Result, error) {
	reqs := make([]Request, len(ranges))
	var off int64
	for i, rg := range ranges {
		reqs[i] = Request{Volume: volume, Offset: rg.Offset, Length: rg.Length, Dst: dst, DstOff: off}
		off += rg.Length
	}
	hs := s.Submit(ctx, reqs)
	res := make([]Result, len(hs))
	var first error
	for i, h := range hs {
		res[i] = h.Result()
		if res[i].Err != nil && first == nil {
			first = res[i].Err
		}
	}
	return res, first
}

// announce records an extent; false if it falls outside the request.
func (r *request) announce(e *blockproto.Extent) bool {
	off := int64(e.VolumeOffset)
	if off < r.offset || off+int64(e.Length) > r.offset+r.length {
		return false
	}
	r.mu.Lock()
	r.announced += int64(e.Length)
	r.mu.Unlock()
	return true
}

// begin reserves the destination for one receive; false if the request has
// ended and the bytes must be discarded.
func (r *request) begin() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != StatePending {
		return false
	}
	r.active++
	return true
}

// release ends a receive begun with begin; placed bytes count as progress.
func (r *request) release(placed int64) {
	r.placed.Add(placed)
	r.mu.Lock()
	r.active--
	fin := r.maybeFinish()
	r.mu.Unlock()
	r.ended(fin)
}

// extentDone counts a fully received extent (record listed it, if it landed
// in time), or fails the request with the error that spoilt it.
func (r *request) extentDone(t ExtentTiming, err error) {
	if err != nil {
		r.abort(StateFailed, err)
		return
	}
	r.mu.Lock()
	r.received += t.Length
	fin := r.maybeFinish()
	r.mu.Unlock()
	r.ended(fin)
}

// record adds a landed extent to the result. It is called between begin
// and release, so the result is not handed out yet, and an extent that
// landed is recorded even if the request ended meanwhile: a Client keeps
// its bytes instead of reading them again.
func (r *request) record(t ExtentTiming) {
	r.mu.Lock()
	defer r.mu.Unlock()
	dc := r.s.inline
	if t.DataConn != inlineConn {
		dc = r.s.data[t.DataConn]
	}
	t.Transport = dc.transport.Name()
	if dc.index < r.s.cfg.DataConns {
		r.mainBytes += t.Length
	} else {
		r.plainBytes += t.Length
	}
	r.res.Extents = append(r.res.Extents, t)
	if t.Verified {
		r.res.VerifiedExtents++
	} else {
		r.res.UnverifiedExtents++
	}
}

// serverDone records ReadDone (err nil, n bytes) or a per-request Error.
func (r *request) serverDone(n int64, err *blockproto.Error) {
	if err != nil {
		st := StateFailed
		switch err.Code {
		case blockproto.CodeTimedOut:
			st = StateTimedOut
		case blockproto.CodeCancelled:
			st = StateCancelled
		}
		var e error = err
		switch err.Code {
		case blockproto.CodeCancelled:
			// Not cancelled here (that ended the request already): the
			// server cancelled it while closing the session, as when one
			// of its data connections broke.
			st, e = StateFailed, fmt.Errorf("%w: the server cancelled the read: %w", ErrSessionClosed, err)
		case blockproto.CodeTimedOut:
			// The deadline the client sent passed on the server's clock
			// first: the same deadline, whichever side saw it.
			e = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
		case blockproto.CodeShuttingDown:
			e = fmt.Errorf("%w: %w", ErrDraining, err)
		case blockproto.CodeCorrupt:
			e = fmt.Errorf("%w: %w", ErrChecksum, err)
		case blockproto.CodeReplaced:
			e = fmt.Errorf("%w: %w", ErrVolumeReplaced, err)
		}
		r.abort(st, fmt.Errorf("engine: read %s [%d,+%d): %w", r.res.Volume, r.offset, r.length, e))
		return
	}
	r.mu.Lock()
	r.serverSaid = true
	r.serverLen = n
	if r.state == StatePending && n != r.announced {
		r.mu.Unlock()
		r.abort(StateFailed, fmt.Errorf("engine: read %d: server reported %d bytes, announced %d", r.id, n, r.announced))
		return
	}
	fin := r.maybeFinish()
	r.mu.Unlock()
	r.ended(fin)
}

// abort ends the request early. Bytes still to come for it are discarded;
// Done closes once no receive is writing into the destination. If a receive
// stays stuck past the stall timeout, the session is closed to unblock it.
func (r *request) abort(st State, err error) {
	r.mu.Lock()
	if r.state != StatePending {
		r.mu.Unlock()
		return
	}
	r.state = st
	r.res.Err = err
	if r.active > 0 && r.s != nil {
		s := r.s
		r.stall = time.AfterFunc(s.cfg.StallTimeout, func() {
			s.fail(fmt.Errorf("%w: a data connection stalled for %s", ErrSessionClosed, s.cfg.StallTimeout))
		})
	}
	fin := r.maybeFinish()
	r.mu.Unlock()
	if r.s != nil && r.id != 0 {
		r.s.forget(r.id, st != StateFailed)
	}
	r.ended(fin)
}

// maybeFinish closes done when the request is complete, and reports
// whether it did; the caller then calls ended once it has let go of r.mu,
// which must be held here.
func (r *request) maybeFinish() bool {
	if r.finished {
		return false
	}
	if r.state == StatePending {
		if !r.serverSaid || r.received != r.serverLen {
			return false
		}
		r.state = StateDone
	}
	if r.active > 0 {
		return false
	}
	r.finished = true
	if r.stall != nil {
		r.stall.Stop()
	}
	if r.stop != nil {
		r.stop()
	}
	r.res.End = time.Now()
	r.res.Bytes = r.placed.Load()
	r.res.State = r.state
	if r.res.Err != nil {
		r.res.Error = r.res.Err.Error()
	}
	r.settlePath()
	if r.state == StateDone && r.s != nil {
		r.s.forget(r.id, false)
	}
	close(r.done)
	return true
}

// ended calls the request's OnDone, if fin (maybeFinish closed done). No
// lock may be held: OnDone may Submit.
func (r *request) ended(fin bool) {
	if fin && r.onDone != nil {
		r.onDone(r.h)
	}
}

// forget drops a request from the session; with cancel it also tells the
// server to stop announcing extents for it.
func (s *Session) forget(id uint64, cancel bool) {
	s.mu.Lock()
	_, ok := s.reqs[id]
	delete(s.reqs, id)
	closed := s.closed
	s.mu.Unlock()
	if ok && cancel && !closed {
		// Best effort: if the write fails the session is ending anyway.
		s.proto.WriteMsg(&blockproto.Cancel{ID: id})
	}
}

// runData receives the payload of one data connection, extent by extent, in
// announcement order.
func (s *Session) runData(dc *dataConn) {
	defer s.closeWG.Done()
	defer func() {
		// A receiver reports what it could not release (devmem tokens
		// still held are a leak); Session.Close returns it.
		if err := dc.recv.Close(); err != nil {
			s.mu.Lock()
			s.recvErrs = append(s.recvErrs, fmt.Errorf("data connection %d: %w", dc.index, err))
			s.mu.Unlock()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.done
		cancel()
	}()
	batcher, _ := dc.recv.(transport.BatchReceiver)
	var (
		batch []job
		next  *job // taken off the queue but not joined to the batch
	)
	for {
		var j job
		if next != nil {
			j, next = *next, nil
		} else {
			select {
			case j = <-dc.jobs:
			case <-s.done:
				return
			}
		}
		var err error
		if batcher != nil && batchable(j, j.req) {
			// The small extents of this read already queued behind j
			// are received with it in one call.
			batch = append(batch[:0], j)
			n := int64(j.ext.Length)
		fill:
			for len(batch) < maxBatch {
				select {
				case k := <-dc.jobs:
					if !batchable(k, j.req) || n+int64(k.ext.Length) > maxBatchBytes {
						next = &k
						break fill
					}
					batch = append(batch, k)
					n += int64(k.ext.Length)
				default:
					break fill
				}
			}
			err = s.receiveBatch(ctx, dc, batcher, batch)
		} else {
			err = s.receiveExtent(ctx, dc, j)
		}
		if err != nil {
			s.fail(fmt.Errorf("%w: data connection %d: %w", ErrSessionClosed, dc.index, err))
			return
		}
	}
}

// Limits of a batch of small extents received in one call
// (transport.BatchReceiver): at most maxBatch extents of at most
// maxBatchBytes together, each of one request.
const (
	maxBatch      = 64
	maxBatchBytes = 1 << 20
)

// batchable reports whether j is a small extent of the live request r,
// which can join a batch.
func batchable(j job, r *request) bool {
	return r != nil && j.req == r && int64(j.ext.Length) <= maxBatchBytes/4
}

// receiveBatch receives the extents of jobs, all of one request and queued
// one after another on dc, in one ReceiveBatch call, then checks and
// reports each as receiveExtent does. It returns an error only when the
// stream is no longer usable.
func (s *Session) receiveBatch(ctx context.Context, dc *dataConn, br transport.BatchReceiver, jobs []job) error {
	r := jobs[0].req
	if len(jobs) == 1 || !r.begin() {
		// Alone, or the request ended: receiveExtent drains what it
		// no longer wants.
		for _, j := range jobs {
			if err := s.receiveExtent(ctx, dc, j); err != nil {
				return err
			}
		}
		return nil
	}
	pieces := make([]transport.Piece, len(jobs))
	var total int64
	for i, j := range jobs {
		pieces[i] = transport.Piece{Dst: r.dst, Off: r.dstOff + int64(j.ext.VolumeOffset) - r.offset, N: int64(j.ext.Length)}
		total += pieces[i].N
	}
	err := r.counted(dc.recv, func() error { return br.ReceiveBatch(ctx, pieces) })
	if err != nil && !errors.Is(err, transport.ErrProvider) {
		r.release(0)
		return err
	}
	if err != nil {
		r.release(0)
		e := jobs[0].ext
		r.extentDone(ExtentTiming{VolumeOffset: int64(e.VolumeOffset), Length: int64(e.Length), DataConn: dc.index},
			fmt.Errorf("engine: read %d: extents at %d to %d: %w", r.id, e.VolumeOffset, jobs[len(jobs)-1].ext.VolumeOffset, err))
		return nil
	}
	// Where the destination is mapped here, each extent's CRC is computed
	// now, while its bytes are in cache and the request still holds the
	// destination.
	crcs := make([]uint32, len(jobs))
	var mem []byte
	if dc.check && s.mapper != nil {
		mem, _ = s.mapper.Bytes(r.dst)
	}
	summed := mem != nil
	for i, p := range pieces {
		if summed = summed && p.Off+p.N <= int64(len(mem)); summed {
			crcs[i] = crc32.Update(0, castagnoli, mem[p.Off:p.Off+p.N])
		}
	}
	r.release(total)
	for i, j := range jobs {
		s.finishExtent(ctx, dc, j, pieces[i].Off, crcs[i], summed, nil)
	}
	return nil
}

// ChecksumReceiver is implemented by a transport.Receiver that can have the
// provider checksum each chunk in the destination right after placing it
// there (transport/tcp's receiver for a provider that is a
// memory.CopyInChecksummer, such as a plugin). For a destination not
// mapped here the engine then receives through ReceiveChecksum and needs no
// Checksum of the extent once it has landed. It is used instead of
// Receive, so a LinearCounter's counts are not read around it.
type ChecksumReceiver interface {
	// ReceiveChecksum is Receive that also returns the CRC-32C of the n
	// bytes as they are in dst after landing (computed from dst, not from
	// the stream), continued from crc. ok is false when the provider
	// could not checksum them; they were placed all the same.
	ReceiveChecksum(ctx context.Context, dst memory.BufferID, off, n int64, crc uint32) (sum uint32, ok bool, err error)
}

// summedChunkSize is how much of an extent a ChecksumReceiver receives per
// call: a plugin's staging buffer's worth (4 MiB by default), so that each
// call is one copy-in on the plugin's ring rather than four. With 1 MiB
// calls a fetch into the example plugin took about 10% more CPU.
const summedChunkSize = 4 << 20

// receiveExtent moves one extent from the stream into its destination. It
// returns an error only when the stream is no longer usable.
func (s *Session) receiveExtent(ctx context.Context, dc *dataConn, j job) error {
	r, e := j.req, j.ext
	total := int64(e.Length)
	var dstOff int64
	if r != nil {
		dstOff = r.dstOff + int64(e.VolumeOffset) - r.offset
	}
	var spoilt error
	// Where the destination is mapped here, the CRC is computed from each
	// chunk right after it landed, while its bytes are still in cache,
	// instead of in a second pass over the extent.
	var (
		inline []byte // the extent's bytes in the destination, or nil
		crc    uint32
	)
	if r != nil && dc.check && s.mapper != nil {
		if b, err := s.mapper.Bytes(r.dst); err == nil && dstOff+total <= int64(len(b)) {
			inline = b[dstOff : dstOff+total]
		}
	}
	// Else a receiver that can have the provider checksum each chunk in
	// the destination as it lands does (ChecksumReceiver); summed stays
	// true while every chunk so far was.
	summer, summed := dc.recv.(ChecksumReceiver)
	summed = summed && r != nil && dc.check && inline == nil
	for pos := int64(0); pos < total; {
		n := min(total-pos, chunkSize)
		if summed {
			n = min(total-pos, summedChunkSize)
		}
		if r == nil || spoilt != nil || !r.begin() {
			if err := dc.recv.Discard(ctx, n); err != nil {
				return err
			}
			pos += n
			continue
		}
		var err error
		if summed {
			crc, summed, err = summer.ReceiveChecksum(ctx, r.dst, dstOff+pos, n, crc)
		} else {
			err = r.receiveCounted(ctx, dc.recv, dstOff+pos, n)
		}
		if err != nil && !errors.Is(err, transport.ErrProvider) {
			r.release(0)
			return err
		}
		if err != nil {
			spoilt = fmt.Errorf("engine: read %d: extent at %d: %w", r.id, e.VolumeOffset, err)
			r.release(0)
		} else {
			if inline != nil {
				crc = crc32.Update(crc, castagnoli, inline[pos:pos+n])
			}
			r.release(n)
		}
		pos += n
	}
	if r != nil {
		s.finishExtent(ctx, dc, j, dstOff, crc, inline != nil || summed, spoilt)
	}
	return nil
}

// finishExtent checks the received extent of j, placed at dstOff of its
// request's destination, against its CRC-32C (crc, where summed says it was
// computed as the bytes landed, else through the provider), and records and
// reports it; spoilt is what went wrong receiving it.
func (s *Session) finishExtent(ctx context.Context, dc *dataConn, j job, dstOff int64, crc uint32, summed bool, spoilt error) {
	r, e := j.req, j.ext
	total := int64(e.Length)
	verified := false
	if spoilt == nil && dc.check && r.begin() {
		sum, err := crc, error(nil)
		if !summed {
			sum, err = s.cfg.Provider.Checksum(ctx, r.dst, dstOff, total)
		}
		switch {
		case err != nil && s.cfg.Verify != VerifyRequire && errors.Is(err, syserr.ErrNotSupported):
			// The provider cannot checksum: counted unverified.
		case err != nil:
			spoilt = fmt.Errorf("engine: read %d: checksum extent at %d: %w", r.id, e.VolumeOffset, err)
		case sum != e.CRC32C:
			spoilt = fmt.Errorf("engine: read %s: extent [%d,+%d) on data connection %d: crc32c %08x, server announced %08x: %w",
				r.res.Volume, e.VolumeOffset, e.Length, dc.index, sum, e.CRC32C, ErrChecksum)
		default:
			verified = true
		}
		r.release(0)
	}
	t := ExtentTiming{
		VolumeOffset: int64(e.VolumeOffset), Length: total, DataConn: dc.index, Latency: time.Since(j.at), Verified: verified,
		CRC32C: e.CRC32C,
	}
	if spoilt == nil && r.begin() {
		if r.onExtent != nil {
			if err := r.onExtent(t); err != nil {
				spoilt = fmt.Errorf("engine: read %s: extent [%d,+%d): %w", r.res.Volume, e.VolumeOffset, e.Length, err)
			}
		}
		if spoilt == nil {
			r.record(t)
		}
		r.release(0)
	}
	r.extentDone(t, spoilt)
}

// castagnoli is the CRC-32C table the engine checks extents with.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)
