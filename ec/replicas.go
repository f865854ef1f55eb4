package ec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/blockxfer/blockxfer/catalog"
)

// Replicas records a plain volume that several servers hold whole: the
// same bytes, written to each (blockcat put --replicas), each copy under
// the generation its server gave it. A reader may read any holder and fail
// over to another; a holder whose volume has another generation now holds
// other bytes and is not read.
type Replicas struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// ExtentSize is the extent size every copy was written with.
	ExtentSize int64 `json:"extent_size"`
	// Holders are the servers holding a copy, each with the generation
	// of its copy.
	Holders []ManifestServer `json:"holders"`
}

// MaxReplicas bounds the holders of a replicated volume.
const MaxReplicas = 16

// ErrNoReplicas: the cluster catalog records no replicated volume of that
// name.
var ErrNoReplicas = errors.New("no such replicated volume")

// replicasFormat is the version of the encoding of a Replicas record.
const replicasFormat = 1

// replicasRecord is a Replicas as etcd stores it.
type replicasRecord struct {
	Format int `json:"format"`
	Replicas
}

// Validate checks the record's bounds: a valid name, a size and extent size
// a catalog accepts, 1 to MaxReplicas holders with addresses, ids and
// generations, no server twice.
func (r *Replicas) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("ec: replicas of %q: %s: %w", r.Name, fmt.Sprintf(format, args...), ErrManifest)
	}
	if err := catalog.ValidName(r.Name); err != nil {
		return bad("%v", err)
	}
	if err := catalog.CheckGeometry(r.Size, r.ExtentSize); err != nil {
		return bad("%v", err)
	}
	if len(r.Holders) < 1 || len(r.Holders) > MaxReplicas {
		return bad("%d holders, want 1 to %d", len(r.Holders), MaxReplicas)
	}
	seen := make(map[string]bool, len(r.Holders))
	for _, h := range r.Holders {
		switch {
		case h.ID == "" || h.Addr == "" || len(h.ID) > 255 || len(h.Addr) > 255:
			return bad("holder %q at %q: want an id and an address of 1 to 255 bytes", h.ID, h.Addr)
		case h.Generation == 0:
			return bad("holder %s: generation 0", h.ID)
		case seen[h.ID]:
			return bad("holder %s twice", h.ID)
		}
		seen[h.ID] = true
	}
	return nil
}

// MarshalReplicas encodes r for the cluster catalog.
func MarshalReplicas(r *Replicas) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(replicasRecord{Format: replicasFormat, Replicas: *r})
}

// UnmarshalReplicas decodes and validates a record MarshalReplicas wrote.
func UnmarshalReplicas(b []byte) (*Replicas, error) {
	var rec replicasRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("ec: replicas record: %w: %w", err, ErrManifest)
	}
	if rec.Format != replicasFormat {
		return nil, fmt.Errorf("ec: replicas record of format %d, this build reads %d: %w", rec.Format, replicasFormat, ErrManifest)
	}
	if err := rec.Validate(); err != nil {
		return nil, err
	}
	return &rec.Replicas, nil
}

func (c *Cluster) replicasKey(name string) string { return c.prefix + "replicas/" + name }

// PutReplicas records the replicated volume r, replacing any record of
// that name. It refuses a name a striped volume has.
func (c *Cluster) PutReplicas(ctx context.Context, r *Replicas) error {
	b, err := MarshalReplicas(r)
	if err != nil {
		return err
	}
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Version(c.manifestKey(r.Name)), "=", 0)).
		Then(clientv3.OpPut(c.replicasKey(r.Name), string(b))).
		Commit()
	if err != nil {
		return fmt.Errorf("ec: put replicas of %s: %w", r.Name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("ec: put replicas of %s: a striped volume has that name: %w", r.Name, ErrConflict)
	}
	return nil
}

// GetReplicas returns the record of the replicated volume name, or an
// error wrapping ErrNoReplicas.
func (c *Cluster) GetReplicas(ctx context.Context, name string) (*Replicas, error) {
	if err := catalog.ValidName(name); err != nil {
		return nil, fmt.Errorf("ec: get replicas: %w", err)
	}
	resp, err := c.cli.Get(ctx, c.replicasKey(name))
	if err != nil {
		return nil, fmt.Errorf("ec: get replicas of %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("ec: get replicas of %s: %w", name, ErrNoReplicas)
	}
	r, err := UnmarshalReplicas(resp.Kvs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("ec: get replicas of %s: %w", name, err)
	}
	return r, nil
}

// CurrentAddrs returns the holders' addresses, in order, each as the
// cluster catalog has its server registered now (a server that moved is
// found at its new address), or as recorded where it is not registered.
func (c *Cluster) CurrentAddrs(ctx context.Context, holders []ManifestServer) ([]string, error) {
	reg, err := c.Servers(ctx)
	if err != nil {
		return nil, err
	}
	now := make(map[string]string, len(reg))
	for _, s := range reg {
		now[s.ID] = s.Addr
	}
	out := make([]string, len(holders))
	for i, h := range holders {
		out[i] = h.Addr
		if a, ok := now[h.ID]; ok {
			out[i] = a
		}
	}
	return out, nil
}
