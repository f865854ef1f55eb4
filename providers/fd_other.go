//go:build !linux

package providers

// closeFD does nothing: no fd is ever received on this system.
func closeFD(fd int) {}
