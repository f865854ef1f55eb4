//go:build linux

package nic

import (
	"fmt"
	"os"
	"testing"
)

// TestMain fails the run if the tests leave file descriptors open.
func TestMain(m *testing.M) {
	// The first pollable file starts the runtime's netpoller (an epoll
	// descriptor and an eventfd that stay open); start it before counting.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		fmt.Fprintln(os.Stderr, "read /proc/self/fd:", err)
		os.Exit(1)
	}
	code := m.Run()
	after, err := os.ReadDir("/proc/self/fd")
	if err == nil && code == 0 && len(after) != len(before) {
		fmt.Fprintf(os.Stderr, "file descriptor leak: %d open before the tests, %d after\n", len(before), len(after))
		code = 1
	}
	os.Exit(code)
}
