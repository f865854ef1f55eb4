package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/ec"
	"github.com/blockxfer/blockxfer/engine"
)

// How `blockcat get -o FILE` writes a regular FILE (or one that does not
// exist yet): never in place. The bytes go to a partial file beside it,
// .FILE.blockxfer-partial, which is synced and renamed over FILE only when
// the whole get succeeded. A record beside the partial,
// .FILE.blockxfer-partial.json, says what the partial is a partial of and
// how many of its bytes are known good; a failed or interrupted get leaves
// FILE as it was and keeps those bytes for --continue. A device, FIFO or
// other non-regular FILE is written in place.

const (
	// partialSuffix ends the name of the partial file of FILE.
	partialSuffix = ".blockxfer-partial"
	// recordFormat is the format of the partial's record.
	recordFormat = 1
	// checkpointEvery is how often a long get syncs its partial and
	// records how far it got, so that even a get that is killed outright
	// leaves something to continue.
	checkpointEvery = 10 * time.Second
	// cacheWindow is how many written bytes of the partial the page cache
	// may hold unless --keep-cache: beyond it, the oldest are waited for
	// and dropped (see output.writeback).
	cacheWindow = 32 << 20
)

// partialPaths returns the partial file of FILE and its record.
func partialPaths(file string) (partial, record string) {
	dir, base := filepath.Split(file)
	partial = filepath.Join(dir, "."+base+partialSuffix)
	return partial, partial + ".json"
}

// source identifies what a get fetches; a partial file is continued only by
// a get of the same source.
type source struct {
	Volume string `json:"volume"`
	// Server is the server a volume of one server is fetched from; empty
	// for a striped volume.
	Server     string `json:"server,omitempty"`
	Generation uint64 `json:"generation"`
	Size       int64  `json:"size"`
	ExtentSize int64  `json:"extent_size,omitempty"`
	// Striped describes a striped volume's manifest: its code, shard size
	// and a CRC-32C over all its shard checksums.
	Striped string `json:"striped,omitempty"`
	// Offset and Length are the range of the volume fetched.
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// volumeSource is the source of a get of [off, off+n) of a volume of one
// server.
func volumeSource(server string, v blockproto.VolumeStat, off, n int64) source {
	return source{Volume: v.Name, Server: server, Generation: v.Generation, Size: int64(v.Size),
		ExtentSize: int64(v.ExtentSize), Offset: off, Length: n}
}

// stripedSource is the source of a get of [off, off+n) of a striped volume.
func stripedSource(m *ec.Manifest, off, n int64) source {
	b := make([]byte, 0, 4*len(m.CRCs))
	for _, c := range m.CRCs {
		b = binary.BigEndian.AppendUint32(b, c)
	}
	sum := crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))
	return source{Volume: m.Name, Generation: m.Generation, Size: m.Size,
		Striped: fmt.Sprintf("%d+%d, unit %d, shard crc32c %08x", m.K, m.M, m.Unit, sum), Offset: off, Length: n}
}

// String describes the source for messages.
func (s source) String() string {
	what := fmt.Sprintf("%s generation %d (%d bytes, extents of %d) on %s", s.Volume, s.Generation, s.Size, s.ExtentSize, s.Server)
	if s.Striped != "" {
		what = fmt.Sprintf("striped %s generation %d (%d bytes, %s)", s.Volume, s.Generation, s.Size, s.Striped)
	}
	return fmt.Sprintf("%s, bytes [%d,+%d)", what, s.Offset, s.Length)
}

// partialRecord is the record kept beside a partial file.
type partialRecord struct {
	Format int `json:"format"`
	source
	// Good says that the partial's first Good bytes are the source's
	// bytes [Offset, Offset+Good), every extent of them checked against
	// its CRC-32C.
	Good int64 `json:"good_bytes"`
}

// output is where a get writes the bytes it fetched: nowhere (memory
// only), stdout, a non-regular file in place, or a partial file renamed
// over FILE when the get succeeds.
type output struct {
	w    io.Writer // nil: memory only
	path string    // -o as given

	f       *os.File // the file written: the partial, or FILE in place
	inPlace bool     // FILE is not a regular file and is written in place

	// A regular FILE: target is FILE with symbolic links resolved; the
	// partial and its record lie beside it.
	target, partial, record string
	existed                 bool        // FILE existed before the get
	orig                    os.FileInfo // FILE as it was, if it existed

	src     source
	resumed int64 // bytes kept from an earlier get, at the start of the partial
	saved   time.Time

	mu      sync.Mutex
	written int64 // bytes written by this get
	good    int64 // bytes from the start of the partial known good
	// ahead holds the checked extents written at their place beyond good,
	// start to end, until good reaches them.
	ahead map[int64]int64

	// keepCache leaves written bytes in the page cache (--keep-cache).
	keepCache bool
	// wmu guards unsettled: the ranges of the partial written and handed
	// to writeback but not yet settled, oldest first, and their bytes.
	wmu            sync.Mutex
	unsettled      []span
	unsettledBytes int64

	finished bool
	result   error
}

// openOutput opens -o for a get of src. With resume (--continue) it
// continues the partial file an earlier get of the same source kept;
// o.resumed says how many bytes of the range that already holds. Notes
// about what it found go to stderr.
func openOutput(path string, stdout, stderr io.Writer, src source, resume bool) (*output, error) {
	o := &output{path: path, src: src}
	switch path {
	case "", "-":
		if resume {
			return nil, cli.UsageErr(errors.New("--continue needs -o FILE"))
		}
		if path == "-" {
			o.w = stdout
		}
		return o, nil
	}
	st, err := os.Stat(path)
	switch {
	case err == nil && !st.Mode().IsRegular():
		if resume {
			return nil, cli.UsageErr(fmt.Errorf("--continue needs a regular file: %s is written in place (%s)", path, st.Mode().Type()))
		}
		f, err := os.Create(path)
		if err != nil {
			return nil, err
		}
		o.f, o.w, o.inPlace = f, f, true
		return o, nil
	case err == nil:
		o.existed, o.orig = true, st
		if o.target, err = filepath.EvalSymlinks(path); err != nil {
			return nil, err
		}
	case errors.Is(err, fs.ErrNotExist):
		o.target = path
	default:
		return nil, err
	}
	o.partial, o.record = partialPaths(o.target)
	if err := o.openPartial(resume, stderr); err != nil {
		return nil, err
	}
	o.w = o.f
	return o, nil
}

// openPartial opens and locks the partial file, continues it (resume) or
// starts it over, and leaves it positioned where the get writes next.
func (o *output) openPartial(resume bool, stderr io.Writer) error {
	created := true
	f, err := os.OpenFile(o.partial, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
	if errors.Is(err, fs.ErrExist) {
		created = false
		f, err = os.OpenFile(o.partial, os.O_RDWR, 0)
	}
	if err != nil {
		return err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("%s is in use: another blockcat get is writing %s (%v)", o.partial, o.path, err)
	}
	o.f = f
	fail := func(err error) error {
		if created {
			os.Remove(o.partial)
		}
		f.Close()
		return err
	}
	prev, err := o.readRecord(!created)
	if err != nil && resume && !errors.Is(err, errNoRecord) {
		return fail(err) // a get that starts over has no use for the record
	}
	start := int64(0)
	switch {
	case resume && prev != nil:
		if prev.source != o.src {
			return fail(fmt.Errorf("cannot continue: %s is a partial of %s, but this get is of %s: %s; remove %s, or run without --continue, to start over",
				o.partial, prev.source, o.src, mismatch(prev.source, o.src), o.partial))
		}
		st, err := f.Stat()
		if err != nil {
			return fail(err)
		}
		if st.Size() < prev.Good {
			return fail(fmt.Errorf("cannot continue: %s has %d bytes, but its record %s says %d are good; remove %s to start over",
				o.partial, st.Size(), o.record, prev.Good, o.partial))
		}
		start = prev.Good
	case resume:
		fmt.Fprintf(stderr, "blockcat: no partial of %s to continue: fetching all of it\n", o.path)
	case prev != nil && prev.Good > 0:
		fmt.Fprintf(stderr, "blockcat: starting over: discarding the %d bytes an earlier get kept in %s (--continue resumes them)\n",
			prev.Good, o.partial)
	}
	o.resumed, o.good = start, start
	if start == 0 {
		// The record is rewritten before the partial's bytes change,
		// so that it never vouches for bytes of another source.
		if err := o.writeRecord(0); err != nil {
			return fail(err)
		}
	}
	if err := f.Truncate(start); err != nil {
		return fail(err)
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return fail(err)
	}
	o.saved = time.Now()
	return nil
}

// errNoRecord: the partial file has no record.
var errNoRecord = errors.New("no record")

// readRecord reads the partial's record. It returns errNoRecord when there
// is no record, or there is no partial (a record left when the partial
// was removed vouches for nothing).
func (o *output) readRecord(partialExisted bool) (*partialRecord, error) {
	b, err := os.ReadFile(o.record)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !partialExisted) {
		return nil, errNoRecord
	}
	if err != nil {
		return nil, fmt.Errorf("cannot continue: %w", err)
	}
	var rec partialRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.Format != recordFormat {
		if err == nil {
			err = fmt.Errorf("format %d, want %d", rec.Format, recordFormat)
		}
		return nil, fmt.Errorf("cannot continue: %s is not a record this blockcat reads (%v); remove %s to start over",
			o.record, err, o.partial)
	}
	return &rec, nil
}

// mismatch says how the source of a partial differs from the source of
// this get.
func mismatch(old, now source) string {
	switch {
	case old.Volume != now.Volume || old.Server != now.Server || (old.Striped == "") != (now.Striped == ""):
		return "another volume"
	case old.Offset != now.Offset || old.Length != now.Length:
		return "another range"
	}
	return "the volume was replaced since"
}

// writeRecord records, atomically and durably, that the partial holds
// good good bytes of o.src.
func (o *output) writeRecord(good int64) error {
	b, err := json.MarshalIndent(partialRecord{Format: recordFormat, source: o.src, Good: good}, "", "  ")
	if err != nil {
		return err
	}
	dir, base := filepath.Split(o.record)
	tmp, err := os.CreateTemp(dir, base+".*.tmp")
	if err != nil {
		return err
	}
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), o.record)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", o.record, err)
	}
	return syncDir(o.record)
}

// syncDir syncs the directory holding path, so that a rename or a new file
// in it is durable.
func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	err = d.Sync()
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		err = nil // a file system that cannot sync directories
	}
	return errors.Join(err, d.Close())
}

// write writes b, the next bytes of the range, of which the first verified
// were checked against their CRC-32C. Every checkpointEvery it syncs the
// partial and records how many bytes are good.
func (o *output) write(b []byte, verified int64) error {
	if _, err := o.w.Write(b); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	if o.partial != "" {
		if err := o.writeback(o.resumed+o.written, int64(len(b))); err != nil {
			return err
		}
	}
	o.mu.Lock()
	if o.good == o.resumed+o.written {
		o.good += verified
	}
	o.written += int64(len(b))
	o.mu.Unlock()
	return o.checkpoint()
}

// placed says whether the output takes bytes at their place, out of order
// (writeAt): a partial file does; memory only, stdout and files written in
// place take them in order (write).
func (o *output) placed() bool { return o.partial != "" }

// writeAt writes b, the range's bytes from at on, at their place in the
// partial file; checked says they were checked against their CRC-32C.
// Several goroutines may call it at once.
func (o *output) writeAt(b []byte, at int64, checked bool) error {
	if _, err := o.f.WriteAt(b, at); err != nil {
		return fmt.Errorf("write %s: %w", o.partial, err)
	}
	if err := o.writeback(at, int64(len(b))); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.written += int64(len(b))
	if !checked || at < o.good {
		return nil // good stops before bytes not checked
	}
	if o.ahead == nil {
		o.ahead = make(map[int64]int64)
	}
	o.ahead[at] = at + int64(len(b))
	for end, ok := o.ahead[o.good]; ok; end, ok = o.ahead[o.good] {
		delete(o.ahead, o.good)
		o.good = end
	}
	return nil
}

// span is a range of the partial file.
type span struct{ off, n int64 }

// writeback starts writing the n bytes just written at off of the partial
// to its device. Unless keepCache, it then bounds the page cache the get
// holds, as nbdcopy does: while more than cacheWindow written bytes are
// unsettled, it waits for the oldest to reach the device and drops them
// from the page cache. So a large get neither pushes other data out of
// memory nor needs fresh pages for every byte (on a VM that hands free
// memory back to its host, fresh pages cost a fault in the host each), and
// the final sync has at most cacheWindow left to write. An error is a
// write error of the device. Several goroutines may call it at once.
func (o *output) writeback(off, n int64) error {
	startWriteback(o.f, off, n)
	if o.keepCache {
		return nil
	}
	var old []span
	o.wmu.Lock()
	o.unsettled = append(o.unsettled, span{off, n})
	o.unsettledBytes += n
	for o.unsettledBytes > cacheWindow {
		old = append(old, o.unsettled[0])
		o.unsettledBytes -= o.unsettled[0].n
		o.unsettled = o.unsettled[1:]
	}
	o.wmu.Unlock()
	for _, sp := range old {
		if err := settle(o.f, sp.off, sp.n); err != nil {
			return fmt.Errorf("write %s: %w", o.partial, err)
		}
	}
	return nil
}

// checkpoint syncs a partial file and records how many of its bytes are
// good, if checkpointEvery passed since it last did.
func (o *output) checkpoint() error {
	if o.partial == "" || time.Since(o.saved) < checkpointEvery {
		return nil
	}
	o.mu.Lock()
	good := o.good // written before the sync, so the sync covers them
	o.mu.Unlock()
	if err := o.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", o.partial, err)
	}
	if err := o.writeRecord(good); err != nil {
		return err
	}
	o.saved = time.Now()
	return nil
}

// verifiedPrefix returns how many bytes from off on the extents cover,
// contiguously, with every extent checked against its CRC-32C.
func verifiedPrefix(off int64, extents []engine.ExtentTiming) int64 {
	ext := append([]engine.ExtentTiming(nil), extents...)
	sort.Slice(ext, func(i, j int) bool { return ext[i].VolumeOffset < ext[j].VolumeOffset })
	pos := off
	for _, e := range ext {
		if e.VolumeOffset != pos || !e.Verified {
			break
		}
		pos += e.Length
	}
	return pos - off
}

// finish ends the output once the get ended with err. On success it
// syncs the partial and renames it over FILE; on failure it leaves FILE as
// it was, keeps the good bytes fetched in the partial, and adds to err
// what it kept. Only its first call does anything; later calls return what
// it returned.
func (o *output) finish(err error) error {
	if o.finished {
		return o.result
	}
	o.finished = true
	if err == nil {
		var renamed bool
		renamed, err = o.commit()
		if renamed || err == nil {
			o.result = err
			return err
		}
	}
	o.result = o.abandon(err)
	return o.result
}

// commit completes a successful get. renamed says whether FILE was
// replaced, even if err reports a later step that failed.
func (o *output) commit() (renamed bool, err error) {
	switch {
	case o.f == nil:
		return false, nil
	case o.inPlace:
		return false, o.f.Close()
	}
	if err := o.f.Sync(); err != nil {
		return false, fmt.Errorf("sync %s: %w", o.partial, err)
	}
	if o.orig != nil {
		if err := o.f.Chmod(o.orig.Mode().Perm()); err != nil {
			return false, err
		}
		if st, ok := o.orig.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
			o.f.Chown(int(st.Uid), int(st.Gid)) // best effort, as root only
		}
	}
	// Without its record the partial is never continued: a crash after
	// this leaves a partial that a --continue starts over.
	if err := os.Remove(o.record); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	if err := os.Rename(o.partial, o.target); err != nil {
		return false, err
	}
	// The lock is held until the partial has its final name.
	err = o.f.Close()
	if serr := syncDir(o.target); serr != nil {
		err = errors.Join(err, fmt.Errorf("%s written, but syncing its directory failed: %w", o.path, serr))
	}
	return true, err
}

// abandon ends a failed get and returns err with what it left: FILE as it
// was, and the good bytes fetched in the partial, if there are any.
func (o *output) abandon(err error) error {
	switch {
	case o.f == nil:
		return err
	case o.inPlace:
		o.f.Close()
		if o.written > 0 {
			return fmt.Errorf("%w; %d bytes were written into %s in place", err, o.written, o.path)
		}
		return err
	}
	note := o.path + " left unchanged"
	if !o.existed {
		note = o.path + " not created"
	}
	if o.good > 0 {
		serr := o.f.Truncate(o.good)
		if serr == nil {
			serr = o.f.Sync()
		}
		if serr == nil {
			serr = o.writeRecord(o.good)
		}
		if serr == nil {
			o.f.Close()
			return fmt.Errorf("%w; %s; the %d bytes fetched so far are kept in %s (resume with --continue)",
				err, note, o.good, o.partial)
		}
		note += fmt.Sprintf("; the bytes fetched so far could not be kept: %v", serr)
	}
	os.Remove(o.record)
	os.Remove(o.partial)
	o.f.Close()
	return fmt.Errorf("%w; %s", err, note)
}

// pathCount counts the reads of a get that took one path: the transport
// that received them and, when it is not the session's own choice, the
// code of the reason the read went there (docs/devmem.md, "Per-read path").
type pathCount struct {
	Transport string  `json:"transport"`
	Reason    *string `json:"reason"`           // nil: the session's transport, for the session's reason
	SmallRead *int64  `json:"small_read_bytes"` // the server's threshold with reason small-read; else nil
	Reads     int     `json:"reads"`
	Bytes     int64   `json:"bytes"`
}

// readPaths are a get's per-read path counts, in the order first seen.
type readPaths []pathCount

// add counts r, a read of a session whose own fallback reason is
// sessionReason.
func (p *readPaths) add(r engine.Result, sessionReason string) {
	var reason *string
	if r.FallbackReason != "" && r.FallbackReason != sessionReason {
		code, _, _ := strings.Cut(r.FallbackReason, ":")
		reason = &code
	}
	var small *int64
	if r.SmallRead > 0 {
		small = &r.SmallRead
	}
	for i := range *p {
		c := &(*p)[i]
		if c.Transport == r.Transport && equalPtr(c.Reason, reason) && equalPtr(c.SmallRead, small) {
			c.Reads++
			c.Bytes += r.Bytes
			return
		}
	}
	*p = append(*p, pathCount{Transport: r.Transport, Reason: reason, SmallRead: small, Reads: 1, Bytes: r.Bytes})
}

// equalPtr reports whether a and b are both nil or point to equal values.
func equalPtr[T comparable](a, b *T) bool {
	return a == b || a != nil && b != nil && *a == *b
}

// perRead reports whether some read took another path than the session's
// transport (named transport): then the summary lists the paths.
func (p readPaths) perRead(transport string) bool {
	return slices.ContainsFunc(p, func(c pathCount) bool { return c.Transport != transport || c.Reason != nil })
}

// String lists the paths as the summary does: "devmem-emulated 118 reads,
// tcp 10 reads (small-read < 64KiB)".
func (p readPaths) String() string {
	parts := make([]string, len(p))
	for i, c := range p {
		parts[i] = c.Transport + " " + cli.Plural(c.Reads, "read")
		switch {
		case c.Reason != nil && c.SmallRead != nil:
			parts[i] += fmt.Sprintf(" (%s < %s)", *c.Reason, cli.FormatSize(*c.SmallRead))
		case c.Reason != nil:
			parts[i] += " (" + *c.Reason + ")"
		}
	}
	return strings.Join(parts, ", ")
}
