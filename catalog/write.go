package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// altSuffix names the second backing file a replaced owned volume
// alternates with: volumes/<name>.vol and volumes/<name>.vol.1. No volume's
// own backing (which ends in ".vol") and no temporary file (which starts
// with ".tmp-") can have that name.
const altSuffix = volumeExt + ".1"

// Write makes the owned volume name from a stream: exactly size bytes read
// from r, which must then report io.EOF. extentSize 0 means
// DefaultExtentSize. The extent CRCs are computed as the bytes pass, and the
// file is written the way [Store.Create] writes (temporary file, fsync,
// rename, directory fsync, then the catalog commit), so the catalog never
// names a partial file.
//
// Without replace, Write fails with [ErrExists] if the name is taken. With
// replace, an existing volume of that name is replaced when the new one
// commits: the new bytes go to the backing file the old volume does not use
// (volumes/<name>.vol or volumes/<name>.vol.1), the catalog entry is
// replaced in one transaction (so the generation grows), and then the old
// owned backing is removed. Readers that opened the old volume keep reading
// its old bytes. A crash at any point leaves either the old volume or the
// new one in the catalog, each with its own file; see docs/catalog.md.
//
// If ctx is cancelled, r fails, r ends early or has more than size bytes,
// nothing changes and the error says why. The name is reserved for the
// whole call, so a concurrent Create, Import, Remove or Write of it fails at
// once with ErrExists (or ErrNotFound for Remove).
func (s *Store) Write(ctx context.Context, name string, size, extentSize int64, r io.Reader, replace bool, opts ...OpOption) (*Volume, error) {
	const op = "write"
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
	var old *Volume
	if replace {
		old, err = s.cat.get(op, name)
		if errors.Is(err, ErrNotFound) {
			old, err = nil, nil
		}
		if err != nil {
			return nil, err
		}
	} else if err := s.absent(op, name); err != nil {
		return nil, err
	}
	backing := s.volPath(name)
	commit := func(v *Volume) error { return s.cat.put(op, v) }
	if old != nil {
		if old.Backing == backing {
			backing = filepath.Join(s.volDir, name+altSuffix)
		}
		commit = s.cat.Replace
	}
	cfg := newOpConfig(opts)
	var got int64
	v, err := s.writeBacking(ctx, op, name, backing, size, extentSize, func(f *os.File) (sums, error) {
		if err := preallocate(f, size); err != nil {
			return sums{}, err
		}
		sum, err := pump(ctx, size, extentSize, cfg,
			func(p []byte) error {
				n, err := io.ReadFull(r, p)
				got += int64(n)
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return fmt.Errorf("source ended after %d of %d bytes: %w", got, size, io.ErrUnexpectedEOF)
				}
				if err != nil {
					return fmt.Errorf("source: %w", err)
				}
				return nil
			},
			func(p []byte) error {
				_, err := f.Write(p)
				return err
			})
		if err != nil {
			return sums{}, err
		}
		return sum, expectEOF(r, size)
	}, commit)
	if err != nil {
		return nil, err
	}
	if old != nil && old.Owned && old.Backing != v.Backing && filepath.Dir(old.Backing) == s.volDir {
		// Best effort: a leftover is replaced by the next Write of name.
		os.Remove(old.Backing)
	}
	return v, nil
}

// expectEOF checks that r has nothing after its first size bytes.
func expectEOF(r io.Reader, size int64) error {
	var b [1]byte
	for {
		n, err := r.Read(b[:])
		switch {
		case n > 0:
			return fmt.Errorf("source has more than the volume's %d bytes: %w", size, ErrInvalid)
		case err == io.EOF:
			return nil
		case err != nil:
			return fmt.Errorf("source: %w", err)
		}
	}
}
