//go:build !linux

package devmem

// hostDmabufSync fails: there are no dmabufs on this system.
func hostDmabufSync(int, uint64) error { return errNotLinux() }
