//go:build !linux

package choose

import "github.com/blockxfer/blockxfer/internal/syserr"

// bindToDevice fails: devmem TX, the only user, needs Linux.
func bindToDevice(fd int, ifname string) error { return syserr.NotOnThisOS("SO_BINDTODEVICE") }
