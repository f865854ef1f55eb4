package providers

import (
	"fmt"
	"os"
	"sync/atomic"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/blockxfer/blockxfer/providers/internal/fdpass"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// Serve runs impl as a provider plugin; call it from a plugin's main. It
// checks that the process was started by a blockxfer host (the handshake's
// magic cookie and the side socket on fd 3), serves the Provider gRPC
// service through go-plugin, and returns after the host has stopped the
// plugin and impl has been closed; main should then return.
//
// The plugin exits at once (status 0) if the host goes away without stopping
// it: the side socket reaching EOF means the host closed it or died. Run
// directly, Serve prints an explanation to stderr and exits with status 1.
// Nothing may write to stdout.
func Serve(impl memory.Provider, cfg *ServeConfig) {
	if os.Getenv(Handshake.MagicCookieKey) != Handshake.MagicCookieValue {
		fmt.Fprintf(os.Stderr, "%s is a blockxfer provider plugin (%s): it is started by the blockxfer engine, not run directly.\n", os.Args[0], impl.Name())
		os.Exit(1)
	}
	logger := cfg.logger(impl.Name())
	f, err := fdpass.FromFD(sideFD)
	if err != nil {
		logger.Error("no side socket on fd 3: this plugin must be started by a blockxfer host", "error", err)
		os.Exit(1)
	}
	fds, err := fdpass.New(f, fdpass.Options{
		Accept: fdpass.KindStaging,
		Logf:   func(format string, args ...any) { logger.Warn(fmt.Sprintf(format, args...)) },
	})
	if err != nil {
		logger.Error("side socket", "error", err)
		os.Exit(1)
	}
	var stopping atomic.Bool
	go func() {
		<-fds.Done()
		if !stopping.Load() {
			logger.Info("host closed the side socket; exiting", "reason", fds.Err())
			os.Exit(0)
		}
	}()

	pp := &ProviderPlugin{Impl: impl, fds: fds, logger: logger}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         PluginMap(pp),
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, grpc.InitialWindowSize(grpcWindow), grpc.InitialConnWindowSize(grpcWindow))...)
		},
		Logger: logger,
	})
	stopping.Store(true)
	if pp.server != nil {
		pp.server.stopRing()
	}
	if err := impl.Close(); err != nil {
		logger.Warn("close provider", "error", err)
	}
	if pp.server != nil {
		pp.server.releaseStaging()
	}
	fds.Close()
}
