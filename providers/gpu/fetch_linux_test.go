//go:build linux && cgo

package main

import (
	"testing"

	"github.com/blockxfer/blockxfer/engine/enginetest"
	"github.com/blockxfer/blockxfer/providers"
)

// TestFetchIntoGPU fetches a volume from a blockd engine into GPU memory
// through the plugin (over TCP: the bytes land in the plugin's pinned
// staging and are copied to the device; every extent's CRC-32C is checked
// on the GPU buffer), and reads it back. It runs against the stand-in
// driver and, where one is installed, the real libcuda.so.1
// (scripts/gpu-check.sh).
func TestFetchIntoGPU(t *testing.T) {
	eachDriver(t, func(t *testing.T, p *providers.Plugin, fake bool) {
		driver := map[bool]string{true: "fake", false: "real"}[fake]
		const size = 24<<20 + 4096
		res := enginetest.FetchAll(t, p, size)
		t.Logf("%s driver: fetched %d bytes into %s (%s) over %s, verified", driver, size, p.Capabilities().Device, p.Version(), res.Transport)
	})
}
