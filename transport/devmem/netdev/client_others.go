//go:build !linux

package netdev

import (
	"github.com/mdlayher/genetlink"

	"github.com/blockxfer/blockxfer/internal/syserr"
)

// Client talks to the Linux netdev generic netlink family; on this system
// every method fails with an error wrapping ErrNotSupported.
type Client struct{}

// Dial returns an error wrapping ErrNotSupported that names runtime.GOOS.
func Dial() (*Client, error) { return nil, errNotLinux() }

// NewClient returns an error wrapping ErrNotSupported that names
// runtime.GOOS.
func NewClient(func() (*genetlink.Conn, error)) (*Client, error) { return nil, errNotLinux() }

// Close does nothing.
func (*Client) Close() error { return nil }

// FamilyID returns 0.
func (*Client) FamilyID() uint16 { return 0 }

// FamilyVersion returns 0.
func (*Client) FamilyVersion() uint8 { return 0 }

// FamilyOps is not supported on this system.
func (*Client) FamilyOps() (map[uint32]uint32, error) { return nil, errNotLinux() }

// Devices is not supported on this system.
func (*Client) Devices() ([]Device, error) { return nil, errNotLinux() }

// Queues is not supported on this system.
func (*Client) Queues(int) ([]Queue, error) { return nil, errNotLinux() }

// PagePools is not supported on this system.
func (*Client) PagePools() ([]PagePool, error) { return nil, errNotLinux() }

// QStats is not supported on this system.
func (*Client) QStats(int) ([]QStats, error) { return nil, errNotLinux() }

// BindRX is not supported on this system.
func (*Client) BindRX(int, int, []uint32) (*Binding, error) { return nil, errNotLinux() }

// BindTX is not supported on this system.
func (*Client) BindTX(int, int) (*Binding, error) { return nil, errNotLinux() }

func errNotLinux() error { return syserr.NotOnThisOS("netdev") }
