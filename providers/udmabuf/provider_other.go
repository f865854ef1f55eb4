//go:build !linux

package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/blockxfer/blockxfer/providers/memory"
)

// Paths used on Linux.
const (
	devicePath    = "/dev/udmabuf"
	sizeLimitPath = "/sys/module/udmabuf/parameters/size_limit_mb"
)

func newProvider(dev, limitPath string) memory.Provider {
	fmt.Fprintf(os.Stderr, "blockxfer-provider-udmabuf: udmabuf is not supported on %s\n", runtime.GOOS)
	os.Exit(1)
	return nil
}
