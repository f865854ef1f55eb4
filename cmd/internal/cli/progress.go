package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/term"
)

// Bar is a progress bar drawn on one terminal line, such as
//
//	get weights  12% [==>                 ] 123.0 MiB / 1.0 GiB, 456.7 MiB/s, ETA 2s
//
// with sizes and rates in binary (IEC) units. It draws only on a
// terminal; elsewhere it does nothing. Finish erases it, so that what is
// printed next, an error included, starts on a clean line.
type Bar struct {
	mu    sync.Mutex
	w     io.Writer // nil: draws nothing
	what  string
	total int64
	start time.Time
	drawn time.Time // when the bar was last drawn; zero: not drawn
	now   func() time.Time
}

// barEvery is how often the bar is redrawn at most.
const barEvery = 100 * time.Millisecond

// NewBar returns a bar for total bytes (-1: unknown) described by what.
// It draws only when w is a terminal.
func NewBar(w io.Writer, total int64, what string) *Bar {
	if f, ok := w.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		w = nil
	}
	return newBar(w, total, what, time.Now)
}

func newBar(w io.Writer, total int64, what string, now func() time.Time) *Bar {
	return &Bar{w: w, what: what, total: total, start: now(), now: now}
}

// Progress sets the bar to done of total bytes (-1: unknown).
func (b *Bar) Progress(done, total int64) {
	if b.w == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total = total
	now := b.now()
	if !b.drawn.IsZero() && now.Sub(b.drawn) < barEvery && done != total {
		return
	}
	b.drawn = now
	fmt.Fprintf(b.w, "\r%s\x1b[K", b.line(done, now.Sub(b.start)))
	shown.Store(b)
}

// line renders the bar for done bytes after elapsed.
func (b *Bar) line(done int64, elapsed time.Duration) string {
	var s strings.Builder
	s.WriteString(b.what)
	rate := 0.0
	if secs := elapsed.Seconds(); secs > 0 {
		rate = float64(done) / secs
	}
	if b.total > 0 {
		frac := min(1, max(0, float64(done)/float64(b.total)))
		const width = 20
		fill := int(frac * width)
		bar := strings.Repeat("=", fill)
		if fill < width {
			bar += ">" + strings.Repeat(" ", width-fill-1)
		}
		fmt.Fprintf(&s, " %3.0f%% [%s] %s / %s", frac*100, bar, FormatBytes(float64(done)), FormatBytes(float64(b.total)))
	} else {
		fmt.Fprintf(&s, " %s", FormatBytes(float64(done)))
	}
	fmt.Fprintf(&s, ", %s/s", FormatBytes(rate))
	if b.total > 0 {
		eta := "-"
		if rate > 0 {
			eta = time.Duration(float64(b.total-done) / rate * float64(time.Second)).Round(time.Second).String()
		}
		s.WriteString(", ETA " + eta)
	}
	return s.String()
}

// Finish erases the bar, whether the work succeeded or failed (err), so
// that a summary or an error starts on a clean line.
func (b *Bar) Finish(error) {
	if b.w == nil {
		return
	}
	b.erase()
	shown.CompareAndSwap(b, nil)
}

// erase erases the bar if it is drawn; the next Progress draws it again.
func (b *Bar) erase() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.drawn.IsZero() {
		fmt.Fprint(b.w, "\r\x1b[K")
		b.drawn = time.Time{}
	}
}

// shown is the bar last drawn and not finished, if any.
var shown atomic.Pointer[Bar]

// barSafe is a writer that erases a progress bar drawn on the same
// terminal before each write, so that a log line never lands on the bar's
// line; the bar is drawn again below it on its next update.
type barSafe struct{ w io.Writer }

func (s barSafe) Write(p []byte) (int, error) {
	if b := shown.Load(); b != nil && b.w == s.w {
		b.erase()
	}
	return s.w.Write(p)
}
