//go:build !linux

package nic

import (
	"fmt"
	"runtime"
)

// errNotLinux is what every operation returns off Linux.
var errNotLinux = fmt.Errorf("%w on %s: devmem NIC setup needs Linux ethtool", ErrNotSupported, runtime.GOOS)

// Dial fails on systems other than Linux with an error wrapping
// ErrNotSupported that names the operating system.
func Dial() (*Client, error) { return nil, errNotLinux }
