package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
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

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("blockd serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", "", "data directory holding catalog.db and volumes/ (required)")
	listen := fs.String("listen", "127.0.0.1:7070", "address for control and data connections")
	keyFile := fs.String("key-file", "", "pre-shared key file (default DATA/"+defaultKeyName+" or $"+cli.KeyEnv+")")
	metricsAddr := fs.String("metrics", "", "address to serve Prometheus /metrics on (off if empty)")
	name := fs.String("name", "", "server name shown to clients (default hostname)")
	maxSessions := fs.Int("max-sessions", 256, "most concurrent client sessions")
	dataConns := fs.Int("data-conns", 16, "most data connections per session")
	var maxInflight cli.SizeFlag = 256 << 20
	fs.Var(&maxInflight, "max-inflight", "most payload bytes in flight per session")
	shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "how long SIGTERM lets reads in flight finish")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	readyFile := fs.String("ready-file", "", "write the listening address to this file once serving")
	devmemMode := fs.String("devmem", "auto", "devmem send: auto (fall back to tcp, saying why), off, require, or emulate (software NIC)")
	devmemIf := fs.String("devmem-if", "", "NIC to send devmem on (default: the one owning the --listen address)")
	txProvider := fs.String("tx-provider", "udmabuf", "provider plugin whose dmabuf holds the devmem TX pool")
	pluginDir := fs.String("plugin-dir", "", "plugin directory (default $"+cli.PluginDirEnv+" or blockd's own directory)")
	var txPool cli.SizeFlag = 64 << 20
	fs.Var(&txPool, "tx-pool", "devmem TX buffer pool size")
	if _, err := cli.Parse(fs, args, 0, "--data DIR --listen ADDR"); err != nil {
		return cli.UsageErr(err)
	}
	if *dataDir == "" {
		return cli.UsageErr(errors.New("--data is required"))
	}
	mode, err := choose.ParseMode(*devmemMode)
	if err != nil {
		return cli.UsageErr(err)
	}
	log, err := cli.NewLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return cli.UsageErr(err)
	}
	kf := *keyFile
	if kf == "" && os.Getenv(cli.KeyEnv) == "" {
		kf = filepath.Join(*dataDir, defaultKeyName)
	}
	key, err := cli.LoadKey(kf)
	if err != nil {
		return err
	}
	store, err := catalog.OpenStore(*dataDir, nil)
	if err != nil {
		return err
	}
	defer store.Close()

	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	defer l.Close()
	opts := choose.ServerOptions{Mode: mode, Listen: l.Addr().String(), Interface: *devmemIf,
		PoolSize: int64(txPool), Logger: log}
	// The TX pool needs a dmabuf the NIC can read: a provider plugin,
	// started only if the NIC qualifies.
	opts.OpenProvider = func() (memory.Provider, error) {
		return cli.OpenProvider(ctx, *txProvider, *pluginDir, *logLevel, stderr)
	}
	if mode == choose.Emulate {
		pool := hostmem.New()
		defer pool.Close()
		opts.EmulationPool = pool
	}
	path, err := choose.Server(ctx, opts)
	if err != nil {
		return err
	}
	defer path.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "blockd_transport_info",
		Help: "The send transport blockd runs with (1), and why it is not devmem when it fell back.",
	}, []string{"transport", "fallback_reason"})
	info.WithLabelValues(path.Transport.Name(), path.FallbackReason).Set(1)
	reg.MustRegister(info)
	srv, err := engine.NewServer(engine.ServerConfig{
		Key:         key,
		Volumes:     store,
		Transport:   path.Transport,
		Name:        *name,
		MaxSessions: *maxSessions,
		DataConns:   *dataConns,
		MaxInflight: int64(maxInflight),
		Logger:      log,
		Metrics:     engine.NewMetrics(reg),
	})
	if err != nil {
		return err
	}
	if *metricsAddr != "" {
		ml, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(ml)
		defer hs.Close()
		log.Info("metrics", "addr", ml.Addr().String())
	}
	vols, err := store.Catalog().List()
	if err != nil {
		return err
	}
	log.Info("serving", "addr", l.Addr().String(), "data", *dataDir, "volumes", len(vols), "transport", path.Transport.Name())
	if path.FallbackReason != "" {
		log.Warn("devmem unavailable, sending with tcp", "reason", path.FallbackReason)
	}
	if *readyFile != "" {
		// A plain write, so the ready file may be a FIFO the caller reads.
		if err := os.WriteFile(*readyFile, []byte(l.Addr().String()+"\n"), 0o644); err != nil {
			return err
		}
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		srv.Close()
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing reads in flight", "timeout", *shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown timed out: reads still in flight were failed", "err", err)
	}
	<-served
	log.Info("stopped")
	return nil
}
