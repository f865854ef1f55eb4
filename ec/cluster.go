package ec

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/blockxfer/blockxfer/catalog"
)

// Cluster keys in etcd (docs/erasure-coding.md section 5).
const (
	// DefaultPrefix starts every key the cluster catalog writes.
	DefaultPrefix = "/blockxfer/"
	// DefaultTTL is the lease a registered server keeps alive.
	DefaultTTL = 10 * time.Second
)

// Cluster errors.
var (
	// ErrConflict: a manifest was changed by someone else since it was
	// read (its generation is not the one the update follows).
	ErrConflict = errors.New("manifest changed concurrently")
	// ErrNoManifest: no manifest of that name in the cluster catalog.
	ErrNoManifest = errors.New("no such striped volume")
)

// Cluster is the cluster catalog in etcd: the registry of live blockd
// servers and the manifests of striped volumes. Each blockd keeps its own
// bbolt catalog of the shard volumes it stores.
type Cluster struct {
	cli    *clientv3.Client
	prefix string
}

// Connect opens the cluster catalog at the etcd endpoints (comma-separated
// host:port or URLs) and checks that it answers before ctx ends.
func Connect(ctx context.Context, endpoints string) (*Cluster, error) {
	eps := strings.Split(endpoints, ",")
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("ec: connect to etcd %s: %w", endpoints, err)
	}
	c := &Cluster{cli: cli, prefix: DefaultPrefix}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Get(cctx, c.prefix+"servers/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, fmt.Errorf("ec: connect to etcd %s: %w", endpoints, err)
	}
	return c, nil
}

// Close closes the connection to etcd.
func (c *Cluster) Close() error { return c.cli.Close() }

// Registration is a server's entry in the registry, alive while its lease
// is kept alive.
type Registration struct {
	c     *Cluster
	lease clientv3.LeaseID
	stop  context.CancelFunc
	done  chan struct{}
}

// Register adds server id at addr to the registry under a lease of ttl
// (DefaultTTL if 0) and keeps the lease alive until Close or until etcd
// cannot be reached for longer than ttl; then Done closes. A server that
// dies drops out of the registry when its lease expires.
func (c *Cluster) Register(ctx context.Context, id, addr string, ttl time.Duration) (*Registration, error) {
	if id == "" || len(id) > catalog.MaxNameLen || strings.Contains(id, "/") {
		return nil, fmt.Errorf("ec: register %q: id must be 1..%d bytes without '/'", id, catalog.MaxNameLen)
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	lease, err := c.cli.Grant(ctx, int64(max(1, ttl/time.Second)))
	if err != nil {
		return nil, fmt.Errorf("ec: register %s: lease: %w", id, err)
	}
	if _, err := c.cli.Put(ctx, c.prefix+"servers/"+id, addr, clientv3.WithLease(lease.ID)); err != nil {
		c.cli.Revoke(context.WithoutCancel(ctx), lease.ID)
		return nil, fmt.Errorf("ec: register %s: %w", id, err)
	}
	kctx, stop := context.WithCancel(context.Background())
	ch, err := c.cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		stop()
		c.cli.Revoke(context.WithoutCancel(ctx), lease.ID)
		return nil, fmt.Errorf("ec: register %s: keepalive: %w", id, err)
	}
	r := &Registration{c: c, lease: lease.ID, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for range ch {
		}
	}()
	return r, nil
}

// Done is closed when the registration ended: Close was called, or the
// lease could not be kept alive.
func (r *Registration) Done() <-chan struct{} { return r.done }

// Close stops the keepalive and revokes the lease, removing the server from
// the registry at once.
func (r *Registration) Close() error {
	r.stop()
	<-r.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.c.cli.Revoke(ctx, r.lease); err != nil {
		return fmt.Errorf("ec: unregister: %w", err)
	}
	return nil
}

// Servers returns the registered servers, sorted by id.
func (c *Cluster) Servers(ctx context.Context) ([]ManifestServer, error) {
	resp, err := c.cli.Get(ctx, c.prefix+"servers/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("ec: list servers: %w", err)
	}
	var out []ManifestServer
	for _, kv := range resp.Kvs {
		out = append(out, ManifestServer{ID: strings.TrimPrefix(string(kv.Key), c.prefix+"servers/"), Addr: string(kv.Value)})
	}
	return out, nil
}

// ResolveServers returns the servers at addrs, in order, each with the id
// it is registered under in the cluster catalog, or with its address as its
// id when no registered server has that address. With no addrs it returns
// every registered server, sorted by id.
//
// A nil Cluster stands for no cluster catalog: every server is named by its
// address, and no addrs give no servers.
func (c *Cluster) ResolveServers(ctx context.Context, addrs []string) ([]ManifestServer, error) {
	var reg []ManifestServer
	if c != nil {
		var err error
		if reg, err = c.Servers(ctx); err != nil {
			return nil, err
		}
		if len(addrs) == 0 {
			return reg, nil
		}
	}
	ids := make(map[string]string, len(reg))
	for _, r := range reg {
		ids[r.Addr] = r.ID // of two servers at one address, the later id wins
	}
	out := make([]ManifestServer, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, ManifestServer{ID: cmp.Or(ids[a], a), Addr: a})
	}
	return out, nil
}

// Spares returns the servers that may take the shards of a lost server of
// the striped volume m (see ScrubConfig.Spares): the servers at addrs,
// resolved as ResolveServers does, or, with no addrs, every registered
// server that is not one of m's servers. On a nil Cluster no addrs give no
// spares.
func (c *Cluster) Spares(ctx context.Context, m *Manifest, addrs []string) ([]ManifestServer, error) {
	servers, err := c.ResolveServers(ctx, addrs)
	if err != nil || len(addrs) > 0 {
		return servers, err
	}
	return slices.DeleteFunc(servers, func(r ManifestServer) bool {
		return slices.ContainsFunc(m.Servers, func(s ManifestServer) bool { return s.ID == r.ID })
	}), nil
}

func (c *Cluster) manifestKey(name string) string { return c.prefix + "manifests/" + name }

// GetManifest returns the manifest of the striped volume name, or an error
// wrapping ErrNoManifest.
func (c *Cluster) GetManifest(ctx context.Context, name string) (*Manifest, error) {
	m, _, err := c.getManifest(ctx, name)
	return m, err
}

func (c *Cluster) getManifest(ctx context.Context, name string) (*Manifest, int64, error) {
	if err := catalog.ValidName(name); err != nil {
		return nil, 0, fmt.Errorf("ec: get manifest: %w", err)
	}
	resp, err := c.cli.Get(ctx, c.manifestKey(name))
	if err != nil {
		return nil, 0, fmt.Errorf("ec: get manifest %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("ec: get manifest %s: %w", name, ErrNoManifest)
	}
	m, err := UnmarshalManifest(resp.Kvs[0].Value)
	if err != nil {
		return nil, 0, fmt.Errorf("ec: get manifest %s: %w", name, err)
	}
	return m, resp.Kvs[0].ModRevision, nil
}

// PutManifest stores m, atomically: a manifest of generation 1 only if the
// name is free, any other only over the stored manifest of generation
// m.Generation-1. Otherwise it fails with ErrConflict and changes nothing.
func (c *Cluster) PutManifest(ctx context.Context, m *Manifest) error {
	b, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	key := c.manifestKey(m.Name)
	// A replicated volume may not have the name either.
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.Version(c.replicasKey(m.Name)), "=", 0)}
	if m.Generation <= 1 {
		cmps = append(cmps, clientv3.Compare(clientv3.Version(key), "=", 0))
	} else {
		old, rev, err := c.getManifest(ctx, m.Name)
		if err != nil {
			return err
		}
		if old.Generation != m.Generation-1 {
			return fmt.Errorf("ec: put manifest %s generation %d: stored generation is %d: %w", m.Name, m.Generation, old.Generation, ErrConflict)
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", rev))
	}
	resp, err := c.cli.Txn(ctx).If(cmps...).Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("ec: put manifest %s: %w", m.Name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("ec: put manifest %s generation %d: changed meanwhile, or a replicated volume has that name: %w",
			m.Name, m.Generation, ErrConflict)
	}
	return nil
}

// ListManifests returns the names of the striped volumes, sorted.
func (c *Cluster) ListManifests(ctx context.Context) ([]string, error) {
	p := c.prefix + "manifests/"
	resp, err := c.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("ec: list manifests: %w", err)
	}
	var names []string
	for _, kv := range resp.Kvs {
		names = append(names, strings.TrimPrefix(string(kv.Key), p))
	}
	return names, nil
}
