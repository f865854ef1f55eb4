package catalog

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	crand "crypto/rand"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// Data directory layout.
const (
	catalogFile = "catalog.db"
	volumesDir  = "volumes"
	volumeExt   = ".vol"
	// tmpPrefix starts every in-flight file in volumes/. Volume names
	// cannot start with '.', so a temporary file never collides with a
	// volume file.
	tmpPrefix = ".tmp-"
)

// bufSize is the largest chunk read, generated or written at once.
const bufSize = 1 << 20

// Fill says what a new volume made by [Store.Create] contains.
type Fill int

// Fills for [Store.Create].
const (
	// FillZero makes a volume of zeros. The backing file is sparse: it is
	// created with ftruncate and takes no disk blocks until written.
	FillZero Fill = iota
	// FillRandom makes a volume of pseudo-random bytes: the AES-128-CTR
	// keystream under a fresh random key and IV, which runs at several GB/s
	// with AES instructions (a math/rand/v2 ChaCha8 stream manages about
	// 1 GB/s, crypto/rand much less). Every byte is written to disk. The
	// bytes are not meant as secrets, only as incompressible test data.
	FillRandom
)

// String returns "zero" or "random".
func (f Fill) String() string {
	switch f {
	case FillZero:
		return "zero"
	case FillRandom:
		return "random"
	}
	return fmt.Sprintf("Fill(%d)", int(f))
}

// ParseFill returns the Fill named by s, "zero" or "random". The error wraps
// [ErrInvalid].
func ParseFill(s string) (Fill, error) {
	switch s {
	case "zero":
		return FillZero, nil
	case "random":
		return FillRandom, nil
	}
	return 0, fmt.Errorf("catalog: fill %q: want zero or random: %w", s, ErrInvalid)
}

// OpOption configures one long-running Store operation.
type OpOption func(*opConfig)

// opConfig is what OpOptions set.
type opConfig struct {
	progress  func(done, total int64)
	blockSize int64 // of the block CRCs written; 0: BlockSizeFor
}

// WithProgress makes the operation call fn after every chunk it reads or
// writes (at most every MiB), with the bytes done so far and the total. The
// calls come from the goroutine running the operation, one at a time; on
// success the last call has done == total. fn must not block for long.
func WithProgress(fn func(done, total int64)) OpOption {
	return func(c *opConfig) { c.progress = fn }
}

// WithBlockSize makes Create, Import and Write store the volume's block
// CRCs in blocks of size bytes rather than BlockSizeFor's: a power of two
// from MinBlockSize that divides the extent size, up to MaxBlockSize (else
// the operation fails with [ErrInvalid]). Smaller blocks make a small
// partial read cheaper to check (only the blocks at its edges are read),
// for 4 bytes of catalog per block. The size is stored with the block
// CRCs; operations that recompute them later ([Store.AddBlocks], Recover)
// use BlockSizeFor.
func WithBlockSize(size int64) OpOption {
	return func(c *opConfig) { c.blockSize = size }
}

// newOpConfig applies opts.
func newOpConfig(opts []OpOption) *opConfig {
	c := &opConfig{}
	for _, o := range opts {
		o(c)
	}
	return c
}

// blockSizeFor returns the block size of the block CRCs of a volume of
// size bytes with extents of extentSize: WithBlockSize's, or BlockSizeFor's.
func (c *opConfig) blockSizeFor(size, extentSize int64) (int64, error) {
	bs := c.blockSize
	if bs == 0 {
		return BlockSizeFor(size, extentSize), nil
	}
	if !validBlockSize(bs, extentSize) {
		return 0, fmt.Errorf("block size %d: want a power of two from %d to %d that divides the extent size %d: %w",
			bs, MinBlockSize, MaxBlockSize, extentSize, ErrInvalid)
	}
	return bs, nil
}

// report calls the progress function, if any.
func (c *opConfig) report(done, total int64) {
	if c.progress != nil {
		c.progress(done, total)
	}
}

// Store is a blockd data directory: the catalog (dataDir/catalog.db) and the
// backing files of owned volumes (dataDir/volumes/<name>.vol). It holds the
// catalog's file lock until Close.
//
// A Store is safe for concurrent use. Operations on different volumes run
// concurrently; a Create, Import or Remove of a volume that another of those
// is working on fails at once instead of waiting.
type Store struct {
	dir    string
	volDir string
	cat    *Catalog

	mu   sync.Mutex
	busy map[string]bool // names with a Create, Import or Remove in progress
}

// OpenStore opens the data directory dataDir, creating it, its volumes/
// directory and its catalog if they do not exist. Temporary files left in
// volumes/ by an operation that did not finish (a crash) are removed.
//
// With opts.ReadOnly nothing is created or removed, and Create, Import and
// Remove fail with [ErrReadOnly]. Errors from opening the catalog are those
// of [Open].
func OpenStore(dataDir string, opts *Options) (*Store, error) {
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("catalog: open store %s: %w", dataDir, err)
	}
	readOnly := opts != nil && opts.ReadOnly
	volDir := filepath.Join(dir, volumesDir)
	if !readOnly {
		if err := os.MkdirAll(volDir, 0o750); err != nil {
			return nil, fmt.Errorf("catalog: open store %s: %w", dir, err)
		}
	}
	cat, err := Open(filepath.Join(dir, catalogFile), opts)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, volDir: volDir, cat: cat, busy: make(map[string]bool)}
	if !readOnly {
		// The catalog's exclusive lock is held, so no other process is
		// writing temporary files here.
		s.removeTemps()
	}
	return s, nil
}

// removeTemps removes leftover temporary files from volumes/. It is best
// effort: a file it cannot remove is retried at the next OpenStore.
func (s *Store) removeTemps() {
	ents, err := os.ReadDir(s.volDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) && e.Type().IsRegular() {
			os.Remove(filepath.Join(s.volDir, e.Name()))
		}
	}
}

// Catalog returns the store's catalog. It stays owned by the Store: do not
// Close it.
func (s *Store) Catalog() *Catalog { return s.cat }

// List returns every volume's record (see [Catalog.List]).
func (s *Store) List() ([]*Volume, error) { return s.cat.List() }

// Get returns one volume's record (see [Catalog.Get]).
func (s *Store) Get(name string) (*Volume, error) { return s.cat.Get(name) }

// FreeBytes returns the bytes free for new volumes on the file system of
// the data directory, or -1 where the system does not say (not Linux).
func (s *Store) FreeBytes() (int64, error) {
	n, err := freeBytes(s.volDir)
	if err != nil {
		return 0, fmt.Errorf("catalog: free space of %s: %w", s.volDir, err)
	}
	return n, nil
}

// Dir returns the absolute path of the data directory.
func (s *Store) Dir() string { return s.dir }

// Close closes the catalog and releases its lock. Operations still running
// fail.
func (s *Store) Close() error { return s.cat.Close() }

// volPath returns the path of the owned backing file for name.
func (s *Store) volPath(name string) string {
	return filepath.Join(s.volDir, name+volumeExt)
}

// begin checks that a store-changing operation may start on name and
// reserves the name until the returned release is called. busy is the
// sentinel to wrap when another operation holds the name.
func (s *Store) begin(op, name string, busy error) (release func(), err error) {
	if err := checkName(op, name); err != nil {
		return nil, err
	}
	if s.cat.readOnly {
		return nil, fmt.Errorf("catalog: %s %q: %w", op, name, ErrReadOnly)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[name] {
		return nil, fmt.Errorf("catalog: %s %q: another create, import or remove of it is in progress: %w",
			op, name, busy)
	}
	s.busy[name] = true
	return func() {
		s.mu.Lock()
		delete(s.busy, name)
		s.mu.Unlock()
	}, nil
}

// absent fails with ErrExists if name is in the catalog.
func (s *Store) absent(op, name string) error {
	_, err := s.cat.get(op, name)
	switch {
	case err == nil:
		return fmt.Errorf("catalog: %s %q: %w", op, name, ErrExists)
	case errors.Is(err, ErrNotFound):
		return nil
	}
	return err
}

// Create makes a new owned volume of size bytes, filled as fill says, in
// dataDir/volumes/<name>.vol, and adds it to the catalog. extentSize 0 means
// DefaultExtentSize.
//
// The file is written under a temporary name, synced and renamed before the
// catalog entry is committed, so the catalog never names a partial file. If
// ctx is cancelled or anything fails, the temporary file is removed, nothing
// is added, and the error says why (wrapping ctx.Err() on cancellation).
//
// Create fails with [ErrExists] if the name is taken, [ErrBadName] for a bad
// name, and [ErrInvalid] for a size <= 0, a bad extent size, or an unknown
// fill.
func (s *Store) Create(ctx context.Context, name string, size, extentSize int64, fill Fill, opts ...OpOption) (*Volume, error) {
	const op = "create"
	release, err := s.begin(op, name, ErrExists)
	if err != nil {
		return nil, err
	}
	defer release()
	if extentSize == 0 {
		extentSize = DefaultExtentSize
	}
	if p := checkGeometry(size, extentSize); p != "" {
		return nil, fmt.Errorf("catalog: %s %q: %s: %w", op, name, p, ErrInvalid)
	}
	var write func(ctx context.Context, f *os.File, size, extentSize int64, cfg *opConfig) (sums, error)
	switch fill {
	case FillZero:
		write = writeZero
	case FillRandom:
		write = writeRandom
	default:
		return nil, fmt.Errorf("catalog: %s %q: unknown %v: %w", op, name, fill, ErrInvalid)
	}
	if err := s.absent(op, name); err != nil {
		return nil, err
	}
	cfg := newOpConfig(opts)
	return s.writeOwned(ctx, op, name, size, extentSize, func(f *os.File) (sums, error) {
		return write(ctx, f, size, extentSize, cfg)
	})
}

// Import adds a volume whose contents are those of src, a regular file or a
// block device, reading all of it to compute the extent CRCs. extentSize 0
// means DefaultExtentSize.
//
// Without link, src is copied into dataDir/volumes/<name>.vol the way
// [Store.Create] writes (temporary file, sync, rename, then the catalog
// entry) and the volume is owned. With link, the volume refers to src in
// place by its absolute path (Owned false): Remove will leave it alone, and
// if it later changes the CRCs no longer match (see [Store.Verify]). Linking
// is the practical way to serve a block device.
//
// Import fails with [ErrExists] if the name is taken, [ErrBadName] for a bad
// name, and [ErrInvalid] if src is neither a regular file nor a block device,
// is empty, is too large for the extent size, or (with link) lies in the
// store's volumes/ directory. Cancelling ctx stops it with nothing added.
func (s *Store) Import(ctx context.Context, name, src string, extentSize int64, link bool, opts ...OpOption) (*Volume, error) {
	const op = "import"
	release, err := s.begin(op, name, ErrExists)
	if err != nil {
		return nil, err
	}
	defer release()
	if extentSize == 0 {
		extentSize = DefaultExtentSize
	}
	abs, err := filepath.Abs(src)
	if err != nil {
		return nil, fmt.Errorf("catalog: %s %q: source %s: %w", op, name, src, err)
	}
	if link && filepath.Dir(abs) == s.volDir {
		return nil, fmt.Errorf("catalog: %s %q: source %s is in the store's volumes directory; import it without link: %w",
			op, name, abs, ErrInvalid)
	}
	in, err := os.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("catalog: %s %q: %w", op, name, err)
	}
	defer in.Close()
	size, err := sizeOf(in)
	if err != nil {
		if errors.Is(err, errKind) {
			err = fmt.Errorf("%w: %w", err, ErrInvalid)
		}
		return nil, fmt.Errorf("catalog: %s %q: source %s: %w", op, name, abs, err)
	}
	if p := checkGeometry(size, extentSize); p != "" {
		return nil, fmt.Errorf("catalog: %s %q: source %s: %s: %w", op, name, abs, p, ErrInvalid)
	}
	if err := s.absent(op, name); err != nil {
		return nil, err
	}
	cfg := newOpConfig(opts)
	read := func(p []byte) error {
		if err := readFull(in, p); err != nil {
			return fmt.Errorf("source %s: %w", abs, err)
		}
		return nil
	}
	if link {
		sum, err := pump(ctx, size, extentSize, cfg, read, nil)
		if err != nil {
			return nil, fmt.Errorf("catalog: %s %q: %w", op, name, err)
		}
		v := &Volume{Name: name, Size: size, ExtentSize: extentSize, Backing: abs, CRCs: sum.extents, Blocks: sum.blocks}
		if err := s.cat.put(op, v); err != nil {
			return nil, err
		}
		return v, nil
	}
	return s.writeOwned(ctx, op, name, size, extentSize, func(f *os.File) (sums, error) {
		if err := preallocate(f, size); err != nil {
			return sums{}, err
		}
		return pump(ctx, size, extentSize, cfg, read, func(p []byte) error {
			_, err := f.Write(p)
			return err
		})
	})
}

// readFull fills p from r, calling a short read an error.
func readFull(r io.Reader, p []byte) error {
	n, err := io.ReadFull(r, p)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("ended %d bytes early: it shrank while being read", len(p)-n)
	}
	return err
}

// writeOwned writes an owned volume's file with write, under a temporary
// name in volumes/, then syncs it, renames it to <name>.vol, syncs the
// directory and commits the catalog entry. On any failure it removes what it
// wrote. The caller holds name's reservation and has checked it is absent.
func (s *Store) writeOwned(ctx context.Context, op, name string, size, extentSize int64,
	write func(f *os.File) (sums, error)) (*Volume, error) {
	return s.writeBacking(ctx, op, name, s.volPath(name), size, extentSize, write,
		func(v *Volume) error { return s.cat.put(op, v) })
}

// writeBacking is writeOwned with the backing path and the catalog commit
// chosen by the caller: it writes a temporary file with write, syncs it,
// renames it to backing (in volumes/), syncs the directory and calls commit
// with the new volume. On any failure it removes what it wrote. The caller
// holds name's reservation.
func (s *Store) writeBacking(ctx context.Context, op, name, backing string, size, extentSize int64,
	write func(f *os.File) (sums, error), commit func(v *Volume) error) (*Volume, error) {
	fail := func(err error) (*Volume, error) {
		return nil, fmt.Errorf("catalog: %s %q: %w", op, name, err)
	}
	f, err := os.CreateTemp(s.volDir, tmpPrefix+name+"-*")
	if err != nil {
		return fail(err)
	}
	tmp := f.Name()
	sum, err := write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = os.Rename(tmp, backing)
	}
	if err != nil {
		os.Remove(tmp)
		return fail(err)
	}
	v := &Volume{Name: name, Size: size, ExtentSize: extentSize, Backing: backing, Owned: true, CRCs: sum.extents, Blocks: sum.blocks}
	if err := syncDir(s.volDir); err != nil {
		os.Remove(v.Backing)
		return fail(err)
	}
	if err := commit(v); err != nil {
		// The name is reserved, so the file is ours. If an entry
		// appeared anyway (a Put through Catalog), leave the file to it.
		if !errors.Is(err, ErrExists) {
			os.Remove(v.Backing)
		}
		return nil, err
	}
	return v, nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeZero makes f a sparse file of size zero bytes and returns the CRCs of
// its extents and blocks.
func writeZero(ctx context.Context, f *os.File, size, extentSize int64, cfg *opConfig) (sums, error) {
	if err := ctx.Err(); err != nil {
		return sums{}, err
	}
	if err := f.Truncate(size); err != nil {
		return sums{}, err
	}
	bs, err := cfg.blockSizeFor(size, extentSize)
	if err != nil {
		return sums{}, err
	}
	cfg.report(size, size)
	return sums{extents: zeroCRCs(size, extentSize), blocks: &Blocks{Size: bs, CRCs: zeroCRCs(size, bs)}}, nil
}

// zeroCRCs returns the CRCs of size zero bytes cut into pieces of unit.
func zeroCRCs(size, unit int64) []uint32 {
	n := (size + unit - 1) / unit
	crcs := make([]uint32, n)
	full := zeroCRC(unit)
	for i := range crcs {
		crcs[i] = full
	}
	if last := size - (n-1)*unit; last != unit {
		crcs[n-1] = zeroCRC(last)
	}
	return crcs
}

// zeroCRC returns the CRC-32C of n zero bytes.
func zeroCRC(n int64) uint32 {
	var zeros [64 << 10]byte
	var crc uint32
	for n > 0 {
		k := min(n, int64(len(zeros)))
		crc = crc32.Update(crc, castagnoli, zeros[:k])
		n -= k
	}
	return crc
}

// writeRandom writes size pseudo-random bytes to f and returns the CRCs of
// its extents and blocks.
func writeRandom(ctx context.Context, f *os.File, size, extentSize int64, cfg *opConfig) (sums, error) {
	if err := preallocate(f, size); err != nil {
		return sums{}, err
	}
	var seed [32]byte
	crand.Read(seed[:])
	block, err := aes.NewCipher(seed[:16])
	if err != nil {
		return sums{}, err
	}
	stream := cipher.NewCTR(block, seed[16:])
	return pump(ctx, size, extentSize, cfg,
		func(p []byte) error {
			clear(p)
			stream.XORKeyStream(p, p)
			return nil
		},
		func(p []byte) error {
			_, err := f.Write(p)
			return err
		})
}

// sums are the CRC-32Cs of a volume's bytes as they were written: one per
// extent and one per block.
type sums struct {
	extents []uint32
	blocks  *Blocks
}

// pump moves size bytes through a buffer, extent by extent, in chunks of at
// most bufSize: src fills each chunk, its bytes are added to the extent's
// and the blocks' CRC-32C, and then sink (if not nil) consumes it. It checks
// ctx and reports progress after every chunk, and returns the CRCs.
func pump(ctx context.Context, size, extentSize int64, cfg *opConfig,
	src, sink func(p []byte) error) (sums, error) {
	n, ok := extentCount(size, extentSize)
	if !ok {
		return sums{}, fmt.Errorf("size %d in extents of %d: %w", size, extentSize, ErrInvalid)
	}
	bs, err := cfg.blockSizeFor(size, extentSize)
	if err != nil {
		return sums{}, err
	}
	buf := make([]byte, min(bufSize, size))
	crcs := make([]uint32, n)
	blocks := newBlockSummer(size, bs)
	var done int64
	for i := range crcs {
		var crc uint32
		for left := min(extentSize, size-done); left > 0; {
			if err := ctx.Err(); err != nil {
				return sums{}, err
			}
			p := buf[:min(int64(len(buf)), left)]
			if err := src(p); err != nil {
				return sums{}, fmt.Errorf("extent %d at byte %d: %w", i, done, err)
			}
			crc = crc32.Update(crc, castagnoli, p)
			blocks.write(p)
			if sink != nil {
				if err := sink(p); err != nil {
					return sums{}, fmt.Errorf("extent %d at byte %d: %w", i, done, err)
				}
			}
			done += int64(len(p))
			left -= int64(len(p))
			cfg.report(done, size)
		}
		crcs[i] = crc
	}
	blocks.flush()
	return sums{extents: crcs, blocks: blocks.b}, nil
}

// Remove deletes the named volume: first its catalog entry, then, if the
// volume is owned, its backing file. A linked backing (Owned false) is left
// alone. If the entry is deleted but the file cannot be, the error says so;
// the leftover file is harmless and is replaced by the next Create or Import
// of that name.
//
// Remove fails with [ErrNotFound] if there is no such volume (or one is
// still being created).
func (s *Store) Remove(ctx context.Context, name string) error {
	const op = "remove"
	release, err := s.begin(op, name, ErrNotFound)
	if err != nil {
		return err
	}
	defer release()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("catalog: %s %q: %w", op, name, err)
	}
	v, err := s.cat.Delete(name)
	if err != nil {
		return err
	}
	if !v.Owned {
		return nil
	}
	if filepath.Dir(v.Backing) != s.volDir {
		return fmt.Errorf("catalog: %s %q: removed from the catalog, but its owned backing %s is outside %s, so it was left in place",
			op, name, v.Backing, s.volDir)
	}
	if err := os.Remove(v.Backing); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("catalog: %s %q: removed from the catalog, but not its backing: %w", op, name, err)
	}
	return nil
}

// Open opens the named volume's backing read-only and returns it with the
// volume. It fails with an error wrapping [ErrBacking] if the backing is
// gone, is no longer a regular file or block device, or is now smaller than
// the volume, and with [ErrNotFound] if there is no such volume. The caller
// closes the file.
func (s *Store) Open(name string) (*os.File, *Volume, error) {
	return s.open("open", name)
}

// open is Open with op in the error messages.
func (s *Store) open(op, name string) (*os.File, *Volume, error) {
	v, err := s.cat.get(op, name)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Open(v.Backing)
	if err != nil {
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOMEM) {
			// The process or system ran out of resources: the backing
			// is fine, so do not call it missing.
			return nil, nil, fmt.Errorf("catalog: %s %q: %w", op, name, err)
		}
		return nil, nil, fmt.Errorf("catalog: %s %q: %w: %w", op, name, ErrBacking, err)
	}
	size, err := sizeOf(f)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("catalog: %s %q: backing %s: %w: %w", op, name, v.Backing, ErrBacking, err)
	}
	if size < v.Size {
		f.Close()
		return nil, nil, fmt.Errorf("catalog: %s %q: backing %s is %d bytes, the volume needs %d: %w",
			op, name, v.Backing, size, v.Size, ErrBacking)
	}
	return f, v, nil
}

// Verify re-reads every extent of the named volume and returns the indexes
// of those whose CRC-32C no longer matches the catalog, in increasing order
// (nil if all match). Errors opening the backing are those of [Store.Open];
// a read error or cancelled ctx stops it with an error.
func (s *Store) Verify(ctx context.Context, name string, opts ...OpOption) (bad []int, err error) {
	_, _, bad, err = s.reread(ctx, "verify", name, opts)
	return bad, err
}

// reread reads the named volume's backing once, computing its CRCs, and
// returns the volume, the CRCs, and the extents whose CRC no longer matches
// the stored one. Errors opening the backing are those of [Store.Open].
func (s *Store) reread(ctx context.Context, op, name string, opts []OpOption) (*Volume, sums, []int, error) {
	f, v, err := s.open(op, name)
	if err != nil {
		return nil, sums{}, nil, err
	}
	defer f.Close()
	sum, err := pump(ctx, v.Size, v.ExtentSize, newOpConfig(opts),
		func(p []byte) error { return readFull(f, p) }, nil)
	if err != nil {
		return nil, sums{}, nil, fmt.Errorf("catalog: %s %q: backing %s: %w", op, name, v.Backing, err)
	}
	var bad []int
	for i, c := range sum.extents {
		if c != v.CRCs[i] {
			bad = append(bad, i)
		}
	}
	return v, sum, bad, nil
}

// errKind is wrapped by sizeOf for a file that is neither a regular file nor
// a block device.
var errKind = errors.New("not a regular file or block device")

// sizeOf returns the size of f, which must be a regular file or a block
// device.
func sizeOf(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	m := st.Mode()
	switch {
	case m.IsRegular():
		return st.Size(), nil
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0:
		return deviceSize(f)
	}
	return 0, fmt.Errorf("is %s: %w", FileKind(m), errKind)
}

// FileKind names the kind of file m describes, for error messages: "a
// directory", "a named pipe", ... ("a regular file" for one).
func FileKind(m os.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	}
	return fmt.Sprintf("of type %v", m.Type())
}
