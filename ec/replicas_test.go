package ec

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"
)

func testReplicas() *Replicas {
	return &Replicas{Name: "weights", Size: 10 << 20, ExtentSize: 4 << 20, Holders: []ManifestServer{
		{ID: "s1", Addr: "10.0.0.1:7070", Generation: 3},
		{ID: "s2", Addr: "10.0.0.2:7070", Generation: 7},
	}}
}

// TestReplicasRecord: a record round-trips; a bad one is refused with
// ErrManifest naming what is wrong.
func TestReplicasRecord(t *testing.T) {
	r := testReplicas()
	b, err := MarshalReplicas(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalReplicas(b)
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for name, spoil := range map[string]func(*Replicas){
		"no holders":   func(r *Replicas) { r.Holders = nil },
		"twice":        func(r *Replicas) { r.Holders[1].ID = "s1" },
		"generation 0": func(r *Replicas) { r.Holders[0].Generation = 0 },
		"no address":   func(r *Replicas) { r.Holders[0].Addr = "" },
		"bad name":     func(r *Replicas) { r.Name = "../x" },
		"bad extent":   func(r *Replicas) { r.ExtentSize = 1000 },
	} {
		r := testReplicas()
		spoil(r)
		if _, err := MarshalReplicas(r); !errors.Is(err, ErrManifest) {
			t.Errorf("%s: %v, want ErrManifest", name, err)
		}
	}
	if _, err := UnmarshalReplicas([]byte(`{"format":2}`)); !errors.Is(err, ErrManifest) {
		t.Errorf("another format: %v", err)
	}
}

// FuzzReplicas: any bytes in etcd decode to a valid record or an error
// wrapping ErrManifest, and a record that decodes encodes again.
func FuzzReplicas(f *testing.F) {
	b, _ := MarshalReplicas(testReplicas())
	f.Add(b)
	f.Add([]byte(`{"format":1,"name":"v","size":1,"extent_size":4096,"holders":[{"id":"a","addr":"b","generation":1}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := UnmarshalReplicas(b)
		if err != nil {
			if !errors.Is(err, ErrManifest) {
				t.Fatalf("error %v does not wrap ErrManifest", err)
			}
			return
		}
		if _, err := MarshalReplicas(r); err != nil {
			t.Fatalf("a decoded record does not encode: %v", err)
		}
	})
}

// TestClusterReplicas: a replicated volume's record is stored, read back
// and replaced; a name a striped volume has is refused; a holder that moved
// is found at its registered address.
func TestClusterReplicas(t *testing.T) {
	ep := startEtcd(t)
	ctx := context.Background()
	c, err := Connect(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.GetReplicas(ctx, "weights"); !errors.Is(err, ErrNoReplicas) {
		t.Fatalf("no record: %v", err)
	}
	r := testReplicas()
	if err := c.PutReplicas(ctx, r); err != nil {
		t.Fatal(err)
	}
	r.Holders[0].Generation = 4
	if err := c.PutReplicas(ctx, r); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetReplicas(ctx, "weights")
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("get: %+v, %v", got, err)
	}

	m := sampleManifest()
	m.Name, m.Generation = "striped", 1
	if err := c.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	r.Name = "striped"
	if err := c.PutReplicas(ctx, r); !errors.Is(err, ErrConflict) {
		t.Fatalf("replicas under a striped volume's name: %v, want ErrConflict", err)
	}
	m.Name = "weights"
	if err := c.PutManifest(ctx, m); !errors.Is(err, ErrConflict) {
		t.Fatalf("a striped volume under a replicated volume's name: %v, want ErrConflict", err)
	}

	reg, err := c.Register(ctx, "s2", "10.0.0.9:7070", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	addrs, err := c.CurrentAddrs(ctx, r.Holders)
	if err != nil || !reflect.DeepEqual(addrs, []string{"10.0.0.1:7070", "10.0.0.9:7070"}) {
		t.Fatalf("current addresses: %v, %v", addrs, err)
	}
}
