package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/ec"
)

// clusterFlags are the flags `blockd serve` takes to join the cluster
// catalog.
type clusterFlags struct {
	etcd      string        // --etcd ENDPOINTS
	id        string        // --server-id ID (default: the advertised address)
	advertise string        // --advertise ADDR (default: the listening address)
	ttl       time.Duration // --etcd-ttl D
}

// addFlags adds the cluster flags to serve's flag set.
func (cf *clusterFlags) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&cf.etcd, "etcd", "", "etcd endpoints of the cluster catalog to register this server in (off if empty)")
	fs.StringVar(&cf.id, "server-id", "", "id to register under, with --etcd (default: the advertised address)")
	fs.StringVar(&cf.advertise, "advertise", "", "address clients dial, registered with --etcd (default: the listening address)")
	fs.DurationVar(&cf.ttl, "etcd-ttl", ec.DefaultTTL, "lease of the registration: a server that dies drops out of the catalog after this long (at least 1s)")
}

// check reports flags that do not go together.
func (cf *clusterFlags) check() error {
	if cf.ttl < time.Second {
		return fmt.Errorf("--etcd-ttl %q: want a duration of at least 1s", cf.ttl.String())
	}
	if cf.etcd == "" && (cf.id != "" || cf.advertise != "") {
		return errors.New("--server-id and --advertise need --etcd")
	}
	return nil
}

// advertised returns the address to register for a server listening on
// addr: --advertise, else addr if clients can dial it.
func (cf *clusterFlags) advertised(addr string) (string, error) {
	if cf.advertise != "" {
		return cf.advertise, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		return "", fmt.Errorf("register in etcd: listening on %s, which clients cannot dial; give --advertise", addr)
	}
	return addr, nil
}

// serveCluster runs `blockd serve --etcd`. The server registers itself (id,
// address) in the cluster catalog under a lease it keeps alive once it
// listens, and deregisters when it stops; a server that dies drops out when
// the lease expires (--etcd-ttl, default 10s). The ready file is written
// once the server is registered.
func serveCluster(ctx context.Context, c *serveConfig, stderr io.Writer) error {
	log, err := cli.NewLogger(stderr, "text", "info")
	if err != nil {
		return err
	}
	cluster, err := ec.Connect(ctx, c.cluster.etcd)
	if err != nil {
		return err
	}
	defer cluster.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	listening := make(chan string, 1)
	registered := make(chan error, 1)
	go func() {
		err := register(ctx, cluster, c.cluster, listening, c.readyFile, log)
		if err != nil && ctx.Err() == nil {
			log.Error("stopping: cannot register in etcd", "err", err)
			cancel()
		}
		registered <- err
	}()
	err = runServer(ctx, c, stderr, func(addr string) error {
		listening <- addr
		return nil
	})
	cancel()
	if rerr := <-registered; err == nil && rerr != nil && !errors.Is(rerr, context.Canceled) {
		err = rerr
	}
	return err
}

// register waits for the server's address on listening, registers the
// server and keeps it registered (registering again, every half lease, if
// the lease is lost) until ctx ends, then deregisters. It writes the
// address to readyFile, if set, once registered. Only a failure of the
// first registration is returned.
func register(ctx context.Context, cluster *ec.Cluster, cf clusterFlags, listening <-chan string, readyFile string, log *slog.Logger) error {
	var addr string
	select {
	case addr = <-listening:
	case <-ctx.Done():
		return nil // the server stopped before listening; it reports why
	}
	adv, err := cf.advertised(addr)
	if err != nil {
		return err
	}
	id := cmp.Or(cf.id, adv)
	for first := true; ; first = false {
		reg, err := cluster.Register(ctx, id, adv, cf.ttl)
		if err != nil {
			if first || ctx.Err() != nil {
				return err
			}
			log.Warn("register in etcd", "id", id, "err", err)
			if !sleep(ctx, cf.ttl/2) {
				return nil
			}
			continue
		}
		log.Info("registered in etcd", "id", id, "addr", adv, "ttl", cf.ttl)
		if readyFile != "" {
			if err := writeReadyFile(readyFile, addr); err != nil {
				reg.Close()
				return err
			}
			readyFile = ""
		}
		if !holdRegistration(ctx, reg, id, log) {
			return nil
		}
	}
}

// holdRegistration waits until ctx ends, then deregisters and returns
// false, or until the registration is lost, and returns true.
func holdRegistration(ctx context.Context, reg *ec.Registration, id string, log *slog.Logger) bool {
	select {
	case <-ctx.Done():
		if err := reg.Close(); err != nil {
			log.Warn("deregister", "err", err)
		}
		return false
	case <-reg.Done():
		log.Warn("etcd registration lost; registering again", "id", id)
		return true
	}
}

// sleep waits for d; it returns false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
