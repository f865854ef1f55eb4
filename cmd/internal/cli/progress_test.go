package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestBar: the bar shows bytes done of the total and the rate in IEC
// units and an ETA, redraws at most every 100ms, and Finish erases it.
func TestBar(t *testing.T) {
	var out bytes.Buffer
	now := time.Unix(1000, 0)
	b := newBar(&out, 1<<30, "get weights", func() time.Time { return now })
	now = now.Add(time.Second)
	b.Progress(256<<20, 1<<30)
	want := "\rget weights  25% [=====>              ] 256.0 MiB / 1.0 GiB, 256.0 MiB/s, ETA 3s\x1b[K"
	if out.String() != want {
		t.Fatalf("bar %q, want %q", out.String(), want)
	}
	out.Reset()
	now = now.Add(10 * time.Millisecond)
	b.Progress(257<<20, 1<<30)
	if out.Len() != 0 {
		t.Errorf("redrawn after 10ms: %q", out.String())
	}
	b.Finish(nil)
	if out.String() != "\r\x1b[K" {
		t.Errorf("Finish wrote %q, want the line erased", out.String())
	}

	out.Reset()
	u := newBar(&out, -1, "import v", func() time.Time { return now })
	u.Progress(3<<20, -1)
	if s := out.String(); !strings.Contains(s, "import v 3.0 MiB, ") || strings.Contains(s, "ETA") {
		t.Errorf("bar of unknown total: %q", s)
	}

	// Not a terminal: nothing at all.
	var quiet bytes.Buffer
	q := NewBar(&quiet, 100, "x")
	q.Progress(50, 100)
	q.Finish(nil)
	if quiet.Len() != 0 {
		t.Errorf("bar drawn on a non-terminal: %q", quiet.String())
	}
}

// TestLogErasesBar: a log line written while a bar is drawn on the same
// writer starts on an erased line, and the bar is drawn again after it.
func TestLogErasesBar(t *testing.T) {
	var out bytes.Buffer
	now := time.Unix(1000, 0)
	b := newBar(&out, 100, "x", func() time.Time { return now })
	b.Progress(10, 100)
	log, err := NewLogger(&out, "text", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Warn("something")
	if s := out.String(); !strings.Contains(s, "\x1b[K\r\x1b[Ktime=") {
		t.Errorf("the log line is not on an erased line: %q", s)
	}
	out.Reset()
	b.Progress(11, 100) // within 100ms, but the bar was erased
	if !strings.HasPrefix(out.String(), "\rx ") {
		t.Errorf("bar not drawn again: %q", out.String())
	}
	b.Finish(nil)
}
