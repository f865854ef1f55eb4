package ec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// ScrubConfig configures Scrub.
type ScrubConfig struct {
	// Dial opens sessions (with Provider). Required.
	Dial Dialer
	// Provider receives the shards checked; a host-memory provider is the
	// natural choice. Required.
	Provider memory.Provider
	// Spares are servers that may take the place of a server that cannot
	// be reached. A spare already among the volume's servers is skipped.
	Spares []ManifestServer
	// Logger receives a line per bad shard and per repair (default:
	// discard).
	Logger *slog.Logger
	// Progress, if set, is called after every shard checked with the
	// shards done and the total.
	Progress func(done, total int64)
}

// Repair records one shard volume rebuilt by Scrub.
type Repair struct {
	// Server is where the shard volume now lives.
	Server ManifestServer `json:"server"`
	// Replaced is the lost server a spare took the place of.
	Replaced *ManifestServer `json:"replaced,omitempty"`
	// Rebuilt is how many of its shards were reconstructed.
	Rebuilt int64 `json:"rebuilt_shards"`
}

// ScrubReport is what Scrub found and did.
type ScrubReport struct {
	Volume     string       `json:"volume"`
	Checked    int64        `json:"checked_shards"`
	Bad        []ShardFault `json:"bad,omitempty"`
	Repairs    []Repair     `json:"repairs,omitempty"`
	Generation uint64       `json:"generation"`
}

// Scrub reads every shard of the striped volume m and checks it against the
// manifest's CRC-32C. Every server with lost or corrupt shards gets its
// whole shard volume rebuilt (good shards copied, bad ones reconstructed
// from the other servers) and uploaded with Session.Put, replacing the old
// one: onto the same server if it answers, else onto a spare, which takes
// its place in the manifest. If anything was repaired, the returned manifest
// has the new servers' shard-volume generations and a generation one
// greater than m's; otherwise it is m. The caller stores it.
//
// Scrub fails if a server cannot be repaired (lost with no spare) or a
// stripe has too many bad shards to rebuild; the report still lists what
// was found, and repairs done before the failure are in the returned
// manifest.
func Scrub(ctx context.Context, m *Manifest, cfg ScrubConfig) (*Manifest, *ScrubReport, error) {
	cur := *m
	cur.Servers = slices.Clone(m.Servers)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r, err := NewReader(&cur, ReaderConfig{Dial: cfg.Dial, Provider: cfg.Provider, Logger: cfg.Logger})
	if err != nil {
		return m, nil, err
	}
	defer r.Close()
	l := r.l
	rep := &ScrubReport{Volume: m.Name, Generation: m.Generation}
	total := l.Stripes() * int64(l.Shards())

	// Verify: every shard of every server.
	type key struct {
		stripe int64
		shard  int
	}
	bad := map[key]bool{}
	badBy := make([][]int64, len(cur.Servers)) // stripes with a bad shard, per server
	for s := range cur.Servers {
		var lost *ShardFault
		if _, f := r.session(ctx, s); f != nil {
			lost = f
		}
		for i := range l.Stripes() {
			j := l.ShardOf(i, s)
			if j < 0 {
				continue
			}
			if err := ctx.Err(); err != nil {
				return m, rep, fmt.Errorf("ec: scrub %s: %w", m.Name, err)
			}
			var fault *ShardFault
			if lost != nil {
				f := *lost
				f.Stripe, f.Shard = i, j
				fault = &f
			} else if _, fs := r.fetchShards(ctx, i, []int{j}); len(fs) > 0 {
				fault = &fs[0]
				if fault.Reason == ReasonDown {
					lost = fault
				}
			}
			rep.Checked++
			if cfg.Progress != nil {
				cfg.Progress(rep.Checked, total)
			}
			if fault != nil {
				cfg.Logger.Warn("bad shard", "volume", m.Name, "fault", fault.String())
				rep.Bad = append(rep.Bad, *fault)
				bad[key{i, j}] = true
				badBy[s] = append(badBy[s], i)
			}
		}
	}

	// Repair, one server at a time.
	changed := false
	var errs []error
	for s := range cur.Servers {
		if len(badBy[s]) == 0 {
			continue
		}
		old := cur.Servers[s]
		target, sess, err := repairTarget(ctx, &cur, s, cfg)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rebuilt, gen, err := rebuild(ctx, r, s, sess, func(i int64) map[int]bool {
			b := map[int]bool{}
			for j := range l.Shards() {
				if bad[key{i, j}] {
					b[j] = true
				}
			}
			return b
		})
		sess.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("ec: scrub %s: rebuild shards of %s onto %s (%s): %w", m.Name, old.ID, target.ID, target.Addr, err))
			continue
		}
		target.Generation = gen
		cur.Servers[s] = target
		r.forget(s)
		for _, i := range badBy[s] {
			delete(bad, key{i, l.ShardOf(i, s)})
		}
		changed = true
		rp := Repair{Server: target, Rebuilt: rebuilt}
		if target.ID != old.ID {
			o := old
			rp.Replaced = &o
		}
		rep.Repairs = append(rep.Repairs, rp)
		cfg.Logger.Info("rebuilt shard volume", "volume", m.Name, "server", target.ID, "addr", target.Addr,
			"replaced", old.ID, "rebuilt_shards", rebuilt, "generation", gen)
	}
	out := m
	if changed {
		cur.Generation = m.Generation + 1
		out = &cur
	}
	rep.Generation = out.Generation
	return out, rep, errors.Join(errs...)
}

// repairTarget picks where server s's shard volume is rebuilt: s itself if
// it answers, else the first spare that answers and is not a server of the
// volume already.
func repairTarget(ctx context.Context, m *Manifest, s int, cfg ScrubConfig) (ManifestServer, *engine.Session, error) {
	srv := m.Servers[s]
	sess, err := cfg.Dial(ctx, srv)
	if err == nil {
		return srv, sess, nil
	}
	reasons := []string{fmt.Sprintf("%s (%s): %v", srv.ID, srv.Addr, err)}
	for _, sp := range cfg.Spares {
		if slices.ContainsFunc(m.Servers, func(x ManifestServer) bool { return x.ID == sp.ID || x.Addr == sp.Addr }) {
			continue
		}
		sess, err := cfg.Dial(ctx, sp)
		if err == nil {
			return ManifestServer{ID: sp.ID, Addr: sp.Addr}, sess, nil
		}
		reasons = append(reasons, fmt.Sprintf("spare %s (%s): %v", sp.ID, sp.Addr, err))
	}
	return ManifestServer{}, nil, fmt.Errorf("ec: scrub %s: server %s is lost and no spare server can take its shards: %v",
		m.Name, srv.ID, reasons)
}

// forget drops the Reader's session to server s, so the next use dials the
// manifest's (possibly new) server s.
func (r *Reader) forget(s int) {
	st := r.srv[s]
	st.mu.Lock()
	if st.sess != nil {
		st.sess.Close()
		st.sess = nil
	}
	st.down = nil
	st.mu.Unlock()
}

// rebuild streams a complete shard volume for server s into sess with Put
// (replace): each shard fetched from s if it is good, else reconstructed
// from the stripe's other shards. badOf returns the shards of a stripe known
// to be bad. It returns how many shards were reconstructed and the new
// volume's generation.
func rebuild(ctx context.Context, r *Reader, s int, sess *engine.Session, badOf func(int64) map[int]bool) (int64, uint64, error) {
	l := r.l
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	var rebuilt int64
	produced := make(chan error, 1)
	go func() {
		err := func() error {
			for i := range l.Stripes() {
				j := l.ShardOf(i, s)
				if j < 0 {
					continue
				}
				badShards := badOf(i)
				var shard []byte
				if !badShards[j] {
					if got, fs := r.fetchShards(ctx, i, []int{j}); len(fs) == 0 {
						shard = got[0]
					} else {
						badShards[j] = true
					}
				}
				if shard == nil {
					shards, _, err := r.gather(ctx, i, make([][]byte, l.Shards()), badShards, nil)
					if err != nil {
						return err
					}
					if err := r.codec.Reconstruct(shards); err != nil {
						return fmt.Errorf("stripe %d: %w", i, err)
					}
					shard = shards[j]
					if got, want := crcOf(shard), r.m.ShardCRC(i, j); got != want {
						return fmt.Errorf("stripe %d: rebuilt shard %d has crc32c %08x, the manifest says %08x", i, j, got, want)
					}
					rebuilt++
				}
				if _, err := pw.Write(shard); err != nil {
					return err
				}
			}
			return nil
		}()
		pw.CloseWithError(err)
		produced <- err
	}()
	st, err := sess.Put(ctx, r.m.ShardVolume(), l.Held(s)*l.Unit, l.Unit, pr, true)
	pr.CloseWithError(errors.New("upload ended"))
	cancel()
	perr := <-produced
	if err != nil {
		if perr != nil && !errors.Is(perr, io.ErrClosedPipe) && perr.Error() != "upload ended" {
			return rebuilt, 0, perr
		}
		return rebuilt, 0, err
	}
	return rebuilt, st.Generation, nil
}
