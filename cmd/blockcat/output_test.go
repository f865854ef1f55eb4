package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/blockxfer/blockxfer/engine"
)

// testSource is a source of 100 bytes.
var testSource = source{Volume: "v", Server: "s:1", Generation: 3, Size: 100, ExtentSize: 10, Offset: 0, Length: 100}

// payload returns the 100 bytes of testSource.
func payload() []byte {
	b := make([]byte, 100)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func mustOpen(t *testing.T, path string, src source, resume bool) *output {
	t.Helper()
	o, err := openOutput(path, nil, io.Discard, src, resume)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func wantFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s: %q, %v; want %q", path, got, err, want)
	}
}

func wantAbsent(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s exists (%v)", p, err)
		}
	}
}

func TestOutputReplacesOnlyOnSuccess(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "out")
	partial, record := partialPaths(file)
	old := []byte("precious")
	if err := os.WriteFile(file, old, 0o640); err != nil {
		t.Fatal(err)
	}
	data := payload()

	// A get that fails before any byte is good keeps nothing.
	o := mustOpen(t, file, testSource, false)
	if err := o.write(data[:10], 0); err != nil {
		t.Fatal(err)
	}
	err := o.finish(errors.New("boom"))
	if err == nil || err.Error() != "boom; "+file+" left unchanged" {
		t.Fatalf("finish: %v", err)
	}
	wantFile(t, file, old)
	wantAbsent(t, partial, record)

	// One that fails later keeps the verified prefix.
	o = mustOpen(t, file, testSource, false)
	o.write(data[:30], 30)
	o.write(data[30:50], 10) // [40,50) unverified
	o.write(data[50:60], 10) // after a gap: not counted
	err = o.finish(errors.New("boom"))
	want := "boom; " + file + " left unchanged; the 40 bytes fetched so far are kept in " + partial + " (resume with --continue)"
	if err == nil || err.Error() != want {
		t.Fatalf("finish: %v\nwant %s", err, want)
	}
	wantFile(t, file, old)
	wantFile(t, partial, data[:40])

	// --continue picks up there and the success replaces FILE.
	o = mustOpen(t, file, testSource, true)
	if o.resumed != 40 {
		t.Fatalf("resumed %d, want 40", o.resumed)
	}
	o.write(data[40:], 60)
	if err := o.finish(nil); err != nil {
		t.Fatal(err)
	}
	wantFile(t, file, data)
	wantAbsent(t, partial, record)
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want the replaced file's 0640", st.Mode())
	}
	if err := o.finish(errors.New("later")); err != nil {
		t.Fatalf("second finish: %v", err)
	}
}

func TestOutputContinueRefusesAnotherSource(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "out")
	partial, record := partialPaths(file)
	data := payload()
	o := mustOpen(t, file, testSource, false)
	o.write(data[:50], 50)
	if err := o.finish(errors.New("boom")); !strings.Contains(err.Error(), file+" not created; the 50 bytes") {
		t.Fatalf("finish: %v", err)
	}
	wantAbsent(t, file)
	rec, _ := os.ReadFile(record)

	for _, tc := range []struct {
		change func(*source)
		why    string
	}{
		{func(s *source) { s.Generation++ }, "the volume was replaced since"},
		{func(s *source) { s.Volume = "w" }, "another volume"},
		{func(s *source) { s.Server = "s:2" }, "another volume"},
		{func(s *source) { s.Offset, s.Length = 10, 90 }, "another range"},
	} {
		src := testSource
		tc.change(&src)
		_, err := openOutput(file, nil, io.Discard, src, true)
		if err == nil || !strings.HasPrefix(err.Error(), "cannot continue: "+partial+" is a partial of v generation 3") ||
			!strings.Contains(err.Error(), tc.why+"; remove "+partial+", or run without --continue, to start over") {
			t.Fatalf("%+v: %v", src, err)
		}
		// Nothing was touched.
		wantFile(t, partial, data[:50])
		wantFile(t, record, rec)
	}

	// A get without --continue starts over, saying what it discards.
	var notes bytes.Buffer
	o, err := openOutput(file, nil, &notes, testSource, false)
	if err != nil {
		t.Fatal(err)
	}
	if o.resumed != 0 || !strings.Contains(notes.String(), "discarding the 50 bytes an earlier get kept in "+partial) {
		t.Fatalf("resumed %d, notes %q", o.resumed, notes.String())
	}
	// While it runs, a second get of the same FILE is refused.
	if _, err := openOutput(file, nil, io.Discard, testSource, true); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second get: %v", err)
	}
	o.write(data, 100)
	if err := o.finish(nil); err != nil {
		t.Fatal(err)
	}
	wantFile(t, file, data)
	wantAbsent(t, partial, record)

	// --continue with nothing to continue fetches everything.
	notes.Reset()
	o, err = openOutput(file, nil, &notes, testSource, true)
	if err != nil || o.resumed != 0 || !strings.Contains(notes.String(), "no partial of "+file+" to continue") {
		t.Fatalf("continue without a partial: %v, %q", err, notes.String())
	}
	o.finish(errors.New("boom"))
	wantFile(t, file, data)
	wantAbsent(t, partial, record)
}

func TestOutputInPlaceAndStdout(t *testing.T) {
	if _, err := openOutput(os.DevNull, nil, io.Discard, testSource, true); err == nil || !strings.Contains(err.Error(), "needs a regular file") {
		t.Fatalf("--continue into %s: %v", os.DevNull, err)
	}
	o := mustOpen(t, os.DevNull, testSource, false)
	if !o.inPlace || o.partial != "" {
		t.Fatalf("%s not written in place: %+v", os.DevNull, o)
	}
	o.write(payload(), 100)
	if err := o.finish(errors.New("boom")); err.Error() != "boom; 100 bytes were written into "+os.DevNull+" in place" {
		t.Fatalf("finish: %v", err)
	}
	var stdout bytes.Buffer
	o, err := openOutput("-", &stdout, io.Discard, testSource, false)
	if err != nil {
		t.Fatal(err)
	}
	o.write([]byte("abc"), 3)
	if err := o.finish(errors.New("boom")); err.Error() != "boom" || stdout.String() != "abc" {
		t.Fatalf("stdout: %v, %q", err, stdout.String())
	}
}

func TestVerifiedPrefix(t *testing.T) {
	e := func(off, n int64, ok bool) engine.ExtentTiming {
		return engine.ExtentTiming{VolumeOffset: off, Length: n, Verified: ok}
	}
	for _, tc := range []struct {
		ext  []engine.ExtentTiming
		want int64
	}{
		{nil, 0},
		{[]engine.ExtentTiming{e(120, 20, true), e(100, 20, true)}, 40}, // out of order
		{[]engine.ExtentTiming{e(100, 20, true), e(120, 20, false), e(140, 20, true)}, 20},
		{[]engine.ExtentTiming{e(100, 20, true), e(130, 20, true)}, 20}, // a gap
		{[]engine.ExtentTiming{e(100, 20, false)}, 0},
	} {
		if got := verifiedPrefix(100, tc.ext); got != tc.want {
			t.Errorf("%+v: %d, want %d", tc.ext, got, tc.want)
		}
	}
}

func TestExitCodeAfterSignal(t *testing.T) {
	for sig, code := range map[syscall.Signal]int{syscall.SIGINT: 130, syscall.SIGTERM: 143} {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(&signalError{sig: sig})
		var stderr bytes.Buffer
		err := stopCause(ctx, context.Canceled)
		if got := exitCode(ctx, err, &stderr); got != code {
			t.Errorf("%v: exit %d, want %d", sig, got, code)
		}
		// An error that does not name the signal is prefixed with it.
		stderr.Reset()
		if got := exitCode(ctx, errors.New("read failed"), &stderr); got != code || !strings.Contains(stderr.String(), "): read failed") {
			t.Errorf("%v: exit %d, %q", sig, got, stderr.String())
		}
	}
	var stderr bytes.Buffer
	if got := exitCode(context.Background(), errors.New("x"), &stderr); got != 1 {
		t.Errorf("plain failure: exit %d", got)
	}
}
