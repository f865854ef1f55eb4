package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/blockxfer/blockxfer/blockproto"
)

// clientPut is the client side of one upload: what the server said so far.
type clientPut struct {
	notify chan struct{} // poked (never blocks) on every message

	mu       sync.Mutex
	accepted bool
	acked    int64
	window   int64
	done     *blockproto.PutDone
	failed   *blockproto.PutError
}

// acquirePut takes an upload slot of s, so a session stays within the
// server's MaxUploadsPerSession: Put waits for a slot instead of being
// refused busy. The returned func gives the slot back.
func (s *Session) acquirePut(ctx context.Context) (release func(), err error) {
	select {
	case s.putSlots <- struct{}{}:
		return func() { <-s.putSlots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, s.Err()
	}
}

// onPut records an upload message from the server; it is called by the
// session's control reader and never blocks. Messages for uploads Put no
// longer waits for (it gave up) are dropped.
func (s *Session) onPut(m blockproto.Msg) {
	var id uint64
	switch m := m.(type) {
	case *blockproto.PutAck:
		id = m.ID
	case *blockproto.PutDone:
		id = m.ID
	case *blockproto.PutError:
		id = m.ID
	}
	s.mu.Lock()
	p := s.puts[id]
	s.mu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	switch m := m.(type) {
	case *blockproto.PutAck:
		p.accepted = true
		p.acked = max(p.acked, int64(m.Acked))
		p.window = int64(m.Window)
	case *blockproto.PutDone:
		p.done = m
	case *blockproto.PutError:
		p.failed = m
	}
	p.mu.Unlock()
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// Put uploads a volume to the server: exactly size bytes read from r, stored
// by the server as the volume name with extents (and CRC-32Cs) of extentSize
// bytes (0: 4 MiB). With replace an existing volume of that name is replaced
// (its generation grows); without it Put fails if the name is taken (a
// *blockproto.PutError with code exists). It returns the committed volume as
// the server lists it.
//
// The bytes travel as PutData frames on the control connection, at most the
// server's window ahead of what it acknowledged, so reads of the same session
// keep flowing. Put honours ctx: on cancellation, deadline, a failure of r
// or of the session it abandons the upload (the server discards it) and
// returns the reason. Put is safe to call concurrently; at most
// MaxUploadsPerSession uploads of a session run at once, the others wait.
func (s *Session) Put(ctx context.Context, name string, size, extentSize int64, r io.Reader, replace bool) (blockproto.VolumeStat, error) {
	fail := func(err error) (blockproto.VolumeStat, error) {
		return blockproto.VolumeStat{}, fmt.Errorf("engine: put %s to %s: %w", name, s.addr, err)
	}
	if extentSize == 0 {
		extentSize = 4 << 20
	}
	switch {
	case size < 1 || size > blockproto.MaxPutSize:
		return fail(fmt.Errorf("size %d out of range 1..%d", size, int64(blockproto.MaxPutSize)))
	case extentSize < 1 || extentSize > blockproto.MaxExtentLen:
		return fail(fmt.Errorf("extent size %d out of range 1..%d", extentSize, blockproto.MaxExtentLen))
	case ctx.Err() != nil:
		return fail(ctx.Err())
	}
	release, err := s.acquirePut(ctx)
	if err != nil {
		return fail(err)
	}
	defer release()
	p := &clientPut{notify: make(chan struct{}, 1)}
	s.mu.Lock()
	if s.closed || s.draining {
		err := s.err
		if !s.closed {
			err = ErrDraining
		}
		s.mu.Unlock()
		return fail(err)
	}
	s.nextID++
	id := s.nextID
	s.puts[id] = p
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.puts, id)
		s.mu.Unlock()
	}()

	if err := s.proto.WriteMsg(&blockproto.PutVolume{ID: id, Name: name, Size: uint64(size),
		ExtentSize: uint32(extentSize), Replace: replace}); err != nil {
		s.fail(fmt.Errorf("%w: write: %w", ErrSessionClosed, err))
		return fail(s.Err())
	}
	abort := func(err error) (blockproto.VolumeStat, error) {
		// Best effort: if the write fails the session is ending anyway.
		s.proto.WriteMsg(&blockproto.PutAbort{ID: id})
		return fail(err)
	}
	// wait blocks until ready reports true (with p.mu held), the server
	// ends the upload, ctx ends or the session does.
	wait := func(ready func() bool) (*blockproto.PutDone, error) {
		for {
			p.mu.Lock()
			ok, done, failed := ready(), p.done, p.failed
			p.mu.Unlock()
			switch {
			case failed != nil:
				if failed.Code == blockproto.CodeShuttingDown {
					return nil, fmt.Errorf("%w: %w", ErrDraining, failed)
				}
				return nil, failed
			case done != nil:
				return done, nil
			case ok:
				return nil, nil
			}
			select {
			case <-p.notify:
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-s.done:
				return nil, s.Err()
			}
		}
	}
	if done, err := wait(func() bool { return p.accepted }); err != nil || done != nil {
		if err == nil {
			err = fmt.Errorf("protocol: server committed before any data")
		}
		return abort(err)
	}
	buf := make([]byte, min(size, blockproto.MaxPutData))
	for sent := int64(0); sent < size; {
		n := min(size-sent, int64(len(buf)))
		if got, err := io.ReadFull(r, buf[:n]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("source ended after %d of %d bytes", sent+int64(got), size)
			}
			return abort(fmt.Errorf("read source: %w", err))
		}
		if done, err := wait(func() bool { return sent+n <= p.acked+p.window }); err != nil || done != nil {
			if err == nil {
				err = fmt.Errorf("protocol: server committed after %d of %d bytes", sent, size)
			}
			return abort(err)
		}
		if err := s.proto.WriteMsg(&blockproto.PutData{ID: id, Offset: uint64(sent), Data: buf[:n]}); err != nil {
			s.fail(fmt.Errorf("%w: write: %w", ErrSessionClosed, err))
			return fail(s.Err())
		}
		sent += n
	}
	if err := s.proto.WriteMsg(&blockproto.PutCommit{ID: id}); err != nil {
		s.fail(fmt.Errorf("%w: write: %w", ErrSessionClosed, err))
		return fail(s.Err())
	}
	done, err := wait(func() bool { return false })
	if err != nil {
		return abort(err)
	}
	return done.Volume, nil
}
