package ec

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// Dialer opens a session to one server of a striped volume. Sessions given
// to a Reader must use the Reader's provider.
type Dialer func(ctx context.Context, s ManifestServer) (*engine.Session, error)

// Reasons a shard could not be used, as reported in ShardFault.Reason and
// the degraded-read metrics.
const (
	ReasonDown     = "down"     // the server could not be reached, or its session ended
	ReasonTimeout  = "timeout"  // the shard missed ReaderConfig.ShardTimeout
	ReasonChecksum = "checksum" // the shard's bytes do not match its CRC-32C
	ReasonStale    = "stale"    // the server's shard volume is not the one in the manifest
	ReasonError    = "error"    // the server refused the read (not-found, io, ...)
)

// ShardFault says why one shard of a stripe was not used.
type ShardFault struct {
	Stripe int64  `json:"stripe"`
	Shard  int    `json:"shard"`
	Server string `json:"server"` // manifest server id
	Addr   string `json:"addr"`
	Reason string `json:"reason"`
	Err    string `json:"error"`
}

// String describes the fault, such as
// "shard 2 on s3 (10.0.0.3:7070): checksum: ...".
func (f ShardFault) String() string {
	return fmt.Sprintf("shard %d on %s (%s): %s: %s", f.Shard, f.Server, f.Addr, f.Reason, f.Err)
}

// DegradedStripe records a stripe read by reconstruction.
type DegradedStripe struct {
	Stripe int64 `json:"stripe"`
	// Missing are the data shards the read needed but could not fetch,
	// and any shard that failed while gathering the stripe.
	Missing []ShardFault `json:"missing"`
	// Used are the shards the reconstruction was computed from.
	Used []int `json:"used"`
}

// ReadResult is the outcome of one Reader.Read.
type ReadResult struct {
	Volume   string           `json:"volume"`
	Offset   int64            `json:"offset"`
	Length   int64            `json:"length"`
	Stripes  int64            `json:"stripes"`
	Degraded []DegradedStripe `json:"degraded,omitempty"`
}

// ErrUnavailable is wrapped by a *StripeError: a stripe has fewer than K
// usable shards.
var ErrUnavailable = errors.New("too many shards unavailable")

// StripeError reports a stripe that cannot be read: more than M of its
// shards are unavailable. It names every missing shard and its server.
type StripeError struct {
	Volume  string
	Stripe  int64
	K, M    int
	Missing []ShardFault
}

// Error says which stripe failed and lists the missing shards.
func (e *StripeError) Error() string {
	parts := make([]string, len(e.Missing))
	for i, f := range e.Missing {
		parts[i] = f.String()
	}
	return fmt.Sprintf("ec: read %s: stripe %d: %d of its %d shards unavailable, at most %d may be: %s",
		e.Volume, e.Stripe, len(e.Missing), e.K+e.M, e.M, strings.Join(parts, "; "))
}

// Unwrap returns ErrUnavailable.
func (e *StripeError) Unwrap() error { return ErrUnavailable }

// ReaderConfig configures a Reader.
type ReaderConfig struct {
	// Dial opens sessions to the servers (with Provider). Required.
	Dial Dialer
	// Provider is the destination memory's provider. Required.
	Provider memory.Provider
	// ShardTimeout bounds each shard fetch; a shard that misses it is
	// reconstructed. 0 means only ctx bounds the read.
	ShardTimeout time.Duration
	// RetryFirst is how long a server that failed (down, timed out) is
	// left alone before the Reader dials it again, the first time (default
	// 1s). Each further failure in a row doubles the wait, up to
	// RetryAfter; a server that answers again starts over, so one that
	// restarted is back in use within seconds and one that stays down
	// costs a dial only now and then.
	RetryFirst time.Duration
	// RetryAfter is the longest a failed server is left alone (default
	// 30s).
	RetryAfter time.Duration
	// Parallel is how many stripes are read at once (default 8).
	Parallel int
	// Metrics, if set, counts stripes, degraded reads and reconstructions.
	Metrics *Metrics
	// Logger receives a line per degraded stripe (default: discard).
	Logger *slog.Logger
}

// Reader reads a striped volume. It is safe for concurrent use; Close it to
// close its sessions.
type Reader struct {
	m     *Manifest
	l     Layout
	cfg   ReaderConfig
	codec *Codec
	srv   []*serverState
}

type serverState struct {
	mu        sync.Mutex
	sess      *engine.Session
	down      *ShardFault // why the server is not used, until downUntil
	downUntil time.Time
	failures  int // failures in a row, for the back-off
}

// markDown takes the server out of use for f, for a back-off that doubles
// with each failure in a row. The caller holds st.mu.
func (st *serverState) markDown(cfg *ReaderConfig, f ShardFault) {
	wait := cfg.RetryAfter
	if st.failures < 30 {
		wait = min(cfg.RetryFirst<<st.failures, cfg.RetryAfter)
	}
	st.failures++
	st.down, st.downUntil = &f, time.Now().Add(wait)
}

// NewReader returns a Reader of the striped volume m. It dials servers
// lazily, on first use.
func NewReader(m *Manifest, cfg ReaderConfig) (*Reader, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if cfg.Dial == nil || cfg.Provider == nil {
		return nil, errors.New("ec: reader config: Dial and Provider are required")
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = 30 * time.Second
	}
	if cfg.RetryFirst == 0 {
		cfg.RetryFirst = min(time.Second, cfg.RetryAfter)
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 8
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	codec, err := NewCodec(m.K, m.M)
	if err != nil {
		return nil, err
	}
	r := &Reader{m: m, l: m.Layout(), cfg: cfg, codec: codec, srv: make([]*serverState, len(m.Servers))}
	for i := range r.srv {
		r.srv[i] = &serverState{}
	}
	return r, nil
}

// Manifest returns the manifest the Reader reads.
func (r *Reader) Manifest() *Manifest { return r.m }

// Close closes every session the Reader opened.
func (r *Reader) Close() error {
	for _, st := range r.srv {
		st.mu.Lock()
		if st.sess != nil {
			st.sess.Close()
			st.sess = nil
		}
		st.mu.Unlock()
	}
	return nil
}

// fault builds a ShardFault for shard j of stripe i on server s.
func (r *Reader) fault(stripe int64, shard, s int, reason string, err error) ShardFault {
	return ShardFault{Stripe: stripe, Shard: shard, Server: r.m.Servers[s].ID, Addr: r.m.Servers[s].Addr,
		Reason: reason, Err: err.Error()}
}

// session returns a live session to server s, dialing it if needed. It
// fails with the server's fault if the server is known to be down, or
// cannot be dialed, or holds a shard volume other than the manifest's.
func (r *Reader) session(ctx context.Context, s int) (*engine.Session, *ShardFault) {
	st := r.srv[s]
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.down != nil && time.Now().Before(st.downUntil) {
		return nil, st.down
	}
	st.down = nil
	if st.sess != nil {
		if err := st.sess.Err(); err == nil {
			return st.sess, nil
		}
		st.sess.Close()
		st.sess = nil
	}
	markDown := func(reason string, err error) (*engine.Session, *ShardFault) {
		f := r.fault(-1, -1, s, reason, err)
		if ctx.Err() == nil {
			st.markDown(&r.cfg, f)
		}
		return nil, &f
	}
	sess, err := r.cfg.Dial(ctx, r.m.Servers[s])
	if err != nil {
		return markDown(ReasonDown, err)
	}
	stat, err := sess.Stat(ctx, r.m.ShardVolume())
	want := r.m.Servers[s]
	switch {
	case err != nil && sess.Err() != nil:
		sess.Close()
		return markDown(ReasonDown, err)
	case err != nil:
		sess.Close()
		return markDown(ReasonError, err)
	case int64(stat.Size) != r.l.Held(s)*r.l.Unit || int64(stat.ExtentSize) != r.l.Unit:
		sess.Close()
		return markDown(ReasonStale, fmt.Errorf("shard volume %s is %d bytes in extents of %d, the manifest needs %d in extents of %d",
			stat.Name, stat.Size, stat.ExtentSize, r.l.Held(s)*r.l.Unit, r.l.Unit))
	case want.Generation != 0 && stat.Generation != want.Generation:
		sess.Close()
		return markDown(ReasonStale, fmt.Errorf("shard volume %s has generation %d, the manifest names %d",
			stat.Name, stat.Generation, want.Generation))
	}
	st.sess, st.failures = sess, 0
	return sess, nil
}

// failed records a failed shard fetch and returns its fault. A session
// that ended, or a deadline missed, takes the server out of use for a
// while.
func (r *Reader) failed(stripe int64, shard, s int, res engine.Result, timedOut bool) ShardFault {
	err := res.Err
	reason := ReasonError
	switch {
	case timedOut || res.State == engine.StateTimedOut:
		reason = ReasonTimeout
		err = fmt.Errorf("no answer within %s: %w", r.cfg.ShardTimeout, err)
	case errors.Is(err, engine.ErrChecksum):
		reason = ReasonChecksum
	case errors.Is(err, engine.ErrSessionClosed) || errors.Is(err, engine.ErrDraining):
		reason = ReasonDown
	}
	f := r.fault(stripe, shard, s, reason, err)
	if reason == ReasonDown || reason == ReasonTimeout {
		st := r.srv[s]
		st.mu.Lock()
		if st.down == nil {
			st.markDown(&r.cfg, r.fault(-1, -1, s, reason, err))
		} else if reason == ReasonDown {
			// The session ended because the server was already
			// taken out of use (a deadline missed on another
			// shard): report that cause.
			f.Reason, f.Err = st.down.Reason, st.down.Err
		}
		st.mu.Unlock()
	}
	return f
}

// checkManifest checks a shard fetched whole against the manifest: the
// server announced the CRC it stored for the shard, and the engine checked
// the bytes against it, so that CRC must be the manifest's. A server whose
// catalog was rebuilt from damaged disks would otherwise pass its damage
// off as good. Spans shorter than a unit (the end of the volume) are
// checked by the server's stored CRCs alone.
func (r *Reader) checkManifest(i int64, sp span, res engine.Result) *ShardFault {
	if !sp.whole || sp.dataLen != r.l.Unit || len(res.Extents) != 1 {
		return nil
	}
	if got, want := res.Extents[0].CRC32C, r.m.ShardCRC(i, sp.shard); got != want {
		f := r.fault(i, sp.shard, sp.server, ReasonChecksum,
			fmt.Errorf("the server's stored crc32c %08x is not the manifest's %08x", got, want))
		return &f
	}
	return nil
}

// await waits for a shard fetch submitted on server s's session sess with
// context sctx. If sctx ends first, the request is aborting; a receive stuck
// on a server that stopped sending would hold it until the engine's stall
// timeout, so the session is closed to free it (the next use dials again).
// timedOut reports that the shard deadline, not the caller, ended it.
func (r *Reader) await(ctx, sctx context.Context, s int, sess *engine.Session, h *engine.Handle) (res engine.Result, timedOut bool) {
	select {
	case <-h.Done():
	case <-sctx.Done():
		select {
		case <-h.Done():
		default:
			st := r.srv[s]
			st.mu.Lock()
			if st.sess == sess {
				st.sess = nil
			}
			if st.down == nil && ctx.Err() == nil {
				st.markDown(&r.cfg, r.fault(-1, -1, s, ReasonTimeout, fmt.Errorf("no answer within %s", r.cfg.ShardTimeout)))
			}
			st.mu.Unlock()
			sess.Close()
			<-h.Done()
		}
	}
	res = h.Result()
	return res, res.Err != nil && ctx.Err() == nil && errors.Is(sctx.Err(), context.DeadlineExceeded)
}

// shardCtx bounds one shard fetch by ShardTimeout.
func (r *Reader) shardCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if r.cfg.ShardTimeout > 0 {
		return context.WithTimeout(ctx, r.cfg.ShardTimeout)
	}
	return context.WithCancel(ctx)
}

// Read places volume bytes [off, off+n) into dst at dstOff. Healthy stripes
// move their data shards straight from the servers into dst; a stripe with
// a data shard that cannot be fetched is reconstructed from parity in host
// memory and the missing bytes are copied in. The result lists the degraded
// stripes. If a stripe has more than M shards unavailable, Read fails with a
// *StripeError; if ctx ends, with ctx's error. Either way, when Read returns
// nothing writes into dst any more.
func (r *Reader) Read(ctx context.Context, off, n int64, dst memory.Buffer, dstOff int64) (*ReadResult, error) {
	res := &ReadResult{Volume: r.m.Name, Offset: off, Length: n}
	switch {
	case off < 0 || n < 1 || off > r.m.Size-n:
		return res, fmt.Errorf("ec: read %s: range [%d,+%d) outside the volume's %d bytes", r.m.Name, off, n, r.m.Size)
	case dstOff < 0 || dstOff > dst.Size-n:
		return res, fmt.Errorf("ec: read %s: %d bytes at %d do not fit a %d-byte buffer: %w", r.m.Name, n, dstOff, dst.Size, memory.ErrOutOfBounds)
	}
	sb := r.l.StripeBytes()
	first, last := off/sb, (off+n-1)/sb
	res.Stripes = last - first + 1
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Parallel)
	for i := first; i <= last; i++ {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			d, err := r.readStripe(gctx, i, off, n, dst, dstOff)
			if d != nil && err == nil {
				mu.Lock()
				res.Degraded = append(res.Degraded, *d)
				mu.Unlock()
			}
			return err
		})
	}
	err := g.Wait()
	if err == nil {
		err = ctx.Err()
	}
	sortDegraded(res.Degraded)
	r.cfg.Metrics.read(res, err)
	if err != nil {
		var se *StripeError
		if !errors.As(err, &se) && ctx.Err() != nil {
			err = fmt.Errorf("ec: read %s [%d,+%d): %w", r.m.Name, off, n, ctx.Err())
		}
		return res, err
	}
	return res, nil
}

func sortDegraded(d []DegradedStripe) {
	for i := 1; i < len(d); i++ {
		for j := i; j > 0 && d[j].Stripe < d[j-1].Stripe; j-- {
			d[j], d[j-1] = d[j-1], d[j]
		}
	}
}

// span is the part of data shard j of a stripe that a read wants: volume
// bytes [lo, hi) of the shard that starts at start.
type span struct {
	shard      int
	start      int64 // volume offset of the shard's first byte
	lo, hi     int64
	whole      bool // the read covers every data byte of the shard
	dataLen    int64
	server     int
	localIndex int64
}

// readStripe reads the wanted part of stripe i. It returns the stripe's
// degraded record if it had to reconstruct.
func (r *Reader) readStripe(ctx context.Context, i, off, n int64, dst memory.Buffer, dstOff int64) (*DegradedStripe, error) {
	type fetch struct {
		sp     span
		sess   *engine.Session
		sctx   context.Context
		h      *engine.Handle
		cancel context.CancelFunc
	}
	var fetches []fetch
	var missing []ShardFault
	var spans []span
	for j := range r.m.K {
		start, dlen := r.l.DataRange(i, j)
		lo, hi := max(off, start), min(off+n, start+dlen)
		if lo >= hi {
			continue
		}
		sp := span{shard: j, start: start, lo: lo, hi: hi, whole: lo == start && hi == start+dlen, dataLen: dlen,
			server: r.l.Server(i, j), localIndex: r.l.LocalIndex(i, j)}
		spans = append(spans, sp)
		sess, f := r.session(ctx, sp.server)
		if f != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			g := *f
			g.Stripe, g.Shard = i, j
			missing = append(missing, g)
			continue
		}
		sctx, cancel := r.shardCtx(ctx)
		h := sess.Submit(sctx, []engine.Request{{
			Volume: r.m.ShardVolume(),
			Offset: sp.localIndex*r.l.Unit + (lo - start),
			Length: hi - lo,
			Dst:    dst,
			DstOff: dstOff + (lo - off),
		}})[0]
		fetches = append(fetches, fetch{sp, sess, sctx, h, cancel})
	}
	for _, f := range fetches {
		res, timedOut := r.await(ctx, f.sctx, f.sp.server, f.sess, f.h)
		f.cancel()
		if res.Err == nil {
			if fault := r.checkManifest(i, f.sp, res); fault != nil {
				missing = append(missing, *fault)
			}
			continue
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		missing = append(missing, r.failed(i, f.sp.shard, f.sp.server, res, timedOut))
	}
	if len(missing) == 0 {
		return nil, nil
	}
	return r.degraded(ctx, i, spans, missing, off, dst, dstOff)
}

// degraded reconstructs the missing data shards of stripe i from K good
// shards and copies the wanted bytes of each into dst.
func (r *Reader) degraded(ctx context.Context, i int64, spans []span, missing []ShardFault, off int64,
	dst memory.Buffer, dstOff int64) (*DegradedStripe, error) {
	d := &DegradedStripe{Stripe: i, Missing: missing}
	bad := map[int]bool{}
	for _, f := range missing {
		bad[f.Shard] = true
	}
	// Data shards the read already placed whole in dst are read back from
	// there instead of fetched again.
	have := make([][]byte, r.l.Shards())
	for _, sp := range spans {
		if bad[sp.shard] || !sp.whole {
			continue
		}
		b := make([]byte, r.l.Unit)
		if err := r.cfg.Provider.ReadBack(ctx, dst.ID, dstOff+(sp.lo-off), b[:sp.dataLen]); err != nil {
			return d, fmt.Errorf("ec: read %s: stripe %d: read back shard %d: %w", r.m.Name, i, sp.shard, err)
		}
		if crc32.Checksum(b, castagnoli) != r.m.ShardCRC(i, sp.shard) {
			// The server's checksum matched but the manifest's does
			// not: the shard is not the one the manifest names.
			d.Missing = append(d.Missing, r.fault(i, sp.shard, sp.server, ReasonChecksum,
				errors.New("shard matches its server's checksum but not the manifest's")))
			bad[sp.shard] = true
			continue
		}
		have[sp.shard] = b
	}
	shards, faults, err := r.gather(ctx, i, have, bad, d.Missing)
	d.Missing = append(d.Missing, faults...)
	if err != nil {
		return d, err
	}
	for j, b := range shards {
		if b != nil && (j >= r.m.K || !bad[j]) {
			d.Used = append(d.Used, j)
		}
	}
	if err := r.codec.ReconstructData(shards); err != nil {
		return d, fmt.Errorf("ec: read %s: stripe %d: reconstruct: %w", r.m.Name, i, err)
	}
	for _, sp := range spans {
		if !bad[sp.shard] {
			continue
		}
		if got := crc32.Checksum(shards[sp.shard], castagnoli); got != r.m.ShardCRC(i, sp.shard) {
			return d, fmt.Errorf("ec: read %s: stripe %d: reconstructed shard %d has crc32c %08x, the manifest says %08x",
				r.m.Name, i, sp.shard, got, r.m.ShardCRC(i, sp.shard))
		}
		rel := sp.lo - sp.start
		if err := r.cfg.Provider.CopyIn(ctx, dst.ID, dstOff+(sp.lo-off), shards[sp.shard][rel:rel+sp.hi-sp.lo]); err != nil {
			return d, fmt.Errorf("ec: read %s: stripe %d: copy reconstructed shard %d in: %w", r.m.Name, i, sp.shard, err)
		}
		r.cfg.Metrics.reconstructed(sp.hi - sp.lo)
	}
	reasons := make([]string, len(d.Missing))
	for k, f := range d.Missing {
		reasons[k] = f.String()
	}
	r.cfg.Logger.Warn("degraded read", "volume", r.m.Name, "stripe", i, "missing", strings.Join(reasons, "; "), "used", d.Used)
	return d, nil
}

// gather completes have (shards already in host memory, indexed by shard)
// to K shards verified against the manifest, fetching from the servers of
// the stripe's other shards, data shards first. Shards in bad are not
// fetched. It returns the shards (nil where absent) and the faults met on
// the way, or a *StripeError naming every missing shard (with the faults in
// known) when fewer than K shards can be had.
func (r *Reader) gather(ctx context.Context, i int64, have [][]byte, bad map[int]bool, known []ShardFault) ([][]byte, []ShardFault, error) {
	var faults []ShardFault
	count := 0
	for _, b := range have {
		if b != nil {
			count++
		}
	}
	next := 0 // next shard to consider
	for count < r.m.K {
		var batch []int
		for ; next < r.l.Shards() && len(batch) < r.m.K-count; next++ {
			if have[next] == nil && !bad[next] {
				batch = append(batch, next)
			}
		}
		if len(batch) == 0 {
			all := append(append([]ShardFault(nil), known...), faults...)
			return nil, faults, &StripeError{Volume: r.m.Name, Stripe: i, K: r.m.K, M: r.m.M, Missing: r.missingOf(i, bad, all)}
		}
		got, fs := r.fetchShards(ctx, i, batch)
		if ctx.Err() != nil {
			return nil, faults, ctx.Err()
		}
		for k, j := range batch {
			if got[k] != nil {
				have[j] = got[k]
				count++
			} else {
				bad[j] = true
			}
		}
		faults = append(faults, fs...)
	}
	return have, faults, nil
}

// missingOf lists a fault for every bad shard of stripe i, taking the
// recorded fault where there is one.
func (r *Reader) missingOf(i int64, bad map[int]bool, known []ShardFault) []ShardFault {
	var out []ShardFault
	for j := range r.l.Shards() {
		if !bad[j] {
			continue
		}
		found := false
		for _, f := range known {
			if f.Shard == j {
				out = append(out, f)
				found = true
				break
			}
		}
		if !found {
			out = append(out, r.fault(i, j, r.l.Server(i, j), ReasonError, errors.New("not fetched")))
		}
	}
	return out
}

// fetchShards fetches whole shards of stripe i into host memory, in
// parallel, through a scratch buffer of the provider, and checks each
// against the manifest. A shard that fails is nil in the result, with a
// fault.
func (r *Reader) fetchShards(ctx context.Context, i int64, shards []int) ([][]byte, []ShardFault) {
	out := make([][]byte, len(shards))
	faults := make([]*ShardFault, len(shards))
	u := r.l.Unit
	buf, err := r.cfg.Provider.Alloc(ctx, u*int64(len(shards)), false)
	if err != nil {
		var fs []ShardFault
		for _, j := range shards {
			fs = append(fs, r.fault(i, j, r.l.Server(i, j), ReasonError, fmt.Errorf("allocate scratch: %w", err)))
		}
		return out, fs
	}
	defer r.cfg.Provider.Free(context.WithoutCancel(ctx), buf.ID)
	type pending struct {
		k      int
		sess   *engine.Session
		sctx   context.Context
		h      *engine.Handle
		cancel context.CancelFunc
	}
	var ps []pending
	for k, j := range shards {
		s := r.l.Server(i, j)
		sess, f := r.session(ctx, s)
		if f != nil {
			g := *f
			g.Stripe, g.Shard = i, j
			faults[k] = &g
			continue
		}
		sctx, cancel := r.shardCtx(ctx)
		h := sess.Submit(sctx, []engine.Request{{Volume: r.m.ShardVolume(), Offset: r.l.LocalIndex(i, j) * u,
			Length: u, Dst: buf, DstOff: int64(k) * u}})[0]
		ps = append(ps, pending{k, sess, sctx, h, cancel})
	}
	for _, p := range ps {
		res, timedOut := r.await(ctx, p.sctx, r.l.Server(i, shards[p.k]), p.sess, p.h)
		p.cancel()
		j := shards[p.k]
		if res.Err != nil {
			f := r.failed(i, j, r.l.Server(i, j), res, timedOut)
			faults[p.k] = &f
			continue
		}
		b := make([]byte, u)
		if err := r.cfg.Provider.ReadBack(ctx, buf.ID, int64(p.k)*u, b); err != nil {
			f := r.fault(i, j, r.l.Server(i, j), ReasonError, fmt.Errorf("read back: %w", err))
			faults[p.k] = &f
			continue
		}
		if got, want := crc32.Checksum(b, castagnoli), r.m.ShardCRC(i, j); got != want {
			f := r.fault(i, j, r.l.Server(i, j), ReasonChecksum, fmt.Errorf("crc32c %08x, the manifest says %08x", got, want))
			faults[p.k] = &f
			continue
		}
		out[p.k] = b
	}
	var fs []ShardFault
	for _, f := range faults {
		if f != nil {
			fs = append(fs, *f)
		}
	}
	return out, fs
}
