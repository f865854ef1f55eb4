//go:build !linux

package devmem

import (
	"fmt"
	"net"
	"runtime"

	"github.com/blockxfer/blockxfer/transport"
)

// SoftNIC is the software NIC; it needs Linux.
type SoftNIC struct{}

// NewSoftNIC returns an error wrapping ErrNotSupported: the software NIC
// emulates Linux devmem TCP on Linux TCP sockets.
func NewSoftNIC(SoftNICConfig) (*SoftNIC, error) {
	return nil, fmt.Errorf("%w on %s", ErrNotSupported, runtime.GOOS)
}

// Name returns "devmem-emulated".
func (*SoftNIC) Name() string { return transport.DevmemEmulated }

// BindRX is not supported on this system.
func (*SoftNIC) BindRX(int, int, []uint32) (*Binding, error) { return nil, errNotLinux() }

// BindTX is not supported on this system.
func (*SoftNIC) BindTX(int, int) (*Binding, error) { return nil, errNotLinux() }

// Steer is not supported on this system.
func (*SoftNIC) Steer(net.Conn, uint32) error { return errNotLinux() }

// FailHeaderSplit does nothing on this system.
func (*SoftNIC) FailHeaderSplit(int) {}

// ReleaseCompletions does nothing on this system.
func (*SoftNIC) ReleaseCompletions() {}

// Stats returns zero counters on this system.
func (*SoftNIC) Stats() SoftNICStats { return SoftNICStats{} }

// Check returns nil on this system.
func (*SoftNIC) Check() error { return nil }

func (*SoftNIC) open(net.Conn) (socket, error) { return nil, errNotLinux() }

func errNotLinux() error { return fmt.Errorf("%w on %s", ErrNotSupported, runtime.GOOS) }
