package main

import "testing"

func TestWindowCount(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		n, window    int64
		depth, conns int
		extentSize   uint32
		want         int
	}{
		{1024 * mib, 16 * mib, 4, 4, 4 * mib, 4},  // the defaults: --depth
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
