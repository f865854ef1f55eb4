package ec

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io/fs"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func sampleManifest() *Manifest {
	m := &Manifest{Name: "models", Size: 10<<20 + 5, K: 4, M: 2, Unit: 1 << 20, Placement: PlacementRotate, Generation: 3}
	for i := range 7 {
		m.Servers = append(m.Servers, ManifestServer{ID: "s" + string(rune('a'+i)), Addr: "10.0.0." + string(rune('1'+i)) + ":7070", Generation: uint64(i * 2)})
	}
	l := m.Layout()
	for k := range l.Stripes() * int64(l.Shards()) {
		m.CRCs = append(m.CRCs, uint32(k)*2654435761)
	}
	return m
}

func TestManifestRoundTrip(t *testing.T) {
	m := sampleManifest()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip:\n%+v\n%+v", got, m)
	}
	path := filepath.Join(t.TempDir(), "m")
	if err := WriteManifestFile(path, m); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadManifestFile(path); err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("file round trip: %v", err)
	}
}

// resum fixes the trailing checksum of an edited encoding.
func resum(b []byte) []byte {
	b = bytes.Clone(b)
	binary.BigEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], castagnoli))
	return b
}

func TestManifestRejects(t *testing.T) {
	good, err := sampleManifest().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	nameAt := 5
	sizeAt := nameAt + 2 + len("models")
	kAt := sizeAt + 8
	cases := map[string][]byte{
		"empty":          nil,
		"magic":          resum(append([]byte("XXEC"), good[4:]...)),
		"version":        resum(append(append([]byte("BXEC"), 2), good[5:]...)),
		"checksum":       append(bytes.Clone(good[:len(good)-1]), good[len(good)-1]^1),
		"truncated":      resum(good[:len(good)-8]),
		"trailing":       resum(append(bytes.Clone(good), 0, 0, 0, 0)),
		"k zero":         resum(append(append(bytes.Clone(good[:kAt]), 0, 0), good[kAt+2:]...)),
		"size zero":      resum(append(append(bytes.Clone(good[:sizeAt]), make([]byte, 8)...), good[sizeAt+8:]...)),
		"negative size":  resum(append(append(bytes.Clone(good[:sizeAt]), 0x80, 0, 0, 0, 0, 0, 0, 1), good[sizeAt+8:]...)),
		"bad name":       resum(append(append(bytes.Clone(good[:nameAt+2]), "../x.."...), good[nameAt+2+6:]...)),
		"huge count":     resum(append(bytes.Clone(good[:len(good)-4-4*len(sampleManifest().CRCs)-4]), 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0)),
		"too big":        make([]byte, MaxManifestLen+1),
		"only the magic": []byte("BXEC"),
	}
	for name, b := range cases {
		if m, err := UnmarshalManifest(b); !errors.Is(err, ErrManifest) || m != nil {
			t.Errorf("%s: UnmarshalManifest = %v, %v; want ErrManifest", name, m, err)
		}
	}
	bad := sampleManifest()
	bad.Servers[1].ID = bad.Servers[0].ID
	if _, err := bad.MarshalBinary(); !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate server: %v", err)
	}
	bad = sampleManifest()
	bad.CRCs = bad.CRCs[1:]
	if _, err := bad.MarshalBinary(); !errors.Is(err, ErrManifest) {
		t.Errorf("short checksums: %v", err)
	}
	bad = sampleManifest()
	bad.Servers = bad.Servers[:5]
	if _, err := bad.MarshalBinary(); !errors.Is(err, ErrLayout) {
		t.Errorf("too few servers: %v", err)
	}
	bad = sampleManifest()
	bad.Unit, bad.Size = 4096, 1<<40
	if _, err := bad.MarshalBinary(); !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), "larger unit") {
		t.Errorf("too many shards: %v", err)
	}
}

func FuzzDecodeManifest(f *testing.F) {
	good, _ := sampleManifest().MarshalBinary()
	f.Add(good)
	small := &Manifest{Name: "v", Size: 1, K: 1, M: 1, Unit: 4096, Placement: PlacementRotate,
		Servers: []ManifestServer{{ID: "a", Addr: "a:1"}, {ID: "b", Addr: "b:1"}}, CRCs: []uint32{1, 2}}
	sb, _ := small.MarshalBinary()
	f.Add(sb)
	f.Add([]byte("BXEC\x01"))
	f.Add(resum(append(bytes.Clone(sb[:len(sb)-4]), 0, 0, 0, 0)))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Feed the input as is, then with its checksum made right so the
		// field checks are reached.
		for _, in := range [][]byte{b, fixSum(b)} {
			m, err := UnmarshalManifest(in)
			if err != nil {
				if m != nil || !errors.Is(err, ErrManifest) {
					t.Fatalf("UnmarshalManifest = %v, %v", m, err)
				}
				continue
			}
			again, err := m.MarshalBinary()
			if err != nil {
				t.Fatalf("decoded %+v but it does not encode: %v", m, err)
			}
			if !bytes.Equal(again, in) {
				t.Fatalf("re-encoding differs:\nin  %x\nout %x", in, again)
			}
		}
	})
}

func fixSum(b []byte) []byte {
	if len(b) < 4 {
		return b
	}
	return resum(b)
}

func TestLoadManifestFile(t *testing.T) {
	ctx := context.Background()
	m := sampleManifest()
	path := filepath.Join(t.TempDir(), "m")
	if err := StoreManifest(ctx, nil, path, m); err != nil {
		t.Fatal(err)
	}
	for _, vol := range []string{"", m.Name} {
		got, c, err := LoadManifest(ctx, ManifestSource{File: path, Volume: vol})
		if err != nil || c != nil || !reflect.DeepEqual(got, m) {
			t.Fatalf("volume %q: %+v, %v, %v", vol, got, c, err)
		}
	}
	_, _, err := LoadManifest(ctx, ManifestSource{File: path, Volume: "other"})
	if err == nil || err.Error() != `manifest `+path+` is for volume "models", not "other"` {
		t.Fatalf("other volume: %v", err)
	}
	if _, _, err := LoadManifest(ctx, ManifestSource{File: path + ".missing"}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	// A source that names no place, or two, or etcd without a volume, is
	// refused before anything is read or dialled.
	for _, src := range []ManifestSource{{}, {File: path, Etcd: "127.0.0.1:1"}, {Etcd: "127.0.0.1:1"}} {
		if _, _, err := LoadManifest(ctx, src); err == nil || !strings.HasPrefix(err.Error(), "ec: load manifest") {
			t.Fatalf("%+v: %v", src, err)
		}
	}
}

func TestLoadManifestEtcd(t *testing.T) {
	ep := startEtcd(t)
	ctx := context.Background()
	c, err := Connect(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := sampleManifest()
	m.Generation = 1
	if err := StoreManifest(ctx, c, "", m); err != nil {
		t.Fatal(err)
	}
	if err := StoreManifest(ctx, c, "", m); !errors.Is(err, ErrConflict) {
		t.Fatalf("storing generation 1 twice: %v", err)
	}
	got, gc, err := LoadManifest(ctx, ManifestSource{Etcd: ep, Volume: m.Name})
	if err != nil || gc == nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("load: %+v, %v", got, err)
	}
	// The Cluster returned is open: an update stored through it is read
	// back.
	next := *got
	next.Generation = 2
	if err := StoreManifest(ctx, gc, "", &next); err != nil {
		t.Fatal(err)
	}
	gc.Close()
	if got, _, err := LoadManifest(ctx, ManifestSource{Etcd: ep, Volume: m.Name}); err != nil || got.Generation != 2 {
		t.Fatalf("after update: %+v, %v", got, err)
	}
	if _, gc, err := LoadManifest(ctx, ManifestSource{Etcd: ep, Volume: "nope"}); !errors.Is(err, ErrNoManifest) || gc != nil {
		t.Fatalf("missing volume: %v", err)
	}
}
