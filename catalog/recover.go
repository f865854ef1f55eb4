package catalog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrHealthy is returned by [Recover] when the catalog opens and passes
// [Catalog.Check], so there is nothing to recover (without
// RecoverOptions.Force).
var ErrHealthy = errors.New("catalog is healthy")

// RecoverOptions configures [Recover]. The zero value (or nil) recovers
// only a damaged or missing catalog, with each volume's extent size taken
// from the old catalog where it can be read and DefaultExtentSize
// otherwise.
type RecoverOptions struct {
	// ExtentSize is the extent size of every recovered volume. 0 means the
	// extent size of the volume's record in the old catalog, if one of the
	// same size is found there, and DefaultExtentSize otherwise.
	ExtentSize int64

	// Force rebuilds a catalog that is healthy or written by a newer
	// blockd, too. Its linked volumes are then reported, not kept.
	Force bool
}

// VolumeFile is a file in a data directory's volumes/ that is named like
// an owned volume's backing: <name>.vol, or <name>.vol.1 (the alternate a
// replaced volume may use).
type VolumeFile struct {
	// Name is the volume name the file is for.
	Name string
	// Path is the file's absolute path.
	Path string
	// Size is the file's size in bytes (> 0).
	Size int64
	// ModTime is the file's modification time.
	ModTime time.Time
}

// SkippedFile is a file in volumes/ that is not taken as a volume, and why.
type SkippedFile struct {
	// Path is the file's absolute path.
	Path string
	// Reason says why it is not a volume's backing.
	Reason string
}

// RecoveredVolume is one volume [Recover] registered.
type RecoveredVolume struct {
	// Volume is the volume as registered: owned, its CRCs computed from
	// the file as it is now, and a new generation.
	*Volume
	// Old is the volume's record in the old catalog, or nil if none was
	// found. From a damaged catalog it may be out of date.
	Old *Volume
	// Compared is true when Old has the same size and extent size, so its
	// extent CRCs were compared with the new ones.
	Compared bool
	// Changed lists the extents whose CRC differs from Old's, when
	// Compared: bytes that changed on disk since the old record was
	// written (or a stale record).
	Changed []int
}

// RecoverReport says what [Recover] did.
type RecoverReport struct {
	// Catalog is the path of the new catalog.
	Catalog string
	// Damage is why the old catalog was replaced: the error opening or
	// checking it. It is nil when there was no catalog.db, or (with Force)
	// when it was healthy.
	Damage error
	// MovedTo is where the old catalog.db was moved; "" if there was none.
	// Recover never deletes it.
	MovedTo string
	// Recovered lists the volumes registered, by name.
	Recovered []RecoveredVolume
	// Bytes is the total size of the recovered volumes.
	Bytes int64
	// Skipped lists the files in volumes/ not registered, and why.
	Skipped []SkippedFile
	// OldRecords is how many volume records were read from the old
	// catalog.
	OldRecords int
	// Scanned is true when the old records were found by scanning the
	// damaged file's bytes for intact records rather than read from a
	// catalog that opened: they may then include volumes removed before
	// the damage, and miss volumes whose records were damaged.
	Scanned bool
	// Linked lists the linked volumes of the old catalog (backing outside
	// volumes/). They are not registered: re-import each with
	// `blockd volume import NAME BACKING --link`.
	Linked []*Volume
	// Missing lists the owned volumes of the old catalog with no file in
	// volumes/.
	Missing []*Volume
}

// Recover rebuilds the catalog of the data directory dataDir from the
// files in its volumes/ directory, for a catalog.db that is damaged or
// lost. Every volumes/<name>.vol (or <name>.vol.1) becomes an owned volume
// named <name>, its extent CRCs computed from the file as it is now, with a
// new generation: the generation counter of the new catalog starts at the
// recovery time in microseconds since 1970, above any generation the old
// catalog can have assigned. Progress covers the bytes of all files.
//
// The new catalog is built under a temporary name and renamed into place;
// the old catalog.db is first moved to catalog.db.damaged-<UTC time> (or
// catalog.db.replaced-<UTC time> when Force replaces a healthy one), never
// deleted. Until the final renames nothing in dataDir changes.
//
// Recover fails with [ErrLocked] while another process (a running blockd)
// has the catalog open, with [ErrHealthy] if the catalog opens and passes
// [Catalog.Check], and with [ErrNewerSchema] for a newer blockd's catalog,
// unless opts.Force. Linked volumes cannot be found in volumes/; those
// whose records survive in the old file are listed in the report.
func Recover(ctx context.Context, dataDir string, ropts *RecoverOptions, opts ...OpOption) (*RecoverReport, error) {
	var o RecoverOptions
	if ropts != nil {
		o = *ropts
	}
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("catalog: recover %s: %w", dataDir, err)
	}
	fail := func(err error) (*RecoverReport, error) {
		return nil, fmt.Errorf("catalog: recover %s: %w", dir, err)
	}
	if o.ExtentSize != 0 {
		if p := checkGeometry(o.ExtentSize, o.ExtentSize); p != "" {
			return fail(fmt.Errorf("%s: %w", p, ErrInvalid))
		}
	}
	dbPath := filepath.Join(dir, catalogFile)
	rep := &RecoverReport{Catalog: dbPath}
	exists := true
	if _, err := os.Lstat(dbPath); errors.Is(err, os.ErrNotExist) {
		exists = false
	} else if err != nil {
		return fail(err)
	}
	var old []*Volume
	healthy := false
	if exists {
		old, healthy, rep.Damage, err = probeOld(dbPath)
		switch {
		case err != nil:
			return nil, err
		case healthy && !o.Force:
			return fail(fmt.Errorf("%s opens and passes its check (%d volumes); nothing to recover: %w",
				dbPath, len(old), ErrHealthy))
		case errors.Is(rep.Damage, ErrNewerSchema) && !o.Force:
			return nil, rep.Damage
		}
		unlock, err := lockFile(dbPath)
		if err != nil {
			return fail(err)
		}
		defer unlock()
		if !healthy {
			raw, err := os.ReadFile(dbPath)
			if err != nil {
				return fail(err)
			}
			old, rep.Scanned = salvageRecords(raw), true
		}
	}
	rep.OldRecords = len(old)

	files, skipped, err := ScanVolumes(dir)
	if err != nil {
		return fail(err)
	}
	rep.Skipped = skipped
	byName := make(map[string]*Volume, len(old))
	for _, v := range old {
		byName[v.Name] = v
	}
	files = rep.pickBackings(files, byName)

	tmp, err := os.CreateTemp(dir, catalogFile+".recovering-*")
	if err != nil {
		return fail(err)
	}
	tmpPath := tmp.Name()
	tmp.Close()
	os.Remove(tmpPath) // bbolt refuses an existing empty file
	built := false
	defer func() {
		if !built {
			os.Remove(tmpPath)
		}
	}()
	if err := rep.build(ctx, tmpPath, files, byName, o.ExtentSize, newOpConfig(opts)); err != nil {
		return fail(err)
	}
	for _, v := range old {
		switch {
		case !v.Owned:
			rep.Linked = append(rep.Linked, v)
		case !rep.recovered(v.Name):
			rep.Missing = append(rep.Missing, v)
		}
	}

	if exists {
		what := "damaged"
		if healthy {
			what = "replaced"
		}
		rep.MovedTo, err = moveAside(dbPath, what)
		if err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tmpPath, dbPath); err != nil {
		return fail(fmt.Errorf("the old catalog is now %s, but the new one could not be put in place (it is %s): %w",
			rep.MovedTo, tmpPath, err))
	}
	built = true
	if err := syncDir(dir); err != nil {
		return fail(err)
	}
	return rep, nil
}

// probeOld opens the existing catalog at path read-only and reports whether
// it is healthy (with its volumes) or why not (damage). err is set only for
// a failure that must stop recovery: the catalog is locked, or cannot be
// read at all.
func probeOld(path string) (old []*Volume, healthy bool, damage, err error) {
	c, err := Open(path, &Options{ReadOnly: true})
	switch {
	case errors.Is(err, ErrLocked):
		return nil, false, nil, fmt.Errorf("catalog: recover: %w", err)
	case errors.Is(err, ErrCorrupt), errors.Is(err, ErrNewerSchema):
		return nil, false, err, nil
	case err != nil:
		return nil, false, nil, fmt.Errorf("catalog: recover: %w", err)
	}
	defer c.Close()
	if err := c.Check(); err != nil {
		return nil, false, err, nil
	}
	old, err = c.List()
	if err != nil {
		return nil, false, err, nil
	}
	return old, true, nil, nil
}

// ScanVolumes lists the files in dataDir/volumes: those named like an owned
// volume's backing (<name>.vol or <name>.vol.1 with a valid name, a
// non-empty regular file), sorted by name and path, and the others with the
// reason each is not one. It changes nothing.
func ScanVolumes(dataDir string) ([]VolumeFile, []SkippedFile, error) {
	volDir := filepath.Join(dataDir, volumesDir)
	volDir, err := filepath.Abs(volDir)
	if err != nil {
		return nil, nil, err
	}
	ents, err := os.ReadDir(volDir)
	if err != nil {
		return nil, nil, fmt.Errorf("volumes directory: %w", err)
	}
	var files []VolumeFile
	var skipped []SkippedFile
	skip := func(path, format string, args ...any) {
		skipped = append(skipped, SkippedFile{Path: path, Reason: fmt.Sprintf(format, args...)})
	}
	for _, e := range ents {
		path := filepath.Join(volDir, e.Name())
		base := e.Name()
		if strings.HasPrefix(base, tmpPrefix) {
			skip(path, "temporary file of a create, import or upload that did not finish (a read-write open of the data directory removes it)")
			continue
		}
		if !e.Type().IsRegular() {
			skip(path, "not a regular file (%s)", FileKind(e.Type()))
			continue
		}
		name, ok := strings.CutSuffix(base, volumeExt)
		if !ok {
			name, ok = strings.CutSuffix(base, altSuffix)
		}
		if !ok {
			skip(path, "not named NAME%s", volumeExt)
			continue
		}
		if p := nameProblem(name); p != "" {
			skip(path, "%q is not a valid volume name: %s", name, p)
			continue
		}
		info, err := e.Info()
		if err != nil {
			skip(path, "%v", err)
			continue
		}
		if info.Size() == 0 {
			skip(path, "empty: a volume has at least 1 byte")
			continue
		}
		files = append(files, VolumeFile{Name: name, Path: path, Size: info.Size(), ModTime: info.ModTime()})
	}
	sort.Slice(files, func(i, j int) bool {
		if files[i].Name != files[j].Name {
			return files[i].Name < files[j].Name
		}
		return files[i].Path < files[j].Path
	})
	return files, skipped, nil
}

// pickBackings keeps one file per volume name. Where both <name>.vol and
// <name>.vol.1 exist (a replace was interrupted, or left its old file), it
// keeps the one the old record names if it has the record's size, else the
// newer one, and reports the other as skipped.
func (rep *RecoverReport) pickBackings(files []VolumeFile, old map[string]*Volume) []VolumeFile {
	var out []VolumeFile
	for i := 0; i < len(files); {
		j := i + 1
		for j < len(files) && files[j].Name == files[i].Name {
			j++
		}
		group := files[i:j]
		i = j
		best, decided := 0, false
		why := "is older (modification time) than %s; which one the lost catalog named is unknown"
		if v := old[group[0].Name]; v != nil && v.Owned {
			for k, f := range group {
				if filepath.Base(f.Path) == filepath.Base(v.Backing) && f.Size == v.Size {
					best, decided = k, true
					why = "is not the file the old catalog's record names (%s): a leftover of a replace"
					break
				}
			}
		}
		if !decided { // take the newest
			for k, f := range group {
				if f.ModTime.After(group[best].ModTime) {
					best = k
				}
			}
		}
		out = append(out, group[best])
		for k, f := range group {
			if k != best {
				rep.Skipped = append(rep.Skipped, SkippedFile{Path: f.Path, Reason: fmt.Sprintf(
					"a second backing of volume %s: it "+why+"; left in place", f.Name, filepath.Base(group[best].Path))})
			}
		}
	}
	return out
}

// build creates the new catalog at path and registers files in it.
func (rep *RecoverReport) build(ctx context.Context, path string, files []VolumeFile, old map[string]*Volume,
	extentSize int64, cfg *opConfig) error {
	c, err := Open(path, nil)
	if err != nil {
		return err
	}
	err = rep.register(ctx, c, files, old, extentSize, cfg)
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	return err
}

// register computes the extent CRCs of files and puts them in c.
func (rep *RecoverReport) register(ctx context.Context, c *Catalog, files []VolumeFile, old map[string]*Volume,
	extentSize int64, cfg *opConfig) error {
	seq := uint64(time.Now().UnixMicro())
	for _, v := range old {
		seq = max(seq, v.Generation)
	}
	err := c.updateTx(func(tx *bolt.Tx) error { return tx.Bucket(bucketVolumes).SetSequence(seq) })
	if err != nil {
		return err
	}
	var total, done int64
	for _, f := range files {
		total += f.Size
	}
	for _, f := range files {
		es := extentSize
		if o := old[f.Name]; es == 0 && o != nil && o.Size == f.Size {
			es = o.ExtentSize
		}
		if es == 0 {
			es = DefaultExtentSize
		}
		if p := checkGeometry(f.Size, es); p != "" {
			rep.Skipped = append(rep.Skipped, SkippedFile{Path: f.Path, Reason: p + " (--extent-size)"})
			done += f.Size
			continue
		}
		base := done
		sub := &opConfig{progress: func(d, _ int64) { cfg.report(base+d, total) }}
		sum, err := fileCRCs(ctx, f.Path, f.Size, es, sub)
		done += f.Size
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			rep.Skipped = append(rep.Skipped, SkippedFile{Path: f.Path, Reason: err.Error()})
			continue
		}
		v := &Volume{Name: f.Name, Size: f.Size, ExtentSize: es, Backing: f.Path, Owned: true,
			CRCs: sum.extents, Blocks: sum.blocks, Created: f.ModTime}
		if err := c.Put(v); err != nil {
			return err
		}
		rv := RecoveredVolume{Volume: v, Old: old[f.Name]}
		if o := rv.Old; o != nil && o.Size == v.Size && o.ExtentSize == v.ExtentSize {
			rv.Compared = true
			for i, crc := range v.CRCs {
				if crc != o.CRCs[i] {
					rv.Changed = append(rv.Changed, i)
				}
			}
		}
		rep.Recovered = append(rep.Recovered, rv)
		rep.Bytes += v.Size
	}
	cfg.report(total, total)
	return nil
}

// recovered reports whether a volume of that name was registered.
func (rep *RecoverReport) recovered(name string) bool {
	for _, rv := range rep.Recovered {
		if rv.Name == name {
			return true
		}
	}
	return false
}

// fileCRCs reads size bytes of the file at path and returns its extent
// and block CRCs.
func fileCRCs(ctx context.Context, path string, size, extentSize int64, cfg *opConfig) (sums, error) {
	f, err := os.Open(path)
	if err != nil {
		return sums{}, err
	}
	defer f.Close()
	return pump(ctx, size, extentSize, cfg, func(p []byte) error { return readFull(f, p) }, nil)
}

// moveAside renames path to path.<what>-<UTC time>, with a counter added if
// that exists, and returns the new name.
func moveAside(path, what string) (string, error) {
	stamp := path + "." + what + "-" + time.Now().UTC().Format("20060102T150405Z")
	to := stamp
	for n := 2; ; n++ {
		if _, err := os.Lstat(to); errors.Is(err, os.ErrNotExist) {
			break
		}
		to = fmt.Sprintf("%s-%d", stamp, n)
	}
	if err := os.Rename(path, to); err != nil {
		return "", err
	}
	return to, nil
}

// salvageRecords scans the bytes of a damaged catalog for intact volume
// records (each carries its own CRC-32C) and returns the newest record of
// each name, sorted by name. Freed pages still hold old records, so the
// result may include volumes removed since.
func salvageRecords(b []byte) []*Volume {
	newest := map[string]*Volume{}
	for i := 0; ; i++ {
		k := bytes.IndexByte(b[i:], recordVersion)
		if k < 0 {
			break
		}
		i += k
		if n, ok := recordLen(b[i:]); ok {
			if v, err := decodeVolume(b[i : i+n]); err == nil {
				if o := newest[v.Name]; o == nil || v.Generation > o.Generation {
					newest[v.Name] = v
				}
			}
		}
	}
	out := make([]*Volume, 0, len(newest))
	for _, v := range newest {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// recordLen returns the length of the volume record that would start at
// b[0], from its length fields, if they are in bounds, fit in b and agree
// with its geometry; decodeVolume does the full check.
func recordLen(b []byte) (int, bool) {
	if len(b) < recordMin {
		return 0, false
	}
	size := int64(binary.BigEndian.Uint64(b[2:]))
	extentSize := int64(binary.BigEndian.Uint64(b[10:]))
	if checkGeometry(size, extentSize) != "" {
		return 0, false
	}
	want, _ := extentCount(size, extentSize)
	at := recordFixed
	n := int(binary.BigEndian.Uint16(b[at:]))
	if n < 1 || n > MaxNameLen {
		return 0, false
	}
	at += 2 + n
	if len(b) < at+2 {
		return 0, false
	}
	m := int(binary.BigEndian.Uint16(b[at:]))
	if m < 1 || m > MaxBackingLen {
		return 0, false
	}
	at += 2 + m
	if len(b) < at+4 || int(binary.BigEndian.Uint32(b[at:])) != want {
		return 0, false
	}
	at += 4 + 4*want + recordTrailer
	if len(b) < at {
		return 0, false
	}
	return at, true
}
