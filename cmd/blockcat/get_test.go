package main

import (
	"io"
	"strings"
	"testing"
)

func TestWindowCount(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		n, window    int64
		depth, conns int
		extentSize   uint32
		want         int
	}{
		{1024 * mib, 8 * mib, 4, 4, 4 * mib, 4},   // the defaults: --depth
		{1024 * mib, 1 * mib, 2, 4, 4 * mib, 4},   // windows under an extent: one per connection
		{1024 * mib, 16 * mib, 1, 16, 4 * mib, 4}, // 16 connections need 64 MiB in flight
		{1024 * mib, 16 * mib, 6, 16, 4 * mib, 6}, // --depth above that stays
		{20 * mib, 16 * mib, 4, 4, 4 * mib, 2},    // no more than the fetch has windows
		{1024 * mib, 16 * mib, 3, 64, 0, 3},       // extent size unknown: --depth
	} {
		if got := windowCount(tc.n, tc.window, tc.depth, tc.conns, tc.extentSize); got != tc.want {
			t.Errorf("windowCount(%d, %d, depth %d, %d conns, extents of %d) = %d, want %d",
				tc.n, tc.window, tc.depth, tc.conns, tc.extentSize, got, tc.want)
		}
	}
}

func TestDefaultWindow(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		conns int
		want  int64
	}{
		{4, 1 * mib}, // the default --data-conns
		{64, 1 * mib},
		{3, 4 * mib},
		{1, 4 * mib},
	} {
		if got := defaultWindow(tc.conns); got != tc.want {
			t.Errorf("defaultWindow(%d data connections) = %d, want %d", tc.conns, got, tc.want)
		}
	}
}

func TestGetWindowFlag(t *testing.T) {
	f, err := parseGetFlags([]string{"host:1", "v"}, io.Discard)
	if err != nil || f.window != 0 {
		t.Fatalf("no --window: window %d, err %v; want 0 (the default for the fetch's size)", f.window, err)
	}
	if _, err := parseGetFlags([]string{"host:1", "v", "--window", "0"}, io.Discard); err == nil || !strings.Contains(err.Error(), "--window and --depth must be positive") {
		t.Errorf("--window 0: err %v, want it refused", err)
	}
	f, err = parseGetFlags([]string{"host:1", "v", "--window", "2MiB"}, io.Discard)
	if err != nil || f.window != 2<<20 {
		t.Errorf("--window 2MiB: window %d, err %v", f.window, err)
	}
}
