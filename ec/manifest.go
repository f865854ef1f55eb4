package ec

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/internal/wire"
)

// Manifest encoding constants (docs/erasure-coding.md section 3).
const (
	// ManifestVersion is the manifest encoding this build writes and the
	// newest it reads.
	ManifestVersion = 1
	// MaxManifestLen bounds an encoded manifest. It fits etcd's default
	// request limit (1.5 MiB); a volume whose shard checksums do not fit
	// needs a larger unit.
	MaxManifestLen = 1 << 20
	// MaxAddrLen bounds a server address in a manifest.
	MaxAddrLen = 255
	// shardSuffix names a volume's shard volume on each server.
	shardSuffix = ".ec"
)

var manifestMagic = [4]byte{'B', 'X', 'E', 'C'}

// Placement names the rule mapping shards to servers.
type Placement uint8

// PlacementRotate puts shard j of stripe i on server (i+j) mod N.
const PlacementRotate Placement = 1

// ErrManifest is wrapped by every error about a manifest that does not
// decode or breaks its bounds.
var ErrManifest = errors.New("invalid manifest")

// ManifestServer is one server of a striped volume, in placement order.
type ManifestServer struct {
	// ID identifies the server (its registration in the cluster catalog,
	// or its address when there is none).
	ID string `json:"id"`
	// Addr is where the server listens.
	Addr string `json:"addr"`
	// Generation is the generation of the server's shard volume when the
	// manifest was written; a server showing another one holds stale
	// shards. 0 for a server that holds no shard of the volume.
	Generation uint64 `json:"generation"`
}

// Manifest is what a client needs to read a striped volume: its geometry,
// its servers in placement order and the CRC-32C of every shard.
type Manifest struct {
	Name       string           `json:"name"`
	Size       int64            `json:"size"`
	K          int              `json:"k"`
	M          int              `json:"m"`
	Unit       int64            `json:"unit"`
	Placement  Placement        `json:"placement"`
	Generation uint64           `json:"generation"` // grows on every change (rebuild)
	Servers    []ManifestServer `json:"servers"`
	// CRCs holds the CRC-32C of every shard, stripe-major: shard j of
	// stripe i at i*(K+M)+j. Padding bytes of the last stripe's data
	// shards are zeros and part of the checksum.
	CRCs []uint32 `json:"-"`
}

// Layout returns the manifest's geometry.
func (m *Manifest) Layout() Layout {
	return Layout{Size: m.Size, K: m.K, M: m.M, Unit: m.Unit, Servers: len(m.Servers)}
}

// ShardVolume returns the name of the volume holding a server's shards of
// the volume name: name + ".ec".
func ShardVolume(name string) string { return name + shardSuffix }

// ShardVolume returns the name of the shard volume on each server.
func (m *Manifest) ShardVolume() string { return ShardVolume(m.Name) }

// ShardCRC returns the CRC-32C of shard j of stripe i.
func (m *Manifest) ShardCRC(stripe int64, shard int) uint32 {
	return m.CRCs[stripe*int64(m.K+m.M)+int64(shard)]
}

// Validate checks every field against the bounds the decoder enforces;
// errors wrap ErrManifest (and ErrLayout for the geometry).
func (m *Manifest) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("ec: manifest %q: %s: %w", m.Name, fmt.Sprintf(format, args...), ErrManifest)
	}
	if err := catalog.ValidName(m.Name); err != nil {
		return bad("%v", err)
	}
	if err := catalog.ValidName(m.ShardVolume()); err != nil {
		return bad("shard volume: %v", err)
	}
	if m.Placement != PlacementRotate {
		return bad("unknown placement rule %d", m.Placement)
	}
	l := m.Layout()
	if err := l.Validate(); err != nil {
		return fmt.Errorf("ec: manifest %q: %w: %w", m.Name, err, ErrManifest)
	}
	seen := map[string]bool{}
	for i, s := range m.Servers {
		switch {
		case s.ID == "" || len(s.ID) > catalog.MaxNameLen:
			return bad("server %d: id of %d bytes, want 1..%d", i, len(s.ID), catalog.MaxNameLen)
		case s.Addr == "" || len(s.Addr) > MaxAddrLen:
			return bad("server %d (%s): address of %d bytes, want 1..%d", i, s.ID, len(s.Addr), MaxAddrLen)
		case seen[s.ID]:
			return bad("server id %q appears twice", s.ID)
		}
		seen[s.ID] = true
	}
	want := l.Stripes() * int64(l.Shards())
	if want > MaxManifestLen/4 {
		return bad("%d shard checksums do not fit %d bytes; use a larger unit", want, MaxManifestLen)
	}
	if int64(len(m.CRCs)) != want {
		return bad("%d shard checksums for %d shards", len(m.CRCs), want)
	}
	return nil
}

// MarshalBinary encodes the manifest (docs/erasure-coding.md section 3)
// after validating it.
func (m *Manifest) MarshalBinary() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	be := binary.BigEndian
	b := make([]byte, 0, 64+len(m.Servers)*64+4*len(m.CRCs))
	b = append(b, manifestMagic[:]...)
	b = append(b, ManifestVersion)
	b = appendString(b, m.Name)
	b = be.AppendUint64(b, uint64(m.Size))
	b = be.AppendUint16(b, uint16(m.K))
	b = be.AppendUint16(b, uint16(m.M))
	b = be.AppendUint32(b, uint32(m.Unit))
	b = append(b, byte(m.Placement))
	b = be.AppendUint64(b, m.Generation)
	b = be.AppendUint16(b, uint16(len(m.Servers)))
	for _, s := range m.Servers {
		b = appendString(b, s.ID)
		b = appendString(b, s.Addr)
		b = be.AppendUint64(b, s.Generation)
	}
	b = be.AppendUint32(b, uint32(len(m.CRCs)))
	for _, c := range m.CRCs {
		b = be.AppendUint32(b, c)
	}
	b = be.AppendUint32(b, crc32.Checksum(b, castagnoli))
	if len(b) > MaxManifestLen {
		return nil, fmt.Errorf("ec: manifest %q encodes to %d bytes, more than %d; use a larger unit: %w",
			m.Name, len(b), MaxManifestLen, ErrManifest)
	}
	return b, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// UnmarshalManifest decodes a manifest encoded by MarshalBinary. It checks
// the length, magic, version and trailing checksum, every count before it
// allocates, and every field's bounds; failures wrap ErrManifest. An
// accepted manifest encodes back to the same bytes.
func UnmarshalManifest(b []byte) (*Manifest, error) {
	bad := func(format string, args ...any) (*Manifest, error) {
		return nil, fmt.Errorf("ec: decode manifest: %s: %w", fmt.Sprintf(format, args...), ErrManifest)
	}
	switch {
	case len(b) > MaxManifestLen:
		return bad("%d bytes, more than %d", len(b), MaxManifestLen)
	case len(b) < len(manifestMagic)+1+4:
		return bad("%d bytes, too short", len(b))
	case [4]byte(b[:4]) != manifestMagic:
		return bad("not a manifest (magic %q)", b[:4])
	case b[4] != ManifestVersion:
		return bad("version %d, this build reads %d; upgrade", b[4], ManifestVersion)
	}
	body := b[:len(b)-4]
	if got, want := crc32.Checksum(body, castagnoli), binary.BigEndian.Uint32(b[len(b)-4:]); got != want {
		return bad("checksum %08x, stored %08x", got, want)
	}
	d := wire.NewDecoder(body[5:], func(detail string) error { return fmt.Errorf("%s: %w", detail, ErrManifest) })
	m := &Manifest{}
	m.Name = d.String("name", catalog.MaxNameLen)
	m.Size = int64(d.U64("size"))
	m.K = int(d.U16("k"))
	m.M = int(d.U16("m"))
	m.Unit = int64(d.U32("unit"))
	m.Placement = Placement(d.U8("placement"))
	m.Generation = d.U64("generation")
	n := int(d.U16("server count"))
	if d.Err() == nil && n > MaxServers {
		return bad("%d servers, more than %d", n, MaxServers)
	}
	if d.Err() == nil && d.Need(n*(2+1+2+1+8), "servers") {
		m.Servers = make([]ManifestServer, n)
		for i := range m.Servers {
			m.Servers[i].ID = d.String("server id", catalog.MaxNameLen)
			m.Servers[i].Addr = d.String("server address", MaxAddrLen)
			m.Servers[i].Generation = d.U64("server generation")
		}
	}
	c := int(d.U32("checksum count"))
	if d.Err() == nil && d.Need(4*c, "shard checksums") {
		m.CRCs = make([]uint32, c)
		for i := range m.CRCs {
			m.CRCs[i] = d.U32("shard checksum")
		}
	}
	if d.Err() != nil {
		return nil, fmt.Errorf("ec: decode manifest: %w", d.Err())
	}
	if d.Len() != 0 {
		return bad("%d trailing bytes", d.Len())
	}
	// Sizes above int64 range would wrap; Validate catches the rest.
	if m.Size < 0 {
		return bad("size out of range")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// WriteManifestFile writes the encoded manifest to path atomically
// (temporary file, fsync, rename).
func WriteManifestFile(path string, m *Manifest) error {
	b, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".manifest-*")
	if err != nil {
		return fmt.Errorf("ec: write manifest %s: %w", path, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("ec: write manifest %s: %w", path, err)
	}
	return nil
}

// ReadManifestFile reads and decodes a manifest file.
func ReadManifestFile(path string) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("ec: read manifest: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("ec: read manifest: %w", err)
	}
	if st.Size() > MaxManifestLen {
		return nil, fmt.Errorf("ec: read manifest %s: %d bytes, more than %d: %w", path, st.Size(), MaxManifestLen, ErrManifest)
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("ec: read manifest %s: %w", path, err)
	}
	m, err := UnmarshalManifest(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// ManifestSource says where the manifest of a striped volume is kept: in a
// manifest file or in the cluster catalog in etcd. Exactly one of File and
// Etcd is set.
type ManifestSource struct {
	// File is the path of a manifest file (see WriteManifestFile).
	File string
	// Etcd holds the endpoints of the cluster catalog (see Connect).
	Etcd string
	// Volume names the striped volume. It is required with Etcd; with File,
	// when set, it must be the name the manifest holds.
	Volume string
}

// LoadManifest reads the manifest src points to: it decodes the file, or
// connects to the cluster catalog and gets the volume's manifest there.
// From etcd it also returns the open Cluster, for the caller to use (to
// resolve servers, to store an updated manifest with StoreManifest) and to
// close; from a file the Cluster is nil.
func LoadManifest(ctx context.Context, src ManifestSource) (*Manifest, *Cluster, error) {
	switch {
	case (src.File == "") == (src.Etcd == ""):
		return nil, nil, errors.New("ec: load manifest: give either a manifest file or etcd endpoints")
	case src.File != "":
		m, err := ReadManifestFile(src.File)
		if err != nil {
			return nil, nil, err
		}
		if src.Volume != "" && src.Volume != m.Name {
			return nil, nil, fmt.Errorf("manifest %s is for volume %q, not %q", src.File, m.Name, src.Volume)
		}
		return m, nil, nil
	case src.Volume == "":
		return nil, nil, errors.New("ec: load manifest from etcd: no volume name")
	}
	c, err := Connect(ctx, src.Etcd)
	if err != nil {
		return nil, nil, err
	}
	m, err := c.GetManifest(ctx, src.Volume)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return m, c, nil
}

// StoreManifest stores m where LoadManifest finds it: in the cluster
// catalog when cluster is not nil (with PutManifest, so m.Generation must
// follow the stored manifest's, or be 1 for a new volume), else in the
// manifest file at path (with WriteManifestFile).
func StoreManifest(ctx context.Context, cluster *Cluster, path string, m *Manifest) error {
	if cluster != nil {
		return cluster.PutManifest(ctx, m)
	}
	return WriteManifestFile(path, m)
}
