package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/catalog"
)

// Upload limits of a server session (docs/protocol.md section 13).
const (
	// PutWindow is the upload window a server grants: a client may send
	// bytes up to PutWindow past the last PutAck.Acked. With
	// MaxUploadsPerSession it bounds the upload bytes one session can
	// make the server hold in memory (32 MiB).
	PutWindow = 8 << 20
	// MaxUploadsPerSession is how many uploads one session may have open.
	MaxUploadsPerSession = 4
	// PutMinChunk is the smallest PutData a server accepts, except the one
	// that ends the volume. It bounds the chunks queued per upload.
	PutMinChunk = 4096
	// putAckEvery is how many bytes the server takes in between PutAcks.
	putAckEvery = PutWindow / 4
)

// putFailure is why an upload was stopped by its session: it becomes the
// upload's PutError.
type putFailure struct {
	code blockproto.Code
	msg  string
}

// Error returns the reason the session gave.
func (f *putFailure) Error() string { return f.msg }

// srvUpload is the server side of one upload. Its bytes flow from the
// session's serve goroutine (PutData) through chunks to the goroutine running
// catalog.Store.Write, which reads them as an io.Reader.
type srvUpload struct {
	ss      *srvSession
	id      uint64
	name    string
	size    int64
	replace bool
	ctx     context.Context
	cancel  context.CancelCauseFunc
	chunks  chan []byte
	ended   chan struct{}

	// Touched by the serve goroutine only.
	received  int64
	committed bool

	// Touched by the writer goroutine only (Read).
	stall    *time.Timer // fires when no bytes came for UploadStall
	cur      []byte
	consumed int64
	lastAck  int64
	accepted bool

	mu    sync.Mutex
	acked int64 // last PutAck.Acked sent
}

func lookupUpload(ss *srvSession, id uint64) *srvUpload {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.uploads[id]
}

// onPut handles the upload messages of a session, from its serve goroutine.
func (ss *srvSession) onPut(m blockproto.Msg) {
	switch m := m.(type) {
	case *blockproto.PutVolume:
		ss.putVolume(m)
	case *blockproto.PutData:
		if u := lookupUpload(ss, m.ID); u != nil {
			u.data(m)
		}
	case *blockproto.PutCommit:
		if u := lookupUpload(ss, m.ID); u != nil {
			u.commit()
		}
	case *blockproto.PutAbort:
		if u := lookupUpload(ss, m.ID); u != nil {
			u.cancel(&putFailure{blockproto.CodeCancelled, "upload aborted by the client"})
		}
	}
}

// putVolume starts an upload, or refuses it with PutError.
func (ss *srvSession) putVolume(m *blockproto.PutVolume) {
	refuse := func(code blockproto.Code, format string, args ...any) {
		ss.write(&blockproto.PutError{ID: m.ID, Code: code, Message: fmt.Sprintf("put %s: ", m.Name) + fmt.Sprintf(format, args...)})
	}
	if ss.srv.isDraining() {
		refuse(blockproto.CodeShuttingDown, "server is shutting down: no new uploads")
		return
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	u := &srvUpload{
		ss: ss, id: m.ID, name: m.Name, size: int64(m.Size), replace: m.Replace,
		ctx: ctx, cancel: cancel,
		chunks: make(chan []byte, PutWindow/PutMinChunk+1),
		ended:  make(chan struct{}),
	}
	ss.mu.Lock()
	switch {
	case ss.closed:
		ss.mu.Unlock()
		cancel(nil)
		return
	case ss.reads[m.ID] != nil || ss.uploads[m.ID] != nil:
		ss.mu.Unlock()
		cancel(nil)
		refuse(blockproto.CodeBadRequest, "id %d already in use", m.ID)
		return
	case len(ss.uploads) >= MaxUploadsPerSession:
		n := len(ss.uploads)
		ss.mu.Unlock()
		cancel(nil)
		refuse(blockproto.CodeBusy, "%d uploads already open in this session", n)
		return
	}
	ss.uploads[m.ID] = u
	ss.mu.Unlock()
	if err := ss.srv.reserve(u.size); err != nil {
		ss.mu.Lock()
		delete(ss.uploads, m.ID)
		ss.mu.Unlock()
		cancel(nil)
		refuse(blockproto.CodeIO, "%v", err)
		return
	}
	ss.srv.reads.Add(1)
	go u.run(int64(m.ExtentSize))
}

// freeSpacer is implemented by volume sources that know their free space.
type freeSpacer interface {
	FreeBytes() (int64, error)
}

// reserve accounts n bytes an upload will write against the free space of
// the volume source, counting the uploads already in progress; release
// with unreserve.
func (s *Server) reserve(n int64) error {
	free := int64(-1)
	if fs, ok := s.cfg.Volumes.(freeSpacer); ok {
		var err error
		if free, err = fs.FreeBytes(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if free >= 0 && n > free-s.reserved {
		return fmt.Errorf("not enough space: the volume needs %d bytes, %d are free and uploads in progress will take %d of them", n, free, s.reserved)
	}
	s.reserved += n
	return nil
}

// unreserve releases what reserve accounted.
func (s *Server) unreserve(n int64) {
	s.mu.Lock()
	s.reserved -= n
	s.mu.Unlock()
}

// run writes the upload into the store and sends its terminal message.
func (u *srvUpload) run(extentSize int64) {
	ss := u.ss
	defer ss.srv.reads.Done()
	go func() {
		select {
		case <-ss.done:
			u.cancel(&putFailure{blockproto.CodeShuttingDown, "session closed"})
		case <-u.ended:
		}
	}()
	start := time.Now()
	v, err := ss.srv.cfg.Volumes.Write(u.ctx, u.name, u.size, extentSize, u, u.replace)
	// A replaced volume's old file is closed now, not at the next read.
	ss.srv.handles.sweep(ss.srv.cfg.Volumes)
	// The space is written or given back before the client hears.
	ss.srv.unreserve(u.size)
	close(u.ended)
	u.cancel(nil)
	ss.mu.Lock()
	delete(ss.uploads, u.id)
	ss.mu.Unlock()
	if err != nil {
		e := u.failure(err)
		ss.log.Info("upload failed", "id", u.id, "volume", u.name, "size", u.size, "err", e.Message)
		ss.write(e)
		return
	}
	ss.log.Info("upload committed", "id", u.id, "volume", v.Name, "size", v.Size,
		"generation", v.Generation, "seconds", time.Since(start).Seconds())
	ss.write(&blockproto.PutDone{ID: u.id, Volume: volumeStat(v)})
}

// failure turns the error of an upload into its PutError.
func (u *srvUpload) failure(err error) *blockproto.PutError {
	e := &blockproto.PutError{ID: u.id, Code: blockproto.CodeIO, Message: err.Error()}
	var f *putFailure
	switch {
	case errors.As(context.Cause(u.ctx), &f):
		e.Code, e.Message = f.code, fmt.Sprintf("put %s: %s", u.name, f.msg)
	case errors.Is(err, catalog.ErrExists):
		e.Code = blockproto.CodeExists
	case errors.Is(err, catalog.ErrInvalid), errors.Is(err, catalog.ErrBadName):
		e.Code = blockproto.CodeBadRequest
	case errors.Is(err, catalog.ErrReadOnly):
		e.Code = blockproto.CodeInternal
	}
	if len(e.Message) > blockproto.MaxMessage {
		e.Message = e.Message[:blockproto.MaxMessage]
	}
	return e
}

// stop fails the upload for a reason of the session's.
func (u *srvUpload) stop(code blockproto.Code, format string, args ...any) {
	u.cancel(&putFailure{code, fmt.Sprintf(format, args...)})
}

// data queues the next bytes of the upload. It never blocks: a client that
// keeps to its window always finds room.
func (u *srvUpload) data(m *blockproto.PutData) {
	n := int64(len(m.Data))
	u.mu.Lock()
	limit := u.acked + PutWindow
	u.mu.Unlock()
	switch {
	case u.committed:
		u.stop(blockproto.CodeBadRequest, "data after commit")
	case int64(m.Offset) != u.received:
		u.stop(blockproto.CodeBadRequest, "data at offset %d, expected %d", m.Offset, u.received)
	case u.received+n > u.size:
		u.stop(blockproto.CodeBadRequest, "data [%d,+%d) past the volume's %d bytes", m.Offset, n, u.size)
	case n < PutMinChunk && u.received+n != u.size:
		u.stop(blockproto.CodeBadRequest, "%d-byte chunk at %d: chunks but the last carry at least %d bytes", n, m.Offset, PutMinChunk)
	case u.received+n > limit:
		u.stop(blockproto.CodeBadRequest, "data [%d,+%d) beyond the window, which ends at %d", m.Offset, n, limit)
	default:
		select {
		case u.chunks <- m.Data:
			u.received += n
		default:
			u.stop(blockproto.CodeBadRequest, "more than %d chunks queued", cap(u.chunks))
		}
	}
}

// commit ends the upload's stream: once the writer has taken every byte it
// sees io.EOF and commits the volume.
func (u *srvUpload) commit() {
	switch {
	case u.committed:
		u.stop(blockproto.CodeBadRequest, "committed twice")
	case u.received != u.size:
		u.stop(blockproto.CodeBadRequest, "commit after %d of %d bytes", u.received, u.size)
	default:
		u.committed = true
		close(u.chunks)
	}
}

// Read hands the upload's bytes to catalog.Store.Write. Its first call
// accepts the upload (the store has checked the name and created the file);
// later calls acknowledge what was taken, opening the window.
func (u *srvUpload) Read(p []byte) (int, error) {
	if !u.accepted {
		u.accepted = true
		u.ack(0)
	}
	if len(u.cur) == 0 {
		stall := u.ss.srv.cfg.UploadStall
		if u.stall == nil {
			u.stall = time.NewTimer(stall)
		} else {
			u.stall.Reset(stall)
		}
		defer u.stall.Stop()
		select {
		case c, ok := <-u.chunks:
			if !ok {
				return 0, io.EOF
			}
			u.cur = c
		case <-u.ctx.Done():
			return 0, context.Cause(u.ctx)
		case <-u.stall.C:
			u.stop(blockproto.CodeTimedOut, "no data for %s after %d of %d bytes", stall, u.consumed, u.size)
			return 0, context.Cause(u.ctx)
		}
	}
	n := copy(p, u.cur)
	u.cur = u.cur[n:]
	u.consumed += int64(n)
	if u.consumed-u.lastAck >= putAckEvery {
		u.ack(u.consumed)
	}
	return n, nil
}

// ack tells the client it may send up to acked+PutWindow.
func (u *srvUpload) ack(acked int64) {
	u.lastAck = acked
	u.mu.Lock()
	u.acked = acked
	u.mu.Unlock()
	u.ss.write(&blockproto.PutAck{ID: u.id, Acked: uint64(acked), Window: PutWindow})
}
