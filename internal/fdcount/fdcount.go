// Package fdcount counts the file descriptors of the test process, for
// tests that check a code path leaves none open.
package fdcount

import (
	"os"
	"testing"
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
