package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/ec"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport/choose"
)

// Striped (erasure-coded) volumes:
//
//	blockcat put FILE --name V --ec K+M [--peers A,B,...] [--unit SIZE] (--etcd E | --manifest OUT) [--replace] [--json]
//	blockcat get (--manifest FILE [VOLUME] | --etcd E VOLUME) [--offset N] [--length N] [-o FILE|-] [--continue] [--json]

// dispatchGet runs `blockcat get`: a striped volume when --manifest or
// --etcd is given, otherwise a volume of one server.
func dispatchGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && (name == "manifest" || name == "etcd") {
			return ecGet(ctx, args, stdout, stderr)
		}
	}
	err := get(ctx, args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		// -h lists every flag get takes: the striped form's too.
		fmt.Fprintln(stderr)
		ecGet(ctx, []string{"-h"}, stdout, stderr)
	}
	return err
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

// ecSessions opens the sessions of a striped read or write: each receives
// into the provider --provider names, with the transport --devmem chooses
// for its server, and checks every extent's CRC-32C.
type ecSessions struct {
	p         memory.Provider
	mode      choose.Mode
	key       []byte
	log       *slog.Logger
	pathLog   *slog.Logger // choose.Client's (see common.pathLogger)
	dataConns int
	keyErr    func(server string, err error) error // common.explainDial

	mu     sync.Mutex
	opened []*choose.ClientPath
	chosen map[string]chosenPath // by server id
}

// chosenPath is the transport a server's session receives with, and why
// it fell back to TCP ("" if it did not).
type chosenPath struct{ transport, fallback string }

// ecSessions opens the provider. The caller closes the ecSessions after the
// sessions it dialled.
func (c *common) ecSessions(ctx context.Context, stderr io.Writer) (*ecSessions, error) {
	mode, err := choose.ParseMode(c.devmem.mode)
	if err != nil {
		return nil, cli.UsageErr(err)
	}
	key, log, err := c.credentials(stderr)
	if err != nil {
		return nil, err
	}
	p, err := cli.OpenProvider(ctx, c.provider, c.pluginDir, c.logLevel, stderr)
	if err != nil {
		return nil, err
	}
	return &ecSessions{p: p, mode: mode, key: key, log: log, pathLog: c.pathLogger(log), dataConns: int(c.dataConns),
		keyErr: c.explainDial, chosen: map[string]chosenPath{}}, nil
}

// dial opens a session to server s; it is an ec.Dialer.
func (e *ecSessions) dial(ctx context.Context, s ec.ManifestServer) (*engine.Session, error) {
	srvLog := e.log.With("server", s.ID)
	path, err := choose.Client(ctx, choose.ClientOptions{Mode: e.mode, Server: s.Addr, Provider: e.p,
		DataConns: e.dataConns, Logger: e.pathLog.With("server", s.ID)})
	if err != nil {
		return nil, err
	}
	sess, err := engine.Dial(ctx, s.Addr, engine.Config{Key: e.key, Provider: e.p, Transport: path.Transport, PlainTransport: path.Plain,
		FallbackReason: path.FallbackReason, DataConns: e.dataConns, Verify: engine.VerifyRequire, Name: "blockcat", Logger: srvLog})
	if err != nil {
		path.Close()
		return nil, e.keyErr(s.Addr, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.opened = append(e.opened, path)
	e.chosen[s.ID] = chosenPath{path.Transport.Name(), path.FallbackReason}
	return sess, nil
}

// servers describes the manifest's servers for --json: each one's
// address and, if a session was opened with it, the transport it used and
// why it fell back to TCP, if it did.
func (e *ecSessions) servers(m *ec.Manifest) []ecServer {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]ecServer, len(m.Servers))
	for i, s := range m.Servers {
		out[i] = ecServer{ID: s.ID, Addr: s.Addr, Generation: s.Generation}
		if c, ok := e.chosen[s.ID]; ok {
			out[i].Transport = &c.transport
			if c.fallback != "" {
				out[i].FallbackReason = &c.fallback
			}
		}
	}
	return out
}

// ecServer is a server of a striped volume as `blockcat get --json`
// prints it.
type ecServer struct {
	ID         string `json:"id"`
	Addr       string `json:"addr"`
	Generation uint64 `json:"generation"` // of the server's shard volume
	// Transport is nil when no session was opened with the server.
	Transport      *string `json:"transport"`
	FallbackReason *string `json:"fallback_reason"`
}

// Close releases what the dialled sessions' transports hold, then the
// provider. Call it after the sessions are closed.
func (e *ecSessions) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, path := range e.opened {
		path.Close()
	}
	e.p.Close()
}

// putFlags are the flags of `blockcat put`.
type putFlags struct {
	common
	file     string // FILE
	name     string
	k, m     int // from --ec
	peers    string
	unit     cli.SizeFlag
	etcd     string
	manifest string
	replace  bool
	asJSON   bool
	replicas int // from --replicas: a replicated volume instead
	extent   cli.SizeFlag
}

// parsePutFlags parses and checks the arguments of `blockcat put`.
func parsePutFlags(args []string, stderr io.Writer) (*putFlags, error) {
	f := &putFlags{unit: ec.DefaultUnit, extent: catalog.DefaultExtentSize}
	fs := flag.NewFlagSet("blockcat put", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f.register(fs)
	fs.StringVar(&f.name, "name", "", "striped volume name (required)")
	code := fs.String("ec", "", "erasure code K+M: data and parity shards per stripe, such as 4+2")
	fs.IntVar(&f.replicas, "replicas", 0, "instead of striping, store FILE whole on `N` servers (a replicated volume,\n"+
		"recorded in etcd: a get fails over between them); needs --etcd")
	fs.Var(&f.extent, "extent-size", "with --replicas, the extent size of each copy: a multiple of 4KiB up to 64MiB")
	fs.StringVar(&f.peers, "peers", "", "comma-separated blockd addresses, in placement order (default: the servers registered in etcd)")
	fs.Var(&f.unit, "unit", "shard size: a multiple of 4KiB up to 64MiB")
	fs.StringVar(&f.etcd, "etcd", "", "etcd endpoints: store the manifest in the cluster catalog")
	fs.StringVar(&f.manifest, "manifest", "", "write the manifest to this file (without etcd)")
	fs.BoolVar(&f.replace, "replace", false, "replace an existing striped volume of that name")
	fs.BoolVar(&f.asJSON, "json", false, "print the result as JSON")
	pos, err := cli.Parse(fs, args, 1, "FILE --name V (--ec K+M | --replicas N) [--peers A,B,...] (--etcd E | --manifest OUT)")
	if err != nil {
		return nil, cli.UsageErr(err)
	}
	f.file = pos[0]
	if *code != "" {
		f.k, f.m, err = parseEC(*code)
	}
	switch {
	case f.replicas == 0 && *code == "":
		return nil, cli.UsageErr(errors.New("give --ec K+M to stripe FILE, or --replicas N to store it whole on N servers"))
	case f.replicas != 0 && *code != "":
		return nil, cli.UsageErr(errors.New("give one of --ec and --replicas"))
	case f.replicas < 0 || f.replicas > ec.MaxReplicas:
		return nil, cli.UsageErr(fmt.Errorf("--replicas %d: want 1 to %d", f.replicas, ec.MaxReplicas))
	case f.replicas > 0 && f.etcd == "":
		return nil, cli.UsageErr(errors.New("--replicas needs --etcd: the cluster catalog records which servers hold the copies"))
	case err != nil:
		return nil, cli.UsageErr(err)
	case f.name == "":
		return nil, cli.UsageErr(errors.New("--name is required"))
	case (f.etcd == "") == (f.manifest == ""):
		return nil, cli.UsageErr(errors.New("give exactly one of --etcd and --manifest"))
	case f.peers == "" && f.etcd == "":
		return nil, cli.UsageErr(errors.New("--peers is required without --etcd"))
	}
	if f.peers, err = cli.AddrList(f.peers); err != nil { // HOST means HOST:7070
		return nil, cli.UsageErr(fmt.Errorf("--peers: %w", err))
	}
	return f, nil
}

// putResult is what `blockcat put --json` prints (docs/json.md).
type putResult struct {
	Volume          string              `json:"volume"`
	Manifest        string              `json:"manifest"` // file, or etcd:ENDPOINTS
	Generation      uint64              `json:"generation"`
	SizeBytes       int64               `json:"size_bytes"`
	K               int                 `json:"k"`
	M               int                 `json:"m"`
	UnitBytes       int64               `json:"unit_bytes"`
	Stripes         int64               `json:"stripes"`
	Servers         []ec.ManifestServer `json:"servers"`
	DataConnections int                 `json:"data_connections"`
	Seconds         float64             `json:"seconds"`
	BytesPerSecond  float64             `json:"bytes_per_second"`
}

// put runs `blockcat put`: it stores FILE as a striped volume on the
// servers (--peers, or those registered in etcd) and stores its manifest
// in etcd or in a file.
func put(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parsePutFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := f.context(ctx)
	defer cancel()
	var cluster *ec.Cluster
	if f.etcd != "" {
		if cluster, err = ec.Connect(ctx, f.etcd); err != nil {
			return err
		}
		defer cluster.Close()
	}
	src, err := os.Open(f.file)
	if err != nil {
		return err
	}
	defer src.Close()
	size, err := fileSize(src)
	if err != nil {
		return fmt.Errorf("put %s: size of %s: %w", f.name, f.file, err)
	}
	if f.replicas > 0 {
		return putReplicas(ctx, f, cluster, src, size, stdout, stderr)
	}
	servers, err := f.servers(ctx, cluster)
	if err != nil {
		return err
	}
	prev, err := previousManifest(ctx, cluster, f.name, f.replace)
	if err != nil {
		return err
	}
	sessions, err := f.ecSessions(ctx, stderr)
	if err != nil {
		return err
	}
	defer sessions.Close()
	bar := newBar(stderr, size, "put "+f.name, f.asJSON)
	start := time.Now()
	man, err := ec.Import(ctx, src, size, ec.ImportConfig{
		Name: f.name, K: f.k, M: f.m, Unit: int64(f.unit), Servers: servers, Dial: sessions.dial, Replace: f.replace,
		Progress: bar.Progress,
	})
	bar.Finish(err)
	if err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	if prev != nil {
		man.Generation = prev.Generation + 1
	}
	if err := ec.StoreManifest(ctx, cluster, f.manifest, man); err != nil {
		return err
	}
	res := putResult{Volume: man.Name, SizeBytes: man.Size, K: man.K, M: man.M, UnitBytes: man.Unit, Stripes: man.Layout().Stripes(),
		Generation: man.Generation, Servers: man.Servers, Manifest: f.manifest, DataConnections: int(f.dataConns),
		Seconds: secs, BytesPerSecond: float64(size) / secs}
	if cluster != nil {
		res.Manifest = "etcd:" + f.etcd
	}
	return res.print(stdout, f.asJSON)
}

// servers returns the servers to place the volume on, in placement order:
// --peers, named by their registered ids when there is a cluster catalog,
// or else every registered server.
func (f *putFlags) servers(ctx context.Context, cluster *ec.Cluster) ([]ec.ManifestServer, error) {
	servers, err := cluster.ResolveServers(ctx, cli.SplitList(f.peers))
	if err != nil {
		return nil, err
	}
	if f.peers == "" && len(servers) < f.k+f.m {
		return nil, fmt.Errorf("put %s: %d servers registered in etcd, %d+%d needs %d", f.name, len(servers), f.k, f.m, f.k+f.m)
	}
	return servers, nil
}

// previousManifest returns the manifest stored in the cluster catalog for
// the striped volume name, nil if there is none (or no cluster catalog). It
// refuses to replace it unless replace is set.
func previousManifest(ctx context.Context, cluster *ec.Cluster, name string, replace bool) (*ec.Manifest, error) {
	if cluster == nil {
		return nil, nil
	}
	prev, err := cluster.GetManifest(ctx, name)
	switch {
	case errors.Is(err, ec.ErrNoManifest):
		return nil, nil
	case err != nil:
		return nil, err
	case !replace:
		return nil, fmt.Errorf("put %s: a striped volume of that name exists (generation %d); use --replace", name, prev.Generation)
	}
	return prev, nil
}

// print prints the result as JSON or as a line of text.
func (r *putResult) print(w io.Writer, asJSON bool) error {
	if asJSON {
		return cli.WriteJSON(w, r)
	}
	fmt.Fprintf(w, "stored %s (%s) as %d stripes of %d+%d shards of %s on %d servers in %.3fs (%s/s), generation %d; manifest: %s\n",
		r.Volume, cli.FormatBytes(float64(r.SizeBytes)), r.Stripes, r.K, r.M, cli.FormatBytes(float64(r.UnitBytes)), len(r.Servers),
		r.Seconds, cli.FormatBytes(r.BytesPerSecond), r.Generation, r.Manifest)
	return nil
}

// fileSize returns the size of f, a file or a block device, and leaves it
// positioned at the start.
func fileSize(f *os.File) (int64, error) {
	size, err := f.Seek(0, io.SeekEnd) // also the size of a block device
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	return size, err
}

// manifestName names where a striped volume's manifest is: its file, or
// etcd:ENDPOINTS.
func manifestName(src ec.ManifestSource) string {
	if src.File != "" {
		return src.File
	}
	return "etcd:" + src.Etcd
}

// outputName is -o for --json: nil when the bytes are kept in memory only.
func outputName(o string) *string {
	if o == "" {
		return nil
	}
	return &o
}

// newBar returns a progress bar on stderr, or one that draws nothing when
// the command prints JSON.
func newBar(stderr io.Writer, total int64, what string, quiet bool) *cli.Bar {
	if quiet {
		return cli.NewBar(io.Discard, total, "")
	}
	return cli.NewBar(stderr, total, what)
}

// ecGetFlags are the flags of `blockcat get` for a striped volume.
type ecGetFlags struct {
	common
	src            ec.ManifestSource // --manifest or --etcd, and VOLUME
	offset, length cli.SizeFlag
	window         cli.SizeFlag
	windowGiven    bool // --window given: a replicated volume uses it as get's, else get's default
	out            string
	force          bool
	resume         bool
	keepCache      bool
	shardTimeout   time.Duration
	depth          int          // a replicated volume only
	rate           cli.SizeFlag // a replicated volume only
	asJSON         bool
}

// parseECGetFlags parses and checks the arguments of `blockcat get` for a
// striped volume.
func parseECGetFlags(args []string, stderr io.Writer) (*ecGetFlags, error) {
	f := &ecGetFlags{window: 64 << 20}
	fs := flag.NewFlagSet("blockcat get", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f.register(fs)
	fs.StringVar(&f.src.File, "manifest", "", "manifest file of a striped volume")
	fs.StringVar(&f.src.Etcd, "etcd", "", "etcd endpoints of the cluster catalog holding the striped volume")
	fs.Var(&f.offset, "offset", "first byte to fetch")
	fs.Var(&f.length, "length", "bytes to fetch (default: to the end of the volume)")
	fs.Var(&f.window, "window", "bytes fetched per step (rounded up to whole stripes); a replicated volume\nuses it as bytes per request when given, else the default of a single server's get")
	fs.StringVar(&f.out, "o", "", outputHelp)
	fs.BoolVar(&f.force, "force", false, forceHelp)
	fs.BoolVar(&f.resume, "continue", false, continueHelp)
	fs.BoolVar(&f.keepCache, "keep-cache", false, keepCacheHelp)
	fs.DurationVar(&f.shardTimeout, "shard-timeout", 0, "reconstruct a shard that takes longer than this (0: no limit)")
	fs.IntVar(&f.depth, "depth", 4, "for a replicated volume (put --replicas), requests in flight")
	fs.Var(&f.rate, "rate", "for a replicated volume, limit the fetch to about this many bytes per second")
	fs.BoolVar(&f.verify, "verify", true, "check every shard's CRC-32C against the manifest (always on for a striped volume)")
	fs.BoolVar(&f.asJSON, "json", false, "print the result as JSON")
	pos, err := cli.ParseRange(fs, args, 0, 1, "(--manifest FILE [VOLUME] | --etcd E VOLUME) [--offset N] [--length N] [-o FILE|-] [--continue] [--json]")
	if err != nil {
		return nil, cli.UsageErr(err)
	}
	if len(pos) == 1 {
		f.src.Volume = pos[0]
	}
	fs.Visit(func(fl *flag.Flag) { f.windowGiven = f.windowGiven || fl.Name == "window" })
	switch {
	case f.window <= 0:
		return nil, cli.UsageErr(errors.New("--window must be positive"))
	case f.depth < 1:
		return nil, cli.UsageErr(errors.New("--depth must be positive"))
	case (f.src.File == "") == (f.src.Etcd == ""):
		return nil, cli.UsageErr(errors.New("give exactly one of --manifest and --etcd"))
	case f.src.Etcd != "" && f.src.Volume == "":
		return nil, cli.UsageErr(errors.New("--etcd needs a VOLUME"))
	case f.resume && (f.out == "" || f.out == "-"):
		return nil, cli.UsageErr(errors.New("--continue needs -o FILE"))
	}
	return f, nil
}

// ecGetResult is what `blockcat get --json` prints for a striped volume
// (docs/json.md).
type ecGetResult struct {
	Volume     string `json:"volume"`
	Manifest   string `json:"manifest"` // file, or etcd:ENDPOINTS
	Generation uint64 `json:"generation"`
	K          int    `json:"k"`
	M          int    `json:"m"`
	Offset     int64  `json:"offset_bytes"`
	Length     int64  `json:"length_bytes"`
	// Resumed counts the bytes of the range that a partial file kept by
	// an earlier get held (--continue); Bytes counts those fetched now.
	Bytes          int64   `json:"fetched_bytes"`
	Resumed        int64   `json:"resumed_bytes"`
	Seconds        float64 `json:"seconds"`
	BytesPerSecond float64 `json:"bytes_per_second"`
	Provider       string  `json:"provider"`
	Output         *string `json:"output"` // nil: memory only
	DataConns      int     `json:"data_connections"`
	Verified       bool    `json:"verified"`
	Stripes        int64   `json:"stripes"`
	// Servers says, per server, which transport its session used and
	// why it fell back to TCP, if it did.
	Servers  []ecServer          `json:"servers"`
	Degraded []ec.DegradedStripe `json:"degraded"`
}

// ecGet runs `blockcat get` for a striped volume: it reads the range from
// the volume's servers, reconstructing what they cannot give, and writes it
// to -o (see openOutput: a regular FILE is replaced only when the get
// succeeds).
func ecGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseECGetFlags(args, stderr)
	if err != nil {
		return err
	}
	if err := refuseTerminal(f.out, stdout, f.force); err != nil {
		return err
	}
	ctx, cancel := f.context(ctx)
	defer cancel()
	if f.src.Etcd != "" {
		holders, err := replicaHolders(ctx, f.src.Etcd, f.src.Volume)
		if err != nil {
			return err
		}
		if holders != nil {
			return getReplicated(ctx, f, holders, stdout, stderr)
		}
	}
	if f.rate != 0 || f.depth != 4 {
		return cli.UsageErr(errors.New("--rate and --depth apply to a replicated volume (put --replicas); " +
			"a striped get reads --window at a time from every server"))
	}
	man, cluster, err := ec.LoadManifest(ctx, f.src)
	if err != nil {
		return err
	}
	if cluster != nil {
		defer cluster.Close()
	}
	n, err := stripedRange(man, int64(f.offset), int64(f.length))
	if err != nil {
		return err
	}
	sessions, err := f.ecSessions(ctx, stderr)
	if err != nil {
		return err
	}
	defer sessions.Close()
	r, err := ec.NewReader(man, ec.ReaderConfig{Dial: sessions.dial, Provider: sessions.p, ShardTimeout: f.shardTimeout, Logger: sessions.log})
	if err != nil {
		return err
	}
	defer r.Close()
	out, err := openOutput(f.out, stdout, stderr, stripedSource(man, int64(f.offset), n), f.resume)
	if err != nil {
		return err
	}
	out.keepCache = f.keepCache
	defer out.finish(errors.New("get ended early"))
	res := ecGetResult{Volume: man.Name, Manifest: manifestName(f.src), Offset: int64(f.offset), Length: n, K: man.K, M: man.M,
		Generation: man.Generation, Degraded: []ec.DegradedStripe{}, Verified: true, Provider: sessions.p.Name(),
		Output: outputName(f.out), Resumed: out.resumed, DataConns: int(f.dataConns)}
	if rest := n - out.resumed; rest > 0 {
		bar := newBar(stderr, rest, "get "+man.Name, f.asJSON)
		err = readStriped(ctx, r, sessions.p, int64(f.offset)+out.resumed, rest, int64(f.window), out, bar, &res)
		bar.Finish(err)
		if err != nil {
			return out.finish(stopCause(ctx, err))
		}
	}
	if res.Seconds > 0 {
		res.BytesPerSecond = float64(res.Bytes) / res.Seconds
	}
	res.Servers = sessions.servers(man)
	if err := out.finish(nil); err != nil {
		return err
	}
	if f.asJSON {
		return cli.WriteJSON(stdout, res)
	}
	// The summary goes to stderr when the payload goes to stdout.
	if f.out == "-" {
		stdout = stderr
	}
	res.printText(stdout)
	return nil
}

// stripedRange checks that [off, off+length) is within the striped volume
// and returns the bytes to fetch (length 0: to the end).
func stripedRange(m *ec.Manifest, off, length int64) (int64, error) {
	if off >= m.Size {
		return 0, fmt.Errorf("offset %d is past the end of %s (%d bytes)", off, m.Name, m.Size)
	}
	n := length
	if n == 0 {
		n = m.Size - off
	}
	if off+n > m.Size {
		return 0, fmt.Errorf("range [%d,+%d) is past the end of %s (%d bytes)", off, n, m.Name, m.Size)
	}
	return n, nil
}

// readStriped reads [off, off+n) of the striped volume into a buffer of p,
// window by window (window rounded up to whole stripes), and writes the
// bytes to out in order. It counts the stripes read and degraded, the bytes
// and the seconds the reads took in res.
func readStriped(ctx context.Context, r *ec.Reader, p memory.Provider, off, n, window int64,
	out *output, bar *cli.Bar, res *ecGetResult) error {
	sb := r.Manifest().Layout().StripeBytes()
	win := min(n, (window+sb-1)/sb*sb)
	buf, err := p.Alloc(ctx, win, false)
	if err != nil {
		return err
	}
	defer p.Free(context.WithoutCancel(ctx), buf.ID)
	start := time.Now()
	for done := int64(0); done < n; {
		k := min(win, n-done)
		rr, err := r.Read(ctx, off+done, k, buf, 0)
		res.Degraded = append(res.Degraded, rr.Degraded...)
		res.Stripes += rr.Stripes
		if err != nil {
			return err
		}
		if out.w != nil {
			b, release, err := extentView(ctx, p, buf.ID, 0, k)
			if err != nil {
				return err
			}
			// A striped read checks every shard it returns.
			err = out.write(b, k)
			release()
			if err != nil {
				return err
			}
		}
		done += k
		res.Bytes = done
		bar.Progress(done, n)
	}
	res.Seconds = time.Since(start).Seconds()
	return nil
}

// printText prints the summary: throughput, servers that fell back to TCP,
// and the degraded stripes.
func (res *ecGetResult) printText(w io.Writer) {
	fmt.Fprintf(w, "fetched %s of %s%s into %s in %.3fs: %s/s from %d servers (%d+%d, generation %d), %d of %d stripes degraded\n",
		cli.FormatBytes(float64(res.Bytes)), res.Volume, resumedNote(res.Resumed), destination(res.Output, res.Provider),
		res.Seconds, cli.FormatBytes(res.BytesPerSecond),
		len(res.Servers), res.K, res.M, res.Generation, len(res.Degraded), res.Stripes)
	for _, s := range res.Servers {
		if s.Transport != nil && s.FallbackReason != nil {
			fmt.Fprintf(w, "  %s: %s (fallback: %s)\n", s.ID, *s.Transport, *s.FallbackReason)
		}
	}
	for _, d := range res.Degraded {
		var miss []string
		for _, f := range d.Missing {
			miss = append(miss, f.String())
		}
		fmt.Fprintf(w, "  degraded stripe %d: %s; reconstructed from shards %v\n", d.Stripe, strings.Join(miss, "; "), d.Used)
	}
}
