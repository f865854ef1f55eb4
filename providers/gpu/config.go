package main

import (
	"fmt"
	"strconv"
)

// Environment variables the plugin reads.
const (
	// deviceEnv selects the CUDA device ordinal.
	deviceEnv = "BLOCKXFER_GPU_DEVICE"
	// libraryEnv overrides the driver library path.
	libraryEnv = "BLOCKXFER_LIBCUDA"
	// defaultLibrary is the CUDA driver library every NVIDIA driver installs.
	defaultLibrary = "libcuda.so.1"
)

// config is the plugin's configuration.
type config struct {
	device   int    // CUDA device ordinal
	library  string // path or soname given to dlopen
	override bool   // library came from libraryEnv
	err      error  // a bad setting; makes the provider unusable
}

// resolveConfig picks the device (flag if >= 0, else deviceEnv, else 0) and
// the driver library (libraryEnv, else libcuda.so.1).
func resolveConfig(flagDevice int, getenv func(string) string) config {
	c := config{device: 0, library: defaultLibrary}
	if lib := getenv(libraryEnv); lib != "" {
		c.library, c.override = lib, true
	}
	switch {
	case flagDevice >= 0:
		c.device = flagDevice
	case getenv(deviceEnv) != "":
		n, err := strconv.Atoi(getenv(deviceEnv))
		if err != nil || n < 0 {
			c.err = fmt.Errorf("%s=%q: want a CUDA device ordinal (0, 1, ...)", deviceEnv, getenv(deviceEnv))
		}
		c.device = n
	}
	return c
}
