//go:build !linux

package devmem

import (
	"net"

	"github.com/blockxfer/blockxfer/transport"
)

// Host returns the Kernel of the running system; on this system every
// operation fails with an error wrapping ErrNotSupported.
func Host() Kernel { return otherHost{} }

type otherHost struct{}

func (otherHost) Name() string                                { return transport.Devmem }
func (otherHost) BindRX(int, int, []uint32) (*Binding, error) { return nil, errNotLinux() }
func (otherHost) BindTX(int, int) (*Binding, error)           { return nil, errNotLinux() }
func (otherHost) open(net.Conn) (socket, error)               { return nil, errNotLinux() }
