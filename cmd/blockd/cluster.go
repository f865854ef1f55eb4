package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/ec"
)

// clusterFlags are the flags `blockd serve` takes for the cluster catalog,
// on top of serve's own.
type clusterFlags struct {
	etcd      string        // --etcd ENDPOINTS
	id        string        // --server-id ID (default: the advertised address)
	advertise string        // --advertise ADDR (default: the listening address)
	ttl       time.Duration // --etcd-ttl D
	readyFile string        // serve's --ready-file, taken over
}

// splitClusterFlags takes the cluster flags out of serve's arguments and
// returns the rest. It accepts "--flag value" and "--flag=value", with one
// or two dashes.
func splitClusterFlags(args []string) (clusterFlags, []string, error) {
	cf := clusterFlags{ttl: ec.DefaultTTL}
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || a == "--" {
			rest = append(rest, a)
			continue
		}
		var dst *string
		switch name {
		case "etcd":
			dst = &cf.etcd
		case "server-id":
			dst = &cf.id
		case "advertise":
			dst = &cf.advertise
		case "etcd-ttl", "ready-file":
		default:
			rest = append(rest, a)
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return cf, nil, fmt.Errorf("flag needs an argument: %s", a)
			}
			i++
			val = args[i]
		}
		switch name {
		case "etcd-ttl":
			d, err := time.ParseDuration(val)
			if err != nil || d < time.Second {
				return cf, nil, fmt.Errorf("--etcd-ttl %q: want a duration of at least 1s", val)
			}
			cf.ttl = d
		case "ready-file":
			cf.readyFile = val
		default:
			*dst = val
		}
	}
	return cf, rest, nil
}

// serveCluster runs `blockd serve`. With --etcd the server registers itself
// (id, address) in the cluster catalog under a lease it keeps alive once
// it listens, and deregisters when it stops; a server that dies drops out
// when the lease expires (--etcd-ttl, default 10s).
func serveCluster(ctx context.Context, args []string, stderr io.Writer) error {
	cf, rest, err := splitClusterFlags(args)
	if err != nil {
		return cli.UsageErr(err)
	}
	if cf.readyFile != "" {
		rest = append(rest, "--ready-file", cf.readyFile)
	}
	if cf.etcd == "" {
		if cf.id != "" || cf.advertise != "" {
			return cli.UsageErr(errors.New("--server-id and --advertise need --etcd"))
		}
		return serve(ctx, rest, stderr)
	}
	log, err := cli.NewLogger(stderr, "text", "info")
	if err != nil {
		return err
	}
	cluster, err := ec.Connect(ctx, cf.etcd)
	if err != nil {
		return err
	}
	defer cluster.Close()

	// serve reports its address by writing its ready file; a pipe stands
	// in for it, so registration happens once the server listens.
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	rest = append(rest, "--ready-file", fmt.Sprintf("/proc/self/fd/%d", pw.Fd()))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	registered := make(chan error, 1)
	go func() {
		err := register(ctx, cluster, cf, pr, log)
		if err != nil && ctx.Err() == nil {
			log.Error("stopping: cannot register in etcd", "err", err)
			cancel()
		}
		registered <- err
	}()
	err = serve(ctx, rest, stderr)
	pw.Close()
	cancel()
	if rerr := <-registered; err == nil && rerr != nil && !errors.Is(rerr, context.Canceled) {
		err = rerr
	}
	return err
}

// register waits for serve's address on ready, registers the server and
// keeps it registered (registering again, every half lease, if the lease is
// lost) until ctx ends, then deregisters. It forwards the address to the
// user's ready file once registered. Only a failure of the first
// registration is returned.
func register(ctx context.Context, cluster *ec.Cluster, cf clusterFlags, ready io.Reader, log *slog.Logger) error {
	line, err := bufio.NewReader(ready).ReadString('\n')
	if err != nil {
		return nil // serve stopped before listening; it reports why
	}
	addr := strings.TrimSpace(line)
	adv := cf.advertise
	if adv == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return err
		}
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			return fmt.Errorf("register in etcd: listening on %s, which clients cannot dial; give --advertise", addr)
		}
		adv = addr
	}
	id := cf.id
	if id == "" {
		id = adv
	}
	for first := true; ; first = false {
		reg, err := cluster.Register(ctx, id, adv, cf.ttl)
		if err != nil {
			if first || ctx.Err() != nil {
				return err
			}
			log.Warn("register in etcd", "id", id, "err", err)
			retry := time.NewTimer(cf.ttl / 2)
			select {
			case <-ctx.Done():
				retry.Stop()
				return nil
			case <-retry.C:
			}
			continue
		}
		log.Info("registered in etcd", "id", id, "addr", adv, "ttl", cf.ttl)
		if cf.readyFile != "" {
			if err := os.WriteFile(cf.readyFile, []byte(addr+"\n"), 0o644); err != nil {
				reg.Close()
				return err
			}
			cf.readyFile = ""
		}
		select {
		case <-ctx.Done():
			if err := reg.Close(); err != nil {
				log.Warn("deregister", "err", err)
			}
			return nil
		case <-reg.Done():
			log.Warn("etcd registration lost; registering again", "id", id)
		}
	}
}
