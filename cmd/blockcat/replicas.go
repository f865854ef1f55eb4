package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/ec"
	"github.com/blockxfer/blockxfer/engine"
)

// A replicated volume is a plain volume stored whole on several servers
// (blockcat put --replicas N): the same bytes uploaded to each, each copy
// under the generation its server gave it, recorded in the cluster catalog.
// `blockcat get VOLUME --etcd E` reads it from the first holder that
// answers and fails over to the others, resuming where the bytes stopped.

// replicasPutResult is what `blockcat put --replicas --json` prints
// (docs/json.md).
type replicasPutResult struct {
	Volume          string              `json:"volume"`
	Catalog         string              `json:"catalog"` // etcd:ENDPOINTS
	SizeBytes       int64               `json:"size_bytes"`
	ExtentSizeBytes int64               `json:"extent_size_bytes"`
	Holders         []ec.ManifestServer `json:"holders"`
	Seconds         float64             `json:"seconds"`
	BytesPerSecond  float64             `json:"bytes_per_second"`
}

// putReplicas runs `blockcat put FILE --name V --replicas N --etcd E`: it
// uploads FILE (src, of size bytes) whole to the first N servers (--peers, or those registered
// in etcd), one after another, and records the copies in the cluster
// catalog. A volume of that name on a server is replaced only with
// --replace.
func putReplicas(ctx context.Context, f *putFlags, cluster *ec.Cluster, src *os.File, size int64, stdout, stderr io.Writer) error {
	servers, err := cluster.ResolveServers(ctx, cli.SplitList(f.peers))
	if err != nil {
		return err
	}
	if len(servers) < f.replicas {
		return fmt.Errorf("put %s: %d replicas need %d servers, but %s", f.name, f.replicas, f.replicas,
			cli.Plural(len(servers), "server is known"))
	}
	servers = servers[:f.replicas]
	if prev, err := cluster.GetReplicas(ctx, f.name); err == nil && !f.replace {
		return fmt.Errorf("put %s: a replicated volume of that name exists (on %d servers); use --replace", f.name, len(prev.Holders))
	} else if err != nil && !errors.Is(err, ec.ErrNoReplicas) {
		return err
	}
	if size == 0 {
		return fmt.Errorf("put %s: nothing to store: %s is empty", f.name, f.file)
	}
	rec := &ec.Replicas{Name: f.name, Size: size}
	total := size * int64(len(servers))
	bar := newBar(stderr, total, "put "+f.name, f.asJSON)
	start := time.Now()
	for i, srv := range servers {
		st, err := f.upload(ctx, srv.Addr, src, size, &progressReader{r: src, bar: bar, n: int64(i) * size, total: total}, stderr)
		if err != nil {
			bar.Finish(err)
			return fmt.Errorf("put %s: copy %d of %d, on %s: %w", f.name, i+1, len(servers), srv.ID, err)
		}
		rec.ExtentSize = int64(st.ExtentSize)
		rec.Holders = append(rec.Holders, ec.ManifestServer{ID: srv.ID, Addr: srv.Addr, Generation: st.Generation})
	}
	bar.Finish(nil)
	secs := time.Since(start).Seconds()
	if err := cluster.PutReplicas(ctx, rec); err != nil {
		return err
	}
	res := replicasPutResult{Volume: f.name, Catalog: "etcd:" + f.etcd, SizeBytes: size, ExtentSizeBytes: rec.ExtentSize,
		Holders: rec.Holders, Seconds: secs, BytesPerSecond: float64(total) / secs}
	if f.asJSON {
		return cli.WriteJSON(stdout, res)
	}
	where := make([]string, len(rec.Holders))
	for i, h := range rec.Holders {
		where[i] = fmt.Sprintf("%s (generation %d)", h.ID, h.Generation)
	}
	fmt.Fprintf(stdout, "stored %s (%s) whole on %s in %.3fs (%s/s): %s; recorded in %s\n", f.name,
		cli.FormatBytes(float64(size)), cli.Plural(len(rec.Holders), "server"), secs, cli.FormatBytes(res.BytesPerSecond),
		strings.Join(where, ", "), res.Catalog)
	return nil
}

// upload stores size bytes read from r, which reads src, as f.name on the
// server at addr, from the start of src.
func (f *putFlags) upload(ctx context.Context, addr string, src *os.File, size int64, r io.Reader, stderr io.Writer) (blockproto.VolumeStat, error) {
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return blockproto.VolumeStat{}, err
	}
	s, err := f.dialControl(ctx, addr, stderr)
	if err != nil {
		return blockproto.VolumeStat{}, err
	}
	defer s.Close()
	st, err := s.Put(ctx, f.name, size, int64(f.extent), r, f.replace)
	if err != nil {
		return st, exists(ctx, s, addr, f.name, err)
	}
	return st, nil
}

// replicaHolders returns the holders of the replicated volume name in the
// cluster catalog at endpoints, at the addresses their servers are
// registered at now, or nil if no replicated volume has that name.
func replicaHolders(ctx context.Context, endpoints, name string) ([]engine.Holder, error) {
	cluster, err := ec.Connect(ctx, endpoints)
	if err != nil {
		return nil, err
	}
	defer cluster.Close()
	rec, err := cluster.GetReplicas(ctx, name)
	if errors.Is(err, ec.ErrNoReplicas) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	addrs, err := cluster.CurrentAddrs(ctx, rec.Holders)
	if err != nil {
		return nil, err
	}
	holders := make([]engine.Holder, len(addrs))
	for i, a := range addrs {
		holders[i] = engine.Holder{Addr: a, Generation: rec.Holders[i].Generation}
	}
	return holders, nil
}

// getReplicated runs `blockcat get VOLUME --etcd E` for a replicated
// volume: a get of one server's volume (the --json of `blockcat get
// SERVER VOLUME`), from the first holder that answers, failing over to the
// others.
func getReplicated(ctx context.Context, f *ecGetFlags, holders []engine.Holder, stdout, stderr io.Writer) error {
	g := &getFlags{common: f.common, volume: f.src.Volume, offset: f.offset, length: f.length,
		depth: f.depth, rate: f.rate, out: f.out, force: f.force, resume: f.resume, keepCache: f.keepCache, asJSON: f.asJSON}
	if f.windowGiven {
		g.window = f.window
	}
	return getVolume(ctx, g, holders, stdout, stderr)
}
