package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// ResumeOptions configure how a [Client] rides through a lost session.
type ResumeOptions struct {
	// Attempts is how many times one Read re-dials after its session ended
	// under it (default 10). 0 means the default; a negative value turns
	// resuming off.
	Attempts int
	// Backoff is the first wait before re-dialling (default 100ms); each
	// later wait doubles, up to MaxBackoff (default 5s). The read's
	// context bounds the whole.
	Backoff, MaxBackoff time.Duration
	// Restart makes a read whose volume was replaced on the server while
	// it was reconnecting start again from the beginning, instead of
	// failing with ErrVolumeReplaced. Bytes of two generations are never
	// mixed either way.
	Restart bool
}

// ErrVolumeReplaced: the volume has another generation on the server than
// the read expected (it was replaced since the read, or its caller, learnt
// it); the bytes already placed belong to the old one, and none of the new
// one's were placed.
var ErrVolumeReplaced = errors.New("volume replaced on the server since the read began")

// A Client reads from one server through a session it re-dials when the
// session ends under a read (the connection was lost, the server restarted
// or drained): a Read then re-issues only the bytes that did not land
// checked (extents whose bytes arrived and passed their CRC are kept), with
// bounded exponential back-off, until it completes, its context ends or its
// attempts run out. A Client made by [NewFailoverClient] reads a volume
// that several servers hold and fails over between them. A Client is safe
// for concurrent use.
type Client struct {
	holders []Holder
	cfg     Config
	opts    ResumeOptions

	mu   sync.Mutex
	cur  int // the holder dialled first
	sess *Session
	// lost says why the last session was let go of, until a new one is
	// dialled; reconnects lists the re-dials that succeeded.
	lost       string
	reconnects []Reconnect
	// closing follows the sessions the client let go of, which close in
	// the background once their announced payload has landed.
	closing sync.WaitGroup
	// stats holds the generation of each volume a Stat on the live
	// session found; it is emptied when the session is let go of, so a
	// new session checks again.
	stats map[string]uint64
}

// checked returns the generation of volume that a Stat on s found, or 0.
func (c *Client) checked(s *Session, volume string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != s {
		return 0
	}
	return c.stats[volume]
}

// check records the generation of volume a Stat on s found.
func (c *Client) check(s *Session, volume string, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != s {
		return
	}
	if c.stats == nil {
		c.stats = make(map[string]uint64)
	}
	c.stats[volume] = gen
}

// NewClient returns a Client for the blockd at addr. It dials the first
// session lazily, on the first Read or Session call.
func NewClient(addr string, cfg Config, opts ResumeOptions) *Client {
	return NewFailoverClient([]Holder{{Addr: addr}}, cfg, opts)
}

// Holder is a server that holds a copy of the volume a failover Client
// reads.
type Holder struct {
	Addr string
	// Generation is the generation of the copy there, as recorded when it
	// was written (0: learnt at the first Stat). A holder whose volume
	// has another generation holds other bytes: a read that meets it
	// fails with ErrVolumeReplaced.
	Generation uint64
}

// NewFailoverClient returns a Client for one volume that several servers
// hold, the same bytes under each one's own generation. It dials the
// holders in order and keeps to the first that answers; when it loses that
// one's session and cannot dial it again, it dials the next one at once, so
// a read resumes from another holder where the bytes stopped, and stays
// with it. Holders must not be empty.
func NewFailoverClient(holders []Holder, cfg Config, opts ResumeOptions) *Client {
	if opts.Attempts == 0 {
		opts.Attempts = 10
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	return &Client{holders: slices.Clone(holders), cfg: cfg, opts: opts}
}

// Session returns the client's live session, dialling one if there is none
// or the last one ended or is draining: the holder it last used first,
// then the others in order.
func (c *Client) Session(ctx context.Context) (*Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil && c.sess.Err() == nil && !c.sess.Draining() {
		return c.sess, nil
	}
	if old := c.sess; old != nil && c.opts.Attempts < 0 {
		// Resuming is off: a lost session stays lost.
		if err := old.Err(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("engine: %s: %w", old.addr, ErrDraining)
	}
	if old := c.sess; old != nil {
		c.lost = "the server is shutting down"
		if err := old.Err(); err != nil {
			c.lost = err.Error()
		}
		c.closing.Go(func() { old.Close() }) // lets announced payload land, then ends
		c.sess, c.stats = nil, nil
	}
	var errs []error
	for i := range c.holders {
		h := (c.cur + i) % len(c.holders)
		addr := c.holders[h].Addr
		s, err := Dial(ctx, addr, c.cfg)
		if err != nil {
			if ctx.Err() != nil || (errors.Is(err, ErrAuth) && len(c.holders) == 1) {
				return nil, err
			}
			errs = append(errs, err)
			continue
		}
		if c.lost != "" {
			c.reconnects = append(c.reconnects, Reconnect{At: time.Now(), Cause: c.lost, Addr: addr})
			c.logger().Info("reconnected", "server", addr, "after", c.lost)
			c.lost = ""
		}
		c.cur, c.sess = h, s
		return s, nil
	}
	return nil, &dialError{errors.Join(errs...)}
}

// Reconnect is a session a [Client] dialled again after it lost one.
type Reconnect struct {
	At time.Time
	// Cause says why the session it replaced ended.
	Cause string
	// Addr is the server dialled: another holder after a failover.
	Addr string
}

// Reconnects returns the sessions the client dialled again so far, oldest
// first.
func (c *Client) Reconnects() []Reconnect {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.reconnects)
}

// dialError is a failed dial of every holder: a server may be restarting,
// so a Read tries again (unless one refused the key). Its message is the
// dials'.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// logger returns the configured logger or one that discards.
func (c *Client) logger() *slog.Logger {
	if c.cfg.Logger != nil {
		return c.cfg.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Close closes the client's session and waits for the sessions it let go
// of to end.
func (c *Client) Close() error {
	c.mu.Lock()
	s := c.sess
	c.sess = nil
	c.mu.Unlock()
	var err error
	if s != nil {
		err = s.Close()
	}
	c.closing.Wait()
	return err
}

// piece is part of one of a Read's ranges still to fetch.
type piece struct {
	rng    int   // index of the range
	off, n int64 // volume bytes
	dstOff int64
}

// ReadOptions are the optional parts of a [Client.Read]; the zero value
// asks for none.
type ReadOptions struct {
	// Generation is the generation of the volume the caller expects, as
	// a Stat told it (0: whichever the first Stat of the read finds). A
	// Client checks the generation once per session and volume, and again
	// on every new session: a read that finds another one fails with
	// ErrVolumeReplaced (or starts over, under ResumeOptions.Restart), so
	// the bytes of two generations are never mixed, whether they would
	// come within one read or across the reads of one caller. A failover
	// Client's recorded Holder generations take precedence.
	Generation uint64
	// OnExtent is [Request.OnExtent] for every extent of the read. An
	// extent that landed before a session was lost was reported then and
	// is not read again; an extent read again is reported again.
	OnExtent func(ExtentTiming) error
	// DstOffset is where in dst the first range is placed (the others
	// follow it), for a destination that is a window of a larger buffer
	// that cannot be viewed as a buffer of its own, such as imported
	// device memory. It must not be negative.
	DstOffset int64
}

// Read fetches ranges of volume into dst, placed one after another from
// opts.DstOffset (0 when opts is nil), as [Session.Read] does, re-dialling and resuming as the Client
// is configured. Each result counts the reconnects it needed; when it gives
// up, the error names every attempt and its cause. opts may be nil.
func (c *Client) Read(ctx context.Context, volume string, ranges []Range, dst memory.Buffer, opts *ReadOptions) ([]Result, error) {
	if opts == nil {
		opts = &ReadOptions{}
	}
	if opts.DstOffset < 0 {
		return nil, fmt.Errorf("engine: read %s: destination offset %d is negative", volume, opts.DstOffset)
	}
	res := make([]Result, len(ranges))
	var todo []piece
	off := opts.DstOffset
	for i, rg := range ranges {
		todo = append(todo, piece{rng: i, off: rg.Offset, n: rg.Length, dstOff: off})
		res[i] = Result{Volume: volume, Offset: rg.Offset, Length: rg.Length, Start: time.Now()}
		off += rg.Length
	}
	all := slices.Clone(todo)
	// gens holds the generation this read expects on each holder: as
	// recorded, else as the caller gave it, else as first seen.
	gens := make(map[string]uint64, len(c.holders))
	for _, h := range c.holders {
		gens[h.Addr] = cmp.Or(h.Generation, opts.Generation)
	}
	var (
		attempts []string
		wait     = c.opts.Backoff
		last     *Session // the session of the last attempt that had one
	)
	for attempt := 0; ; attempt++ {
		s, err := c.Session(ctx)
		var (
			want uint64
			now  uint64 // the volume's generation on s
		)
		if err == nil {
			if last != nil && s != last {
				for i := range res {
					res[i].Reconnects++
				}
			}
			last = s
			want = gens[s.addr]
			// One Stat per session and volume: a read on a session
			// whose Stat is known needs none.
			if now = c.checked(s, volume); now == 0 {
				var vs blockproto.VolumeStat
				if vs, err = s.Stat(ctx, volume); err == nil {
					now = vs.Generation
					c.check(s, volume, now)
				}
			}
		}
		switch {
		case err != nil:
		case want == 0:
			gens[s.addr] = now
		case now != want && c.opts.Restart:
			gens[s.addr], todo = now, slices.Clone(all)
			for i := range res {
				res[i].Bytes, res[i].Extents, res[i].VerifiedExtents, res[i].UnverifiedExtents = 0, nil, 0, 0
			}
		case now != want:
			return res, fmt.Errorf("engine: read %s from %s: generation %d, now %d: %w", volume, s.addr, want, now, ErrVolumeReplaced)
		}
		if err == nil {
			todo, err = c.fetch(ctx, s, volume, gens[s.addr], todo, dst, opts.OnExtent, res)
			if err == nil {
				break
			}
		}
		if !resumable(err) || c.opts.Attempts < 0 || attempt >= c.opts.Attempts || ctx.Err() != nil {
			if len(attempts) > 0 {
				err = fmt.Errorf("%w (after %d attempts to reconnect: %s)", err, len(attempts), strings.Join(attempts, "; "))
			}
			return res, err
		}
		attempts = append(attempts, fmt.Sprintf("%d: %v", attempt+1, err))
		c.logger().Info("session lost under a read: reconnecting", "volume", volume,
			"attempt", attempt+1, "in", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return res, fmt.Errorf("engine: read %s: %w (after %d attempts to reconnect: %s)", volume, ctx.Err(), len(attempts), strings.Join(attempts, "; "))
		}
		wait = min(2*wait, c.opts.MaxBackoff)
	}
	var first error
	for i := range res {
		res[i].End = time.Now()
		res[i].State = StateDone
		if res[i].Err != nil && first == nil {
			first = res[i].Err
		}
	}
	return res, first
}

// fetch submits the pieces on s and waits for them. It merges what landed
// into res and returns the pieces still missing, with the error that ended
// the session; any other error fails the read.
func (c *Client) fetch(ctx context.Context, s *Session, volume string, gen uint64, todo []piece, dst memory.Buffer,
	onExtent func(ExtentTiming) error, res []Result) ([]piece, error) {
	reqs := make([]Request, len(todo))
	for i, p := range todo {
		reqs[i] = Request{Volume: volume, Offset: p.off, Length: p.n, Dst: dst, DstOff: p.dstOff, OnExtent: onExtent, Generation: gen}
	}
	hs := s.Submit(ctx, reqs)
	var (
		left    []piece
		session error
	)
	for i, h := range hs {
		r := h.Result()
		p := todo[i]
		out := &res[p.rng]
		out.addPath(&r)
		if r.Err == nil {
			out.Bytes += r.Bytes
			out.Extents = append(out.Extents, r.Extents...)
			out.VerifiedExtents += r.VerifiedExtents
			out.UnverifiedExtents += r.UnverifiedExtents
			out.LinearBytes, out.LinearFrags = out.LinearBytes+r.LinearBytes, out.LinearFrags+r.LinearFrags
			continue
		}
		if !resumable(r.Err) {
			out.Err, out.Error, out.State = r.Err, r.Err.Error(), r.State
			// The other pieces may still be writing into dst: end them
			// and wait, so that dst is the caller's again on return.
			for _, rest := range hs[i+1:] {
				rest.Cancel()
				<-rest.Done()
			}
			return nil, r.Err
		}
		session = r.Err
		// Keep the extents that landed checked; fetch the rest again.
		var kept []ExtentTiming
		for _, e := range r.Extents {
			if e.Verified {
				kept = append(kept, e)
				out.Bytes += e.Length
				out.VerifiedExtents++
			}
		}
		out.Extents = append(out.Extents, kept...)
		left = append(left, missing(p, kept)...)
	}
	return left, session
}

// missing returns the parts of p that the kept extents do not cover.
func missing(p piece, kept []ExtentTiming) []piece {
	slices.SortFunc(kept, func(a, b ExtentTiming) int { return int(a.VolumeOffset - b.VolumeOffset) })
	var out []piece
	at := p.off
	add := func(from, to int64) {
		if to > from {
			out = append(out, piece{rng: p.rng, off: from, n: to - from, dstOff: p.dstOff + (from - p.off)})
		}
	}
	for _, e := range kept {
		add(at, e.VolumeOffset)
		at = max(at, e.VolumeOffset+e.Length)
	}
	add(at, p.off+p.n)
	return out
}

// resumable says whether err ended the session rather than the read: the
// connection was lost, the server drained or refused the session while
// restarting.
func resumable(err error) bool {
	var de *dialError
	return errors.Is(err, ErrSessionClosed) || errors.Is(err, ErrDraining) || (errors.As(err, &de) && !errors.Is(err, ErrAuth))
}
