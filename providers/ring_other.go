//go:build !linux

package providers

import (
	"sync/atomic"
	"time"
)

// futexWait sleeps for d: there is no ring without plugins, which need
// Linux.
func futexWait(w *atomic.Uint32, val uint32, d time.Duration) { time.Sleep(d) }

// futexWake does nothing: there is no ring without plugins.
func futexWake(w *atomic.Uint32) {}
