package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/ec"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport/choose"
)

// Striped (erasure-coded) volumes:
//
//	blockcat put FILE --name V --ec K+M [--peers A,B,...] [--unit SIZE] (--etcd E | --manifest OUT) [--replace] [--json]
//	blockcat get (--manifest FILE [VOLUME] | --etcd E VOLUME) [--offset N] [--length N] [-o FILE|-] [--json]

// dispatchGet runs `blockcat get`: a striped volume when --manifest or
// --etcd is given, otherwise a volume of one server.
func dispatchGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && (name == "manifest" || name == "etcd") {
			return ecGet(ctx, args, stdout, stderr)
		}
	}
	return get(ctx, args, stdout, stderr)
}

// parseEC parses "K+M".
func parseEC(s string) (k, m int, err error) {
	a, b, ok := strings.Cut(s, "+")
	if ok {
		k, err = strconv.Atoi(a)
		if err == nil {
			m, err = strconv.Atoi(b)
		}
	}
	if !ok || err != nil || k < 1 || m < 1 {
		return 0, 0, fmt.Errorf("--ec %q: want K+M, such as 4+2", s)
	}
	return k, m, nil
}

// ecDial opens the provider named by --provider and returns it with a
// Dialer whose sessions receive into it, each with the transport --devmem
// chooses for that server, and CRC checks on. release closes what the
// dialed sessions' transports hold, then the provider: call it after the
// sessions are closed.
func (c *common) ecDial(ctx context.Context, stderr io.Writer) (p memory.Provider, dial ec.Dialer, release func(), paths func() map[string]string, err error) {
	mode, err := choose.ParseMode(c.devmem)
	if err != nil {
		return nil, nil, nil, nil, cli.UsageErr(err)
	}
	key, err := cli.LoadKey(c.keyFile)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	log, err := cli.NewLogger(stderr, "text", c.logLevel)
	if err != nil {
		return nil, nil, nil, nil, cli.UsageErr(err)
	}
	if p, err = cli.OpenProvider(ctx, c.provider, c.pluginDir, c.logLevel, stderr); err != nil {
		return nil, nil, nil, nil, err
	}
	var mu sync.Mutex
	var opened []*choose.ClientPath
	chosen := map[string]string{} // server id -> transport (and why it fell back)
	dial = func(ctx context.Context, s ec.ManifestServer) (*engine.Session, error) {
		srvLog := log.With("server", s.ID)
		path, err := choose.Client(ctx, choose.ClientOptions{Mode: mode, Server: s.Addr, Provider: p,
			DataConns: c.dataConns, Logger: srvLog})
		if err != nil {
			return nil, err
		}
		sess, err := engine.Dial(ctx, s.Addr, engine.Config{Key: key, Provider: p, Transport: path.Transport,
			FallbackReason: path.FallbackReason, DataConns: c.dataConns, Verify: engine.VerifyRequire, Name: "blockcat", Logger: srvLog})
		if err != nil {
			path.Close()
			return nil, err
		}
		mu.Lock()
		opened = append(opened, path)
		chosen[s.ID] = path.Transport.Name()
		if path.FallbackReason != "" {
			chosen[s.ID] += " (fallback: " + path.FallbackReason + ")"
		}
		mu.Unlock()
		return sess, nil
	}
	release = func() {
		mu.Lock()
		defer mu.Unlock()
		for _, path := range opened {
			path.Close()
		}
		p.Close()
	}
	paths = func() map[string]string {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(chosen)
	}
	return p, dial, release, paths, nil
}

// putResult is what `blockcat put --json` prints.
type putResult struct {
	Volume         string              `json:"volume"`
	Size           int64               `json:"size"`
	K              int                 `json:"k"`
	M              int                 `json:"m"`
	Unit           int64               `json:"unit"`
	Stripes        int64               `json:"stripes"`
	Generation     uint64              `json:"generation"`
	Servers        []ec.ManifestServer `json:"servers"`
	Manifest       string              `json:"manifest"` // file, or etcd:ENDPOINTS
	Seconds        float64             `json:"seconds"`
	BytesPerSecond float64             `json:"bytes_per_second"`
}

func put(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("blockcat put", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	name := fs.String("name", "", "striped volume name (required)")
	code := fs.String("ec", "", "erasure code K+M: data and parity shards per stripe, such as 4+2 (required)")
	peers := fs.String("peers", "", "comma-separated blockd addresses, in placement order (default: the servers registered in etcd)")
	var unit cli.SizeFlag = ec.DefaultUnit
	fs.Var(&unit, "unit", "shard size: a multiple of 4KiB up to 64MiB")
	etcd := fs.String("etcd", "", "etcd endpoints: store the manifest in the cluster catalog")
	manifest := fs.String("manifest", "", "write the manifest to this file (without etcd)")
	replace := fs.Bool("replace", false, "replace an existing striped volume of that name")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, err := cli.Parse(fs, args, 1, "FILE --name V --ec K+M [--peers A,B,...] (--etcd E | --manifest OUT)")
	if err != nil {
		return cli.UsageErr(err)
	}
	k, m, err := parseEC(*code)
	switch {
	case err != nil:
		return cli.UsageErr(err)
	case *name == "":
		return cli.UsageErr(errors.New("--name is required"))
	case (*etcd == "") == (*manifest == ""):
		return cli.UsageErr(errors.New("give exactly one of --etcd and --manifest"))
	case *peers == "" && *etcd == "":
		return cli.UsageErr(errors.New("--peers is required without --etcd"))
	}
	ctx, cancel := c.context(ctx)
	defer cancel()

	var cluster *ec.Cluster
	var servers []ec.ManifestServer
	if *etcd != "" {
		if cluster, err = ec.Connect(ctx, *etcd); err != nil {
			return err
		}
		defer cluster.Close()
		reg, err := cluster.Servers(ctx)
		if err != nil {
			return err
		}
		if *peers == "" {
			servers = reg
			if len(servers) < k+m {
				return fmt.Errorf("put %s: %d servers registered in etcd, %d+%d needs %d", *name, len(servers), k, m, k+m)
			}
		}
		for _, a := range splitList(*peers) {
			s := ec.ManifestServer{ID: a, Addr: a}
			for _, r := range reg {
				if r.Addr == a {
					s.ID = r.ID
				}
			}
			servers = append(servers, s)
		}
	} else {
		for _, a := range splitList(*peers) {
			servers = append(servers, ec.ManifestServer{ID: a, Addr: a})
		}
	}

	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd) // also the size of a block device
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		return fmt.Errorf("put %s: size of %s: %w", *name, pos[0], err)
	}
	var prev *ec.Manifest
	if cluster != nil {
		prev, err = cluster.GetManifest(ctx, *name)
		switch {
		case err == nil && !*replace:
			return fmt.Errorf("put %s: a striped volume of that name exists (generation %d); use --replace", *name, prev.Generation)
		case err != nil && !errors.Is(err, ec.ErrNoManifest):
			return err
		}
	}

	_, dial, release, _, err := c.ecDial(ctx, stderr)
	if err != nil {
		return err
	}
	defer release()
	bar := cli.NewBar(stderr, size, "put "+*name)
	if *asJSON {
		bar = cli.NewBar(io.Discard, size, "")
	}
	start := time.Now()
	man, err := ec.Import(ctx, f, size, ec.ImportConfig{
		Name: *name, K: k, M: m, Unit: int64(unit), Servers: servers, Dial: dial, Replace: *replace,
		Progress: bar.Progress,
	})
	bar.Finish(err)
	if err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	where := *manifest
	if cluster != nil {
		if prev != nil {
			man.Generation = prev.Generation + 1
		}
		if err := cluster.PutManifest(ctx, man); err != nil {
			return err
		}
		where = "etcd:" + *etcd
	} else if err := ec.WriteManifestFile(*manifest, man); err != nil {
		return err
	}
	res := putResult{Volume: man.Name, Size: man.Size, K: man.K, M: man.M, Unit: man.Unit, Stripes: man.Layout().Stripes(),
		Generation: man.Generation, Servers: man.Servers, Manifest: where, Seconds: secs, BytesPerSecond: float64(size) / secs}
	if *asJSON {
		return writeJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "stored %s (%s) as %d stripes of %d+%d shards of %s on %d servers in %.3fs (%s/s), generation %d; manifest: %s\n",
		man.Name, cli.FormatBytes(float64(man.Size)), res.Stripes, k, m, cli.FormatBytes(float64(man.Unit)), len(man.Servers),
		secs, cli.FormatBytes(res.BytesPerSecond), man.Generation, where)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// loadManifest reads the manifest of a striped volume from a file or etcd.
func loadManifest(ctx context.Context, file, etcd, volume string) (*ec.Manifest, *ec.Cluster, error) {
	if (file == "") == (etcd == "") {
		return nil, nil, cli.UsageErr(errors.New("give exactly one of --manifest and --etcd"))
	}
	if file != "" {
		m, err := ec.ReadManifestFile(file)
		if err != nil {
			return nil, nil, err
		}
		if volume != "" && volume != m.Name {
			return nil, nil, fmt.Errorf("manifest %s is for volume %q, not %q", file, m.Name, volume)
		}
		return m, nil, nil
	}
	if volume == "" {
		return nil, nil, cli.UsageErr(errors.New("--etcd needs a VOLUME"))
	}
	cluster, err := ec.Connect(ctx, etcd)
	if err != nil {
		return nil, nil, err
	}
	m, err := cluster.GetManifest(ctx, volume)
	if err != nil {
		cluster.Close()
		return nil, nil, err
	}
	return m, cluster, nil
}

// ecGetResult is what `blockcat get --json` prints for a striped volume.
type ecGetResult struct {
	Volume         string              `json:"volume"`
	Offset         int64               `json:"offset"`
	Bytes          int64               `json:"bytes"`
	Seconds        float64             `json:"seconds"`
	BytesPerSecond float64             `json:"bytes_per_second"`
	K              int                 `json:"k"`
	M              int                 `json:"m"`
	Generation     uint64              `json:"generation"`
	Servers        int                 `json:"servers"`
	Stripes        int64               `json:"stripes"`
	Degraded       []ec.DegradedStripe `json:"degraded"`
	Verified       bool                `json:"verified"`
	Provider       string              `json:"provider"`
	// Transports says, per server id, which transport its session used
	// and why it fell back to TCP, if it did.
	Transports map[string]string `json:"transports"`
	Output     string            `json:"output,omitempty"`
}

func ecGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("blockcat get", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	file := fs.String("manifest", "", "manifest file of a striped volume")
	etcd := fs.String("etcd", "", "etcd endpoints of the cluster catalog holding the striped volume")
	var offset, length cli.SizeFlag
	var window cli.SizeFlag = 64 << 20
	fs.Var(&offset, "offset", "first byte to fetch")
	fs.Var(&length, "length", "bytes to fetch (default: to the end of the volume)")
	fs.Var(&window, "window", "bytes fetched per step (rounded up to whole stripes)")
	out := fs.String("o", "", "write the bytes to FILE, or - for stdout (default: keep in memory only)")
	shardTimeout := fs.Duration("shard-timeout", 0, "reconstruct a shard that takes longer than this (0: no limit)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, err := cli.ParseRange(fs, args, 0, 1, "(--manifest FILE [VOLUME] | --etcd E VOLUME) [--offset N] [--length N] [-o FILE|-] [--json]")
	if err != nil {
		return cli.UsageErr(err)
	}
	if window <= 0 {
		return cli.UsageErr(errors.New("--window must be positive"))
	}
	volume := ""
	if len(pos) == 1 {
		volume = pos[0]
	}
	ctx, cancel := c.context(ctx)
	defer cancel()
	man, cluster, err := loadManifest(ctx, *file, *etcd, volume)
	if err != nil {
		return err
	}
	if cluster != nil {
		defer cluster.Close()
	}
	if int64(offset) >= man.Size {
		return fmt.Errorf("offset %d is past the end of %s (%d bytes)", offset, man.Name, man.Size)
	}
	n := int64(length)
	if n == 0 {
		n = man.Size - int64(offset)
	}
	if int64(offset)+n > man.Size {
		return fmt.Errorf("range [%d,+%d) is past the end of %s (%d bytes)", offset, n, man.Name, man.Size)
	}
	w, finish, err := openOutput(*out, stdout)
	if err != nil {
		return err
	}
	defer finish()

	p, dial, release, transports, err := c.ecDial(ctx, stderr)
	if err != nil {
		return err
	}
	defer release()
	log, _ := cli.NewLogger(stderr, "text", c.logLevel)
	r, err := ec.NewReader(man, ec.ReaderConfig{Dial: dial, Provider: p, ShardTimeout: *shardTimeout, Logger: log})
	if err != nil {
		return err
	}
	defer r.Close()
	sb := man.Layout().StripeBytes()
	win := min(n, (int64(window)+sb-1)/sb*sb)
	buf, err := p.Alloc(ctx, win, false)
	if err != nil {
		return err
	}
	defer p.Free(context.WithoutCancel(ctx), buf.ID)
	var scratch []byte
	res := ecGetResult{Volume: man.Name, Offset: int64(offset), K: man.K, M: man.M, Generation: man.Generation,
		Servers: len(man.Servers), Degraded: []ec.DegradedStripe{}, Verified: true, Provider: p.Name(), Output: *out}
	bar := cli.NewBar(stderr, n, "get "+man.Name)
	if *asJSON {
		bar = cli.NewBar(io.Discard, n, "")
	}
	start := time.Now()
	err = func() error {
		for done := int64(0); done < n; {
			k := min(win, n-done)
			rr, err := r.Read(ctx, int64(offset)+done, k, buf, 0)
			res.Degraded = append(res.Degraded, rr.Degraded...)
			res.Stripes += rr.Stripes
			if err != nil {
				return err
			}
			if w != nil {
				b, err := hostView(ctx, p, buf.ID, k, &scratch)
				if err != nil {
					return err
				}
				if _, err := w.Write(b); err != nil {
					return fmt.Errorf("write output: %w", err)
				}
			}
			done += k
			res.Bytes = done
			bar.Progress(done, n)
		}
		return nil
	}()
	bar.Finish(err)
	if err != nil {
		return err
	}
	res.Seconds = time.Since(start).Seconds()
	res.BytesPerSecond = float64(res.Bytes) / res.Seconds
	res.Transports = transports()
	if err := finish(); err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, res)
	}
	sum := stdout
	if w == stdout {
		sum = stderr
	}
	fmt.Fprintf(sum, "fetched %s of %s in %.3fs: %s/s from %d servers (%d+%d, generation %d), %d of %d stripes degraded\n",
		cli.FormatBytes(float64(res.Bytes)), res.Volume, res.Seconds, cli.FormatBytes(res.BytesPerSecond),
		res.Servers, res.K, res.M, res.Generation, len(res.Degraded), res.Stripes)
	for _, id := range slices.Sorted(maps.Keys(res.Transports)) {
		if t := res.Transports[id]; strings.Contains(t, "fallback") {
			fmt.Fprintf(sum, "  %s: %s\n", id, t)
		}
	}
	for _, d := range res.Degraded {
		var miss []string
		for _, f := range d.Missing {
			miss = append(miss, f.String())
		}
		fmt.Fprintf(sum, "  degraded stripe %d: %s; reconstructed from shards %v\n", d.Stripe, strings.Join(miss, "; "), d.Used)
	}
	return nil
}
