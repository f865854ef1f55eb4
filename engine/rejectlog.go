package engine

import (
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// rejectLog logs failures that an unauthenticated peer can cause (bad
// preambles, failed handshakes, stale tokens, accept errors) without letting
// a flood of them flood the log: the first burst lines of each interval are
// logged as they come; the rest are counted by reason and summed up in one
// line at the end of the interval. The metrics count every one.
type rejectLog struct {
	log   *slog.Logger
	every time.Duration // the interval
	burst int           // lines logged in full per interval

	mu         sync.Mutex
	start      time.Time      // of the current interval
	logged     int            // lines logged in it
	suppressed map[string]int // lines not logged in it, by reason
	flushing   bool           // a summary is scheduled
}

// note logs a rejection for reason, or counts it when the interval's burst
// is spent.
func (r *rejectLog) note(reason, msg string, args ...any) {
	r.mu.Lock()
	now := time.Now()
	if now.Sub(r.start) >= r.every {
		r.start, r.logged = now, 0
	}
	if r.logged < r.burst {
		r.logged++
		r.mu.Unlock()
		r.log.Warn(msg, append(args, "reason", reason)...)
		return
	}
	if r.suppressed == nil {
		r.suppressed = map[string]int{}
	}
	r.suppressed[reason]++
	if !r.flushing {
		r.flushing = true
		time.AfterFunc(r.every-now.Sub(r.start), r.flush)
	}
	r.mu.Unlock()
}

// flush writes the summary of what was suppressed.
func (r *rejectLog) flush() {
	r.mu.Lock()
	counts := r.suppressed
	r.suppressed, r.flushing = nil, false
	r.mu.Unlock()
	if len(counts) == 0 {
		return
	}
	args := []any{"interval", r.every}
	total := 0
	for _, reason := range slices.Sorted(maps.Keys(counts)) {
		args = append(args, reason, counts[reason])
		total += counts[reason]
	}
	r.log.Warn("more rejected connections, not logged one by one", append(args, "total", total)...)
}
