package choose

import "golang.org/x/sys/unix"

// bindToDevice sets SO_BINDTODEVICE on a socket.
func bindToDevice(fd int, ifname string) error { return unix.BindToDevice(fd, ifname) }
