package ec

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/blockxfer/blockxfer/engine"
)

// ImportConfig configures Import.
type ImportConfig struct {
	// Name is the striped volume's name; each server stores its shards as
	// ShardVolume(Name).
	Name string
	// K and M are the data and parity shards per stripe.
	K, M int
	// Unit is the shard size (default DefaultUnit).
	Unit int64
	// Servers are the servers in placement order (at least K+M). Addr is
	// dialed; ID names the server in the manifest.
	Servers []ManifestServer
	// Dial opens a session to a server. Required.
	Dial Dialer
	// Replace replaces existing shard volumes of that name.
	Replace bool
	// Progress, if set, is called after every stripe with the source bytes
	// done and the total.
	Progress func(done, total int64)
}

// Import reads size bytes from src (a file, a block device, any stream),
// cuts them into stripes, computes parity, and uploads every server's shard
// volume with Session.Put, all servers in parallel. It returns the manifest
// of the new volume (generation 1), with every shard's CRC-32C and every
// server's shard-volume generation. If anything fails, the uploads in flight
// are abandoned (the servers keep nothing of them) and the error names the
// server; shard volumes already committed on other servers stay, and a
// retry with Replace overwrites them.
func Import(ctx context.Context, src io.Reader, size int64, cfg ImportConfig) (*Manifest, error) {
	if cfg.Unit == 0 {
		cfg.Unit = DefaultUnit
	}
	m := &Manifest{Name: cfg.Name, Size: size, K: cfg.K, M: cfg.M, Unit: cfg.Unit, Placement: PlacementRotate,
		Generation: 1, Servers: append([]ManifestServer(nil), cfg.Servers...)}
	l := m.Layout()
	// Validate everything before any byte moves: a probe with as many
	// checksums as the layout needs (none if the layout is invalid or
	// needs too many, which Validate reports).
	probe := *m
	if l.Validate() == nil {
		if count := l.Stripes() * int64(l.Shards()); count <= MaxManifestLen/4 {
			probe.CRCs = make([]uint32, count)
			m.CRCs = make([]uint32, 0, count)
		}
	}
	if err := probe.Validate(); err != nil {
		return nil, fmt.Errorf("ec: import %s: %w", cfg.Name, err)
	}
	if cfg.Dial == nil {
		return nil, fmt.Errorf("ec: import %s: no dialer", cfg.Name)
	}
	codec, err := NewCodec(m.K, m.M)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// One upload per server that holds shards, each fed by a pipe.
	type upload struct {
		pw  *io.PipeWriter
		gen uint64
	}
	ups := make([]*upload, len(m.Servers))
	var mu sync.Mutex
	var sessions []*engine.Session
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()
	g, gctx := errgroup.WithContext(ctx)
	for s := range m.Servers {
		held := l.Held(s)
		if held == 0 {
			continue
		}
		pr, pw := io.Pipe()
		up := &upload{pw: pw}
		ups[s] = up
		srv := m.Servers[s]
		g.Go(func() error {
			err := func() error {
				sess, err := cfg.Dial(gctx, srv)
				if err != nil {
					return err
				}
				mu.Lock()
				sessions = append(sessions, sess)
				mu.Unlock()
				st, err := sess.Put(gctx, m.ShardVolume(), held*m.Unit, m.Unit, pr, cfg.Replace)
				up.gen = st.Generation
				return err
			}()
			if err != nil {
				err = fmt.Errorf("ec: import %s: server %s (%s): %w", m.Name, srv.ID, srv.Addr, err)
				pr.CloseWithError(err)
				cancel(err)
			}
			return err
		})
	}

	var srcErr error // the source or the codec failed (not an upload)
	encodeErr := func() error {
		shards := make([][]byte, l.Shards())
		for j := range shards {
			shards[j] = make([]byte, m.Unit)
		}
		var done int64
		for i := range l.Stripes() {
			n := min(l.StripeBytes(), size-done)
			for j := range m.K {
				b := shards[j]
				k := max(0, min(m.Unit, n-int64(j)*m.Unit))
				if _, err := io.ReadFull(src, b[:k]); err != nil {
					if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
						err = fmt.Errorf("source ended before its %d bytes", size)
					} else {
						err = fmt.Errorf("read source: %w", err)
					}
					srcErr = err
					return err
				}
				clear(b[k:])
			}
			if err := codec.Encode(shards); err != nil {
				srcErr = err
				return err
			}
			for j, b := range shards {
				m.CRCs = append(m.CRCs, crc32.Checksum(b, castagnoli))
				if _, err := ups[l.Server(i, j)].pw.Write(b); err != nil {
					return err
				}
			}
			done += n
			if cfg.Progress != nil {
				cfg.Progress(done, size)
			}
		}
		return nil
	}()
	for _, up := range ups {
		if up == nil {
			continue
		}
		if encodeErr != nil {
			up.pw.CloseWithError(encodeErr)
		} else {
			up.pw.Close()
		}
	}
	if encodeErr != nil {
		cancel(encodeErr)
	}
	werr := g.Wait()
	switch {
	case srcErr != nil:
		return nil, fmt.Errorf("ec: import %s: %w", m.Name, srcErr)
	case werr != nil:
		return nil, werr
	case encodeErr != nil:
		return nil, fmt.Errorf("ec: import %s: %w", m.Name, encodeErr)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("ec: import %s: %w", m.Name, context.Cause(ctx))
	}
	for s, up := range ups {
		if up != nil {
			m.Servers[s].Generation = up.gen
		}
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}
