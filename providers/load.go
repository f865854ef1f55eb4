package providers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/blockxfer/blockxfer/providers/memory"
)

// LoadOptions configure Load. The zero value is usable.
type LoadOptions struct {
	// Logger receives the host side's log and the plugin's log lines
	// (plugins log hclog JSON to stderr). Nil: warnings and errors to
	// os.Stderr.
	Logger hclog.Logger
	// Args are the plugin's command-line arguments (after its path).
	Args []string
	// Env is added to the plugin's environment, which otherwise is this
	// process's, e.g. "BLOCKXFER_GPU_DEVICE=1".
	Env []string
	// StartTimeout bounds the plugin's start-up handshake. Zero: 30s.
	StartTimeout time.Duration
	// StagingSlotSize is the size of each staging buffer. Zero:
	// DefaultStagingSlotSize.
	StagingSlotSize int64
	// StagingSlots is the most staging buffers to create. Zero:
	// DefaultStagingSlots.
	StagingSlots int
	// NoRing keeps every call on gRPC even when the plugin offers the
	// data-plane ring (as RingEnv=off does for the whole process).
	NoRing bool
	// RingEntries is the ring's number of submission entries, rounded up
	// to a power of two. Zero: DefaultRingEntries.
	RingEntries int
}

// Plugin is a provider plugin process and the memory.Provider that talks to
// it. It is safe for concurrent use. A Plugin whose process has exited fails
// every call with an error wrapping ErrPluginExited; other providers are not
// affected.
type Plugin struct {
	path   string
	client *GRPCClient
	pc     *plugin.Client
	runner *procRunner

	closeOnce sync.Once
	closeErr  error
}

var _ memory.Provider = (*Plugin)(nil)

// Name returns the provider's name as the plugin reports it.
func (p *Plugin) Name() string { return p.client.Name() }

// Version returns the plugin's version string (may be empty).
func (p *Plugin) Version() string { return p.client.Version() }

// Path returns the plugin executable's path.
func (p *Plugin) Path() string { return p.path }

// Pid returns the plugin process id.
func (p *Plugin) Pid() int { return p.runner.pid }

// Unusable returns why the provider cannot work on this machine and how to
// fix it (no device, no driver, module not loaded), or "" when it can. Alloc
// on an unusable provider fails with an error wrapping ErrUnusable.
func (p *Plugin) Unusable() string { return p.client.Unusable() }

// Capabilities returns what the plugin reported when loaded. CPUMappable is
// true only when the plugin is host-mappable (see HostMapper): its buffers
// are then mapped in this process too, and Bytes returns them.
func (p *Plugin) Capabilities() memory.Capabilities { return p.client.Capabilities() }

// Exited is closed when the plugin process has exited.
func (p *Plugin) Exited() <-chan struct{} { return p.runner.life.exited }

// ExitErr returns the error wrapping ErrPluginExited (naming the plugin, its
// pid and exit status) once the process has exited, else nil.
func (p *Plugin) ExitErr() error {
	select {
	case <-p.runner.life.exited:
		return p.runner.life.err
	default:
		return nil
	}
}

// AcquireStaging lends a staging buffer shared with the plugin, for CopyIn
// and ReadBack without the host-side copy; see Staging.
func (p *Plugin) AcquireStaging(ctx context.Context) (*Staging, error) {
	return p.client.AcquireStaging(ctx)
}

// Stage implements memory.Stager with AcquireStaging.
func (p *Plugin) Stage(ctx context.Context) ([]byte, func(), error) {
	s, err := p.AcquireStaging(ctx)
	if err != nil {
		return nil, nil, err
	}
	return s.Bytes, s.Release, nil
}

var _ memory.Stager = (*Plugin)(nil)

// Alloc allocates a buffer in the plugin; see GRPCClient.Alloc.
func (p *Plugin) Alloc(ctx context.Context, size int64, dmabuf bool) (memory.Buffer, error) {
	return p.client.Alloc(ctx, size, dmabuf)
}

var _ memory.Importer = (*Plugin)(nil)

// Import makes caller-owned memory a buffer of the plugin; see
// GRPCClient.Import.
func (p *Plugin) Import(ctx context.Context, d memory.ImportDesc) (memory.Buffer, error) {
	return p.client.Import(ctx, d)
}

var (
	_ memory.Mapper     = (*Plugin)(nil)
	_ memory.Prefaulter = (*Plugin)(nil)
)

// Prefault makes the host's mapping of a buffer resident; see
// GRPCClient.Prefault.
func (p *Plugin) Prefault(ctx context.Context, id memory.BufferID) error {
	return p.client.Prefault(ctx, id)
}

// Bytes returns the host's mapping of a host-mappable plugin's buffer; see
// GRPCClient.Bytes.
func (p *Plugin) Bytes(id memory.BufferID) ([]byte, error) { return p.client.Bytes(id) }

// Free frees a buffer, closes its dmabuf fd and unmaps the host's mapping
// of it; see GRPCClient.Free.
func (p *Plugin) Free(ctx context.Context, id memory.BufferID) error { return p.client.Free(ctx, id) }

// CopyIn copies src into dst at off through staging; see GRPCClient.CopyIn.
func (p *Plugin) CopyIn(ctx context.Context, dst memory.BufferID, off int64, src []byte) error {
	return p.client.CopyIn(ctx, dst, off, src)
}

// Gather performs device-side copies in the plugin; see GRPCClient.Gather.
func (p *Plugin) Gather(ctx context.Context, copies []memory.Copy) error {
	return p.client.Gather(ctx, copies)
}

// ReadBack copies buffer bytes into p through staging; see
// GRPCClient.ReadBack.
func (p *Plugin) ReadBack(ctx context.Context, src memory.BufferID, off int64, dst []byte) error {
	return p.client.ReadBack(ctx, src, off, dst)
}

// Checksum returns the CRC-32C of a range, computed by the plugin; see
// GRPCClient.Checksum.
func (p *Plugin) Checksum(ctx context.Context, buf memory.BufferID, off, n int64) (uint32, error) {
	return p.client.Checksum(ctx, buf, off, n)
}

// Close stops the plugin (a graceful shutdown, in which the plugin closes
// its provider, then SIGKILL after 2s), fails the calls still in flight,
// and closes every fd and staging buffer this host holds for it. Buffers
// and their dmabuf fds are invalid afterwards.
func (p *Plugin) Close() error {
	p.closeOnce.Do(func() {
		p.client.markClosed()
		p.pc.Kill()
		p.closeErr = p.client.release()
		p.runner.closePipes()
	})
	return p.closeErr
}

// Discover returns the paths of the provider plugin executables in dir:
// regular files (or links to them) named ExecutablePrefix+something with an
// execute bit set, sorted by name. A missing dir is an error satisfying
// errors.Is(err, fs.ErrNotExist).
func Discover(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("providers: discover: %w", err)
	}
	var paths []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ExecutablePrefix) || len(e.Name()) == len(ExecutablePrefix) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		fi, err := os.Stat(path) // follows links
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		paths = append(paths, path)
	}
	slices.Sort(paths)
	return paths, nil
}
