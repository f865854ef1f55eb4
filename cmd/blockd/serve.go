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
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/internal/cli"
	"github.com/blockxfer/blockxfer/transport/tcp"
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
	if _, err := cli.Parse(fs, args, 0, "--data DIR --listen ADDR"); err != nil {
		return usageErr(err)
	}
	if *dataDir == "" {
		return usageErr(errors.New("--data is required"))
	}
	log, err := cli.NewLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return usageErr(err)
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

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := engine.NewServer(engine.ServerConfig{
		Key:         key,
		Store:       store,
		Transport:   &tcp.Transport{},
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
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if *metricsAddr != "" {
		ml, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			l.Close()
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
		l.Close()
		return err
	}
	log.Info("serving", "addr", l.Addr().String(), "data", *dataDir, "volumes", len(vols), "transport", engine.TransportTCP)
	if *readyFile != "" {
		// A plain write, so the ready file may be a FIFO the caller reads.
		if err := os.WriteFile(*readyFile, []byte(l.Addr().String()+"\n"), 0o644); err != nil {
			l.Close()
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
