//go:build !linux

package tcp

import "net"

// lowat is the receive low-water mark; other systems leave it at one byte.
type lowat struct{}

func newLowat(net.Conn) *lowat { return nil }

func (*lowat) set(int) error { return nil }
