package catalog

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/iotest"
)

func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func TestWriteNewAndReplace(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	first := randomBytes(3*MinExtentSize+100, 1)
	var calls int
	v1, err := s.Write(ctx, "v", int64(len(first)), MinExtentSize, bytes.NewReader(first), false,
		WithProgress(func(done, total int64) { calls++ }))
	if err != nil {
		t.Fatal(err)
	}
	if calls == 0 || !slices.Equal(v1.CRCs, independentCRCs(first, MinExtentSize)) || !v1.Owned {
		t.Fatalf("volume %+v after %d progress calls", v1, calls)
	}
	if got, _ := os.ReadFile(v1.Backing); !bytes.Equal(got, first) || filepath.Base(v1.Backing) != "v.vol" {
		t.Fatalf("backing %s does not hold the bytes", v1.Backing)
	}

	_, err = s.Write(ctx, "v", 1, 0, bytes.NewReader([]byte{1}), false)
	if !errors.Is(err, ErrExists) {
		t.Fatalf("Write over an existing volume without replace: %v", err)
	}
	checkPrefix(t, err, `catalog: write "v": `)

	// Replace twice: the backing alternates, generations grow, the old
	// file goes away, and a reader holding the old file keeps its bytes.
	old, _, err := s.Open("v")
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	prev := v1
	for i, n := range []int{MinExtentSize, 5 * MinExtentSize} {
		data := randomBytes(n, byte(10+i))
		v, err := s.Write(ctx, "v", int64(n), 0, bytes.NewReader(data), true)
		if err != nil {
			t.Fatal(err)
		}
		if v.Generation <= prev.Generation || v.Backing == prev.Backing || !v.Created.Equal(v1.Created) {
			t.Fatalf("replace %d: %+v after %+v", i, v, prev)
		}
		got, err := s.Catalog().Get("v")
		if err != nil || got.Generation != v.Generation || !slices.Equal(got.CRCs, independentCRCs(data, DefaultExtentSize)) {
			t.Fatalf("catalog after replace %d: %+v, %v", i, got, err)
		}
		if b, _ := os.ReadFile(v.Backing); !bytes.Equal(b, data) {
			t.Fatalf("replace %d: backing differs", i)
		}
		if _, err := os.Stat(prev.Backing); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("replace %d: old backing %s still there: %v", i, prev.Backing, err)
		}
		prev = v
	}
	head := make([]byte, 100)
	if _, err := old.ReadAt(head, 0); err != nil || !bytes.Equal(head, first[:100]) {
		t.Fatalf("open reader lost the old bytes: %v", err)
	}
	if files := volumeFiles(t, s); len(files) != 1 {
		t.Fatalf("volumes/ holds %v", files)
	}

	// Replace of a name that does not exist creates it.
	v, err := s.Write(ctx, "fresh", 10, 0, bytes.NewReader(make([]byte, 10)), true)
	if err != nil || v.Generation <= prev.Generation {
		t.Fatalf("replace-create: %+v, %v", v, err)
	}
}

// failAfter fails reads once n bytes were delivered.
type failAfter struct {
	r io.Reader
	n int
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("link went down")
	}
	p = p[:min(len(p), f.n)]
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func TestWriteFailuresChangeNothing(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	keep := randomBytes(MinExtentSize, 3)
	if _, err := s.Write(ctx, "keep", int64(len(keep)), 0, bytes.NewReader(keep), false); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Catalog().Get("keep")
	data := randomBytes(3<<20, 4)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	cases := []struct {
		name string
		ctx  context.Context
		r    io.Reader
		size int64
		ext  int64
		want string
	}{
		{"short", ctx, bytes.NewReader(data[:100]), int64(len(data)), 0, "source ended after 100 of"},
		{"long", ctx, bytes.NewReader(data), int64(len(data)) - 1, 0, "more than the volume's"},
		{"reader error", ctx, &failAfter{bytes.NewReader(data), 1 << 20}, int64(len(data)), 0, "link went down"},
		{"reader error at EOF", ctx, &failAfter{bytes.NewReader(data), len(data)}, int64(len(data)), 0, "link went down"},
		{"cancelled", cancelled, bytes.NewReader(data), int64(len(data)), 0, "context canceled"},
		{"bad extent", ctx, bytes.NewReader(data), int64(len(data)), 1000, "extent size"},
		{"empty", ctx, bytes.NewReader(nil), 0, 0, "not positive"},
		{"one byte reads", ctx, iotest.OneByteReader(bytes.NewReader(data[:10])), 11, 0, "source ended after 10 of 11"},
	}
	for _, tc := range cases {
		for _, replace := range []bool{false, true} {
			_, err := s.Write(tc.ctx, "keep", tc.size, tc.ext, tc.r, replace)
			if !replace {
				// The existence check comes after the argument
				// checks, so a bad argument still reports itself.
				if err == nil {
					t.Fatalf("%s: Write succeeded", tc.name)
				}
				continue
			}
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Fatalf("%s: Write = %v, want error containing %q", tc.name, err, tc.want)
			}
			checkPrefix(t, err, `catalog: write "keep": `)
			if seeker, ok := tc.r.(io.Seeker); ok {
				seeker.Seek(0, io.SeekStart)
			}
		}
	}
	after, _ := s.Catalog().Get("keep")
	if after.Generation != before.Generation || after.Backing != before.Backing {
		t.Fatalf("failed writes changed the volume: %+v -> %+v", before, after)
	}
	if files := volumeFiles(t, s); !slices.Equal(files, []string{"keep.vol"}) {
		t.Fatalf("volumes/ holds %v after failed writes", files)
	}
}

// blockingReader delivers its bytes, then blocks until release is closed.
type blockingReader struct {
	data    []byte
	release chan struct{}
	reached chan struct{}
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if len(b.data) > 0 {
		n := copy(p, b.data)
		b.data = b.data[n:]
		return n, nil
	}
	close(b.reached)
	<-b.release
	return 0, io.EOF
}

func TestWriteReservesName(t *testing.T) {
	s := newStore(t)
	br := &blockingReader{data: randomBytes(MinExtentSize, 5), release: make(chan struct{}), reached: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := s.Write(context.Background(), "busy", MinExtentSize, 0, br, false)
		done <- err
	}()
	<-br.reached
	// Every byte is in, but the stream has not ended: nothing is listed
	// yet and the name is taken.
	if _, err := s.Catalog().Get("busy"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("volume listed before its stream ended: %v", err)
	}
	if _, err := s.Write(context.Background(), "busy", 1, 0, bytes.NewReader([]byte{1}), true); !errors.Is(err, ErrExists) {
		t.Fatalf("concurrent Write of the same name: %v", err)
	}
	close(br.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := s.Catalog().Get("busy"); err != nil {
		t.Fatal(err)
	}
}
