// Package fdcount counts the file descriptors of the test process, for
// tests that check a code path leaves none open.
package fdcount

import (
	"os"
	"testing"
	"time"
)

// Open returns how many file descriptors the process has open: the
// entries of /proc/self/fd. It fails tb where that cannot be read.
func Open(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	return len(ents)
}

// Await returns how many file descriptors the process has open once that
// is want, or after a second if it never gets there: for a check that
// follows a Close whose library finishes tearing down a connection on a
// goroutine of its own, with nothing to wait on for it.
func Await(tb testing.TB, want int) int {
	tb.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		n := Open(tb)
		if n == want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(time.Millisecond)
	}
}
