package providers

import (
	"context"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/blockxfer/blockxfer/providers/internal/fdpass"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/providers/providerpb"
)

// PluginName is the name the provider is served and dispensed under.
const PluginName = "provider"

// ExecutablePrefix starts the file name of every provider plugin executable
// that Discover finds, e.g. blockxfer-provider-udmabuf.
const ExecutablePrefix = "blockxfer-provider-"

// grpcWindow is the HTTP/2 stream and connection flow-control window both
// sides use: large enough that a Gather's copy list (up to 2.5 MiB) never
// waits for a window update.
const grpcWindow = 4 << 20

// importTag is the side-socket tag bit of the staging record carrying an
// Import's fd (the tag is the request id with this bit set): staging ids are
// small and the ring's record has bit 63 set, so none collide.
const importTag = 1 << 62

// hostMapTag is the side-socket tag bit of the record carrying the file of
// a host-mappable plugin's buffer (the tag is the Allocate request id with
// this bit set; the buffer's dmabuf fd, if any, is tagged with the bare id).
const hostMapTag = 1 << 61

// Handshake is the go-plugin handshake both sides must agree on. A plugin
// started without the magic cookie in its environment refuses to run; a
// plugin built for another ProtocolVersion is refused by the host.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "BLOCKXFER_PROVIDER_PLUGIN",
	MagicCookieValue: "f1c2e7d0-blockxfer-provider-v1",
}

// PluginMap returns the go-plugin plugin set holding p under PluginName.
func PluginMap(p *ProviderPlugin) plugin.PluginSet {
	return plugin.PluginSet{PluginName: p}
}

// ProviderPlugin is the go-plugin GRPCPlugin for providers. On the plugin
// side Impl is the provider being served; on the host side Impl is unused.
// Both sides also need the side socket for fds, which only Serve and Load
// set up: use those rather than a bare ProviderPlugin.
type ProviderPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	// Impl is the provider served by GRPCServer (plugin side only).
	Impl memory.Provider

	fds    *fdpass.Conn
	logger hclog.Logger
	server *GRPCServer // the server registered by GRPCServer
}

var _ plugin.GRPCPlugin = (*ProviderPlugin)(nil)

// GRPCServer registers a GRPCServer serving p.Impl on s.
func (p *ProviderPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	p.server = newGRPCServer(p.Impl, p.fds, p.logger)
	providerpb.RegisterProviderServer(s, p.server)
	return nil
}

// GRPCClient returns a *GRPCClient speaking to the plugin over c.
func (p *ProviderPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return newGRPCClient(providerpb.NewProviderClient(c), p.fds, p.logger), nil
}

// Versioner is optionally implemented by a plugin's provider to report its
// version in Capabilities.
type Versioner interface {
	// Version returns a free-form version string.
	Version() string
}

// UnusableReasoner is optionally implemented by a plugin's provider that can
// find itself unable to work on a machine. A non-empty reason is reported in
// Capabilities and turns Alloc into an error wrapping ErrUnusable.
type UnusableReasoner interface {
	// UnusableReason says why the provider cannot work here and how to fix
	// it, or returns "" when it can.
	UnusableReason() string
}

// StagingRegistrar is optionally implemented by a plugin's provider that
// wants to prepare staging memory for transfers, e.g. pin it with
// cuMemHostRegister so host-to-device copies run at full DMA speed. Serve
// calls RegisterStaging once for each staging buffer the host attaches,
// before any CopyIn or ReadBack uses it; the memory stays mapped until after
// the provider's Close returns, which should undo the registrations.
type StagingRegistrar interface {
	// RegisterStaging prepares mem for use as a CopyIn source and ReadBack
	// destination. An error fails the attach, and so the host's call.
	RegisterStaging(mem []byte) error
}

// HostMapper is optionally implemented by a plugin's provider whose buffers
// are files the host process can map itself: memfds, such as the memory
// behind a udmabuf. When HostMappable reports true, the host maps each
// allocated buffer's file (sent on the side socket) and receives straight
// into that mapping, checksumming inline: no staging copy, no Checksum in
// the plugin. The plugin then sees the bytes in its own mapping of the same
// file.
type HostMapper interface {
	// HostMappable reports whether the host may map this provider's
	// buffers. The answer must not change while the plugin runs.
	HostMappable() bool
	// HostFD returns an fd of a file holding buffer id's bytes from its
	// offset 0, at least the buffer's size long and sealed against
	// shrinking (F_SEAL_SHRINK; the host refuses it otherwise). The fd
	// stays the provider's: Serve sends the host a copy.
	HostFD(id memory.BufferID) (int, error)
}

// hostMapper returns impl's HostMapper when its buffers are host-mappable.
func hostMapper(impl memory.Provider) (HostMapper, bool) {
	h, ok := impl.(HostMapper)
	return h, ok && h.HostMappable()
}
