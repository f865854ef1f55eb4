package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport/choose"
)

// defaultKeyName is the key file looked for in the data directory.
const defaultKeyName = "blockd.key"

// serveConfig is `blockd serve`'s command line, parsed and checked.
type serveConfig struct {
	dataDir         string
	listen          string
	keyFile         string
	metricsAddr     string
	name            string
	maxSessions     int
	dataConns       int
	maxInflight     cli.SizeFlag
	smallRead       cli.SizeFlag
	maxReads        int
	maxPending      int
	maxPendingHost  int
	handshake       time.Duration
	idle            time.Duration
	uploadStall     time.Duration
	shutdownTimeout time.Duration
	logFormat       string
	logLevel        string
	readyFile       string
	devmem          string
	devmemIf        string
	txProvider      string
	pluginDir       string
	txPool          cli.SizeFlag
	cluster         clusterFlags

	mode choose.Mode  // from devmem
	log  *slog.Logger // from logFormat and logLevel
}

// parseServeFlags parses and checks the arguments of `blockd serve`. All
// its flags, the cluster's included, are in one flag set, so -h lists
// them all; nothing is opened or dialled here.
func parseServeFlags(args []string, stderr io.Writer) (*serveConfig, error) {
	c := &serveConfig{maxInflight: 256 << 20, smallRead: engine.DefaultSmallRead, txPool: 64 << 20}
	fs := flag.NewFlagSet("blockd serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cli.DataDirFlag(fs, &c.dataDir, "data directory holding catalog.db and volumes/")
	fs.StringVar(&c.listen, "listen", "127.0.0.1:"+cli.DefaultPort, "address for control and data connections: HOST[:PORT], port "+cli.DefaultPort+" if left out")
	fs.StringVar(&c.keyFile, "key-file", "", "pre-shared key `FILE` (default $"+cli.KeyEnv+", else DATA/"+defaultKeyName+")")
	fs.StringVar(&c.metricsAddr, "metrics", "", "address to serve Prometheus /metrics on (off if empty)")
	fs.StringVar(&c.name, "name", "", "server name shown to clients (default hostname)")
	fs.IntVar(&c.maxSessions, "max-sessions", 256, "most concurrent client sessions")
	fs.IntVar(&c.dataConns, "data-conns", 16, "most data connections per session")
	fs.Var(&c.maxInflight, "max-inflight", "most payload bytes in flight per session")
	fs.Var(&c.smallRead, "small-read", "reads shorter than this go on a session's plain data connections, the others on its devmem ones (0: none go plain)")
	fs.IntVar(&c.maxReads, "max-reads", 64, "most reads open per session; more are answered busy")
	fs.IntVar(&c.maxPending, "max-pending", 128, "most connections not yet authenticated (or attached), in all")
	fs.IntVar(&c.maxPendingHost, "max-pending-per-host", 16, "most connections not yet authenticated (or attached) from one address")
	fs.DurationVar(&c.handshake, "handshake-timeout", 10*time.Second, "time a connection has for its preamble and handshake")
	fs.DurationVar(&c.idle, "idle-timeout", 2*time.Minute, "close a session whose control connection is silent this long (clients ping every 15s)")
	fs.DurationVar(&c.uploadStall, "upload-stall", 30*time.Second, "fail an upload that receives no bytes this long, freeing its space")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long SIGTERM lets reads in flight finish")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.readyFile, "ready-file", "", "write the listening address to this file once serving (with --etcd: once registered)")
	fs.StringVar(&c.devmem, "devmem", "auto", "devmem send: auto (fall back to tcp, saying why), off, require, or emulate (software NIC)")
	fs.StringVar(&c.devmemIf, "devmem-if", "", "NIC to send devmem on (default: the one owning the --listen address)")
	fs.StringVar(&c.txProvider, "tx-provider", "udmabuf", "provider plugin whose dmabuf holds the devmem TX pool")
	fs.StringVar(&c.pluginDir, "plugin-dir", "", cli.PluginDirHelp)
	fs.Var(&c.txPool, "tx-pool", "devmem TX buffer pool size")
	c.cluster.addFlags(fs)
	if _, err := cli.Parse(fs, args, 0, "--data DIR [--listen ADDR] [--key-file FILE] [--metrics ADDR] [flags]\n\n"+
		"Serves the volumes of the data directory to blockcat and other clients until\n"+
		"SIGTERM or SIGINT, which let reads in flight finish (--shutdown-timeout). The\n"+
		"key is --key-file, else $"+cli.KeyEnv+", else DATA/"+defaultKeyName+". With --etcd it\n"+
		"also registers in a cluster catalog, for striped volumes."); err != nil {
		return nil, cli.UsageErr(err)
	}
	if err := c.cluster.check(); err != nil {
		return nil, cli.UsageErr(err)
	}
	if c.dataDir == "" {
		return nil, cli.UsageErr(cli.ErrNoDataDir)
	}
	if err := c.defaultPorts(); err != nil {
		return nil, cli.UsageErr(err)
	}
	for _, v := range []struct {
		name string
		n    int64
	}{
		{"--max-reads", int64(c.maxReads)}, {"--max-pending", int64(c.maxPending)}, {"--max-pending-per-host", int64(c.maxPendingHost)},
		{"--handshake-timeout", int64(c.handshake)}, {"--idle-timeout", int64(c.idle)}, {"--upload-stall", int64(c.uploadStall)},
	} {
		if v.n <= 0 {
			return nil, cli.UsageErr(fmt.Errorf("%s must be positive", v.name))
		}
	}
	var err error
	if c.mode, err = choose.ParseMode(c.devmem); err != nil {
		return nil, cli.UsageErr(err)
	}
	if c.log, err = cli.NewLogger(stderr, c.logFormat, c.logLevel); err != nil {
		return nil, cli.UsageErr(err)
	}
	return c, nil
}

// serve runs `blockd serve`: alone, or registered in the cluster catalog
// with --etcd.
func serve(ctx context.Context, args []string, stderr io.Writer) error {
	c, err := parseServeFlags(args, stderr)
	if err != nil {
		return err
	}
	if c.cluster.etcd != "" {
		return explainCatalog(c.dataDir, serveCluster(ctx, c, stderr))
	}
	return explainCatalog(c.dataDir, runServer(ctx, c, stderr, func(addr string) error {
		if c.readyFile == "" {
			return nil
		}
		return writeReadyFile(c.readyFile, addr)
	}))
}

// writeReadyFile writes the listening address to path: a plain write, so
// the ready file may be a FIFO the caller reads.
func writeReadyFile(path, addr string) error {
	return os.WriteFile(path, []byte(addr+"\n"), 0o644)
}

// loadKey reads --key-file, by default DATA/blockd.key unless
// $BLOCKXFER_KEY_FILE names one.
// A missing default key gets the command that creates it.
func (c *serveConfig) loadKey() ([]byte, error) {
	kf := c.keyFile
	if kf == "" && os.Getenv(cli.KeyEnv) == "" {
		kf = filepath.Join(c.dataDir, defaultKeyName)
		if _, err := os.Stat(kf); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no key: %s does not exist; create it with 'blockd keygen -o %s' "+
				"(clients need the same file: copy it to them, they read $%s or --key-file), or pass --key-file FILE",
				kf, cli.ShellQuote(kf), cli.KeyEnv)
		}
	}
	return cli.LoadKey(kf)
}

// runServer serves the data directory on --listen until ctx ends or the
// server fails. It calls ready with the listening address once it serves.
func runServer(ctx context.Context, c *serveConfig, stderr io.Writer, ready func(addr string) error) error {
	key, err := c.loadKey()
	if err != nil {
		return err
	}
	store, err := catalog.OpenStore(c.dataDir, nil)
	if err != nil {
		return err
	}
	defer store.Close()
	if old, err := store.Catalog().WithoutBlocks(); err == nil && len(old) > 0 {
		c.log.Info("volumes without block CRCs: reads of part of an extent read and check the whole extent; 'blockd catalog migrate' adds them",
			"volumes", len(old), "first", old[0])
	}

	l, err := net.Listen("tcp", c.listen)
	if err != nil {
		return err
	}
	defer l.Close()
	path, closePath, err := c.sendPath(ctx, l.Addr().String(), stderr)
	if err != nil {
		return err
	}
	defer closePath()

	reg := newRegistry(path)
	srv, err := engine.NewServer(engine.ServerConfig{
		Key:         key,
		Volumes:     store,
		Transport:   path.Transport,
		Name:        c.name,
		MaxSessions: c.maxSessions,
		DataConns:   c.dataConns,
		MaxInflight: int64(c.maxInflight),
		MaxReads:    c.maxReads,
		SmallRead:   cmp.Or(int64(c.smallRead), -1), // 0: none

		MaxPending:        c.maxPending,
		MaxPendingPerHost: c.maxPendingHost,
		HandshakeTimeout:  c.handshake,
		IdleTimeout:       c.idle,
		UploadStall:       c.uploadStall,
		Logger:            c.log,
		Metrics:           engine.NewMetrics(reg),
	})
	if err != nil {
		return err
	}
	if c.metricsAddr != "" {
		stop, err := serveMetrics(c.metricsAddr, reg, c.log)
		if err != nil {
			return err
		}
		defer stop()
	}
	vols, err := store.Catalog().List()
	if err != nil {
		return err
	}
	c.log.Info("serving", "addr", l.Addr().String(), "data", c.dataDir, "volumes", len(vols), "transport", path.Transport.Name(),
		"version", buildInfo.Version, "revision", buildInfo.ShortRev())
	if path.FallbackReason != "" {
		c.log.Warn("devmem unavailable, sending with tcp", "reason", path.FallbackReason)
	}
	if err := ready(l.Addr().String()); err != nil {
		return err
	}
	return c.serveUntilDone(ctx, srv, l)
}

// sendPath chooses the send transport for --devmem. The caller calls done
// when the server has stopped.
func (c *serveConfig) sendPath(ctx context.Context, listen string, stderr io.Writer) (path *choose.ServerPath, done func(), err error) {
	opts := choose.ServerOptions{Mode: c.mode, Listen: listen, Interface: c.devmemIf,
		PoolSize: int64(c.txPool), Logger: c.log}
	// The TX pool needs a dmabuf the NIC can read: a provider plugin,
	// started only if the NIC qualifies.
	opts.OpenProvider = func() (memory.Provider, error) {
		return cli.OpenProvider(ctx, c.txProvider, c.pluginDir, c.logLevel, stderr)
	}
	var pool *hostmem.Provider
	if c.mode == choose.Emulate {
		pool = hostmem.New()
		opts.EmulationPool = pool
	}
	done = func() {
		if path != nil {
			path.Close()
		}
		if pool != nil {
			pool.Close()
		}
	}
	if path, err = choose.Server(ctx, opts); err != nil {
		done()
		return nil, nil, err
	}
	return path, done, nil
}

// newRegistry returns the metrics registry: Go and process metrics and
// blockd_transport_info.
func newRegistry(path *choose.ServerPath) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "blockd_transport_info",
		Help: "The send transport blockd runs with (1), and why it is not devmem when it fell back.",
	}, []string{"transport", "fallback_reason"})
	info.WithLabelValues(path.Transport.Name(), path.FallbackReason).Set(1)
	reg.MustRegister(info)
	registerBuildInfo(reg)
	return reg
}

// serveMetrics serves reg at /metrics on addr until stop is called.
func serveMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) (stop func(), err error) {
	ml, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ml)
	log.Info("metrics", "addr", ml.Addr().String())
	return func() { hs.Close() }, nil
}

// serveUntilDone serves l until the server fails or ctx ends; then it lets
// reads in flight finish for up to --shutdown-timeout. It returns an error,
// so blockd exits non-zero, when the timeout cut reads or uploads off.
func (c *serveConfig) serveUntilDone(ctx context.Context, srv *engine.Server, l net.Listener) error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		srv.Close()
		return err
	case <-ctx.Done():
	}
	c.log.Info("shutting down: finishing reads in flight", "timeout", c.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-served
	var cut *engine.ShutdownError
	if errors.As(err, &cut) {
		// The clients of these reads saw them fail (shutting-down).
		c.log.Error("stopped, cutting off work in flight after --shutdown-timeout",
			"timeout", c.shutdownTimeout, "reads", cut.Reads, "uploads", cut.Uploads, "sessions", cut.Sessions)
		return fmt.Errorf("shutdown cut off %d reads and %d uploads after %s (raise --shutdown-timeout to let them finish)",
			cut.Reads, cut.Uploads, c.shutdownTimeout)
	}
	if err != nil {
		return err
	}
	c.log.Info("stopped: every read in flight finished")
	return nil
}
