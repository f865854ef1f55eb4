package engine

import (
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

// ErrVolumeReplaced: the volume changed generation on the server while a
// read of it was reconnecting; the bytes already placed belong to the old
// one.
var ErrVolumeReplaced = errors.New("volume replaced on the server while the read was reconnecting")

// A Client reads from one server through a session it re-dials when the
// session ends under a read (the connection was lost, the server restarted
// or drained): a Read then re-issues only the bytes that did not land
// checked (extents whose bytes arrived and passed their CRC are kept), with
// bounded exponential back-off, until it completes, its context ends or its
// attempts run out. A Client is safe for concurrent use.
type Client struct {
	addr string
	cfg  Config
	opts ResumeOptions

	mu   sync.Mutex
	sess *Session
}

// NewClient returns a Client for the blockd at addr. It dials the first
// session lazily, on the first Read or Session call.
func NewClient(addr string, cfg Config, opts ResumeOptions) *Client {
	if opts.Attempts == 0 {
		opts.Attempts = 10
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	return &Client{addr: addr, cfg: cfg, opts: opts}
}

// Session returns the client's live session, dialling one if there is none
// or the last one ended or is draining.
func (c *Client) Session(ctx context.Context) (*Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil && c.sess.Err() == nil && !c.sess.Draining() {
		return c.sess, nil
	}
	if c.sess != nil {
		go c.sess.Close() // lets announced payload land, then ends
		c.sess = nil
	}
	s, err := Dial(ctx, c.addr, c.cfg)
	if err != nil {
		if errors.Is(err, ErrAuth) || ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", errDial, err)
	}
	c.sess = s
	return s, nil
}

// errDial marks a failed dial other than a refused key: the server may be
// restarting, so a Read tries again.
var errDial = errors.New("dial")

// logger returns the configured logger or one that discards.
func (c *Client) logger() *slog.Logger {
	if c.cfg.Logger != nil {
		return c.cfg.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Close closes the client's session.
func (c *Client) Close() error {
	c.mu.Lock()
	s := c.sess
	c.sess = nil
	c.mu.Unlock()
	if s == nil {
		return nil
	}
	return s.Close()
}

// piece is part of one of a Read's ranges still to fetch.
type piece struct {
	rng    int   // index of the range
	off, n int64 // volume bytes
	dstOff int64
}

// Read fetches ranges of volume into dst, placed one after another from
// offset 0, as [Session.Read] does, re-dialling and resuming as the Client
// is configured. Each result counts the reconnects it needed; when it gives
// up, the error names every attempt and its cause.
func (c *Client) Read(ctx context.Context, volume string, ranges []Range, dst memory.Buffer) ([]Result, error) {
	res := make([]Result, len(ranges))
	var todo []piece
	var off int64
	for i, rg := range ranges {
		todo = append(todo, piece{rng: i, off: rg.Offset, n: rg.Length, dstOff: off})
		res[i] = Result{Volume: volume, Offset: rg.Offset, Length: rg.Length, Start: time.Now()}
		off += rg.Length
	}
	all := slices.Clone(todo)
	var (
		gen      uint64
		attempts []string
		wait     = c.opts.Backoff
	)
	for attempt := 0; ; attempt++ {
		s, err := c.Session(ctx)
		if err == nil {
			var vs blockproto.VolumeStat
			vs, err = s.Stat(ctx, volume)
			switch {
			case err != nil:
			case gen == 0:
				gen = vs.Generation
			case vs.Generation != gen && c.opts.Restart:
				gen, todo = vs.Generation, slices.Clone(all)
				for i := range res {
					res[i].Bytes, res[i].Extents, res[i].VerifiedExtents, res[i].UnverifiedExtents = 0, nil, 0, 0
				}
			case vs.Generation != gen:
				return res, fmt.Errorf("engine: read %s: generation %d, now %d: %w", volume, gen, vs.Generation, ErrVolumeReplaced)
			}
		}
		if err == nil {
			todo, err = c.fetch(ctx, s, volume, todo, dst, res)
			if err == nil {
				break
			}
		}
		if !resumable(err) || c.opts.Attempts < 0 || attempt >= c.opts.Attempts || ctx.Err() != nil {
			if len(attempts) > 0 {
				err = fmt.Errorf("%w (after %d reconnects: %s)", err, len(attempts), strings.Join(attempts, "; "))
			}
			return res, err
		}
		attempts = append(attempts, fmt.Sprintf("%d: %v", attempt+1, err))
		c.logger().Info("session lost under a read: reconnecting", "server", c.addr, "volume", volume,
			"attempt", attempt+1, "in", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return res, fmt.Errorf("engine: read %s: %w (after %d reconnects: %s)", volume, ctx.Err(), len(attempts), strings.Join(attempts, "; "))
		}
		wait = min(2*wait, c.opts.MaxBackoff)
		for i := range res {
			res[i].Reconnects = len(attempts)
		}
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
func (c *Client) fetch(ctx context.Context, s *Session, volume string, todo []piece, dst memory.Buffer, res []Result) ([]piece, error) {
	reqs := make([]Request, len(todo))
	for i, p := range todo {
		reqs[i] = Request{Volume: volume, Offset: p.off, Length: p.n, Dst: dst, DstOff: p.dstOff}
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
		out.Transport, out.FallbackReason, out.ServerSend = r.Transport, r.FallbackReason, r.ServerSend
		if r.Err == nil {
			out.Bytes += r.Bytes
			out.Extents = append(out.Extents, r.Extents...)
			out.VerifiedExtents += r.VerifiedExtents
			out.UnverifiedExtents += r.UnverifiedExtents
			continue
		}
		if !resumable(r.Err) {
			out.Err, out.Error, out.State = r.Err, r.Err.Error(), r.State
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
	return errors.Is(err, ErrSessionClosed) || errors.Is(err, ErrDraining) || errors.Is(err, errDial)
}
