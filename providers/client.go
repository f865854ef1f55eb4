package providers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/internal/fdpass"
	"github.com/blockxfer/blockxfer/providers/internal/memfd"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/providers/providerpb"
)

// maxGatherBatch is the most copies sent in one Gather RPC: 64Ki records of
// 40 bytes, 2.5 MiB, under gRPC's 4 MiB default message limit.
const maxGatherBatch = 64 << 10

// exitGrace is how long a call whose connection broke waits for the plugin
// process to be reaped, so it can report ErrPluginExited with the exit
// status rather than a bare transport error.
const exitGrace = 5 * time.Second

// GRPCClient is the host-side adapter: an memory.Provider that forwards
// every call to a plugin. Bulk bytes move through staging memfds shared with
// the plugin; dmabuf fds arrive over the side socket. The buffers of a
// host-mappable plugin (see HostMapper) are mapped here as well, and are
// then addressable through Bytes. It is safe for concurrent use. Get one
// from Load (as part of a Plugin).
type GRPCClient struct {
	rpc    providerpb.ProviderClient
	fds    *fdpass.Conn
	logger hclog.Logger
	stage  *stagingPool
	reqID  atomic.Uint64

	// Set once by init before the client is shared.
	name      string
	version   string
	caps      memory.Capabilities
	unusable  string
	life      *lifeline
	ringOffer uint32      // the ring version the plugin offers (0: none)
	hostMap   bool        // the plugin's buffers are mapped here
	ring      *ringClient // the data plane; nil: every call goes over gRPC

	mu       sync.Mutex
	bufs     map[memory.BufferID]remoteBuffer
	closed   bool
	inflight sync.WaitGroup
}

// remoteBuffer is what the host knows of a plugin buffer.
type remoteBuffer struct {
	size    int64
	fd      int    // dmabuf fd owned by the host, or -1
	mapping []byte // the host's mapping of a host-mappable buffer, or nil
	mem     []byte // the buffer's bytes within mapping
}

// lifeline reports the end of the plugin process.
type lifeline struct {
	exited chan struct{} // closed when the process has exited
	err    error         // wraps ErrPluginExited; set before exited is closed
}

var (
	_ memory.Provider = (*GRPCClient)(nil)
	_ memory.Importer = (*GRPCClient)(nil)
	_ memory.Mapper   = (*GRPCClient)(nil)
)

func newGRPCClient(rpc providerpb.ProviderClient, fds *fdpass.Conn, logger hclog.Logger) *GRPCClient {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &GRPCClient{
		rpc:    rpc,
		fds:    fds,
		logger: logger,
		stage:  newStagingPool(rpc, fds, 0, 0),
		bufs:   make(map[memory.BufferID]remoteBuffer),
		name:   "plugin",
	}
}

// init fetches the plugin's capabilities and sets up staging.
func (c *GRPCClient) init(ctx context.Context, slotSize int64, slots int, life *lifeline) error {
	c.life = life
	c.stage = newStagingPool(c.rpc, c.fds, slotSize, slots)
	resp, err := c.rpc.Capabilities(ctx, &providerpb.CapabilitiesRequest{})
	if err != nil {
		return c.callErr(ctx, "capabilities", err)
	}
	c.name = resp.GetName()
	if c.name == "" {
		c.name = "plugin"
	}
	c.version = resp.GetVersion()
	c.unusable = resp.GetUnusableReason()
	c.ringOffer = resp.GetRingVersion()
	c.hostMap = resp.GetHostMappable()
	c.caps = memory.Capabilities{
		Kind:         memory.Kind(resp.GetKind()),
		Device:       resp.GetDevice(),
		DmabufExport: resp.GetDmabufExport(),
		// Plugin memory is addressable by this process only when the
		// plugin lets the host map it (cpu_mappable is the plugin's own).
		CPUMappable:    c.hostMap,
		Gather:         resp.GetGather(),
		DeviceChecksum: resp.GetDeviceChecksum(),
		MaxAlloc:       resp.GetMaxAlloc(),
	}
	for _, k := range resp.GetImportKinds() {
		// Every buffer of a host-mappable plugin is mapped here: of the
		// imports, only a memfd's can be, from the caller's own fd.
		if !c.hostMap || memory.ImportKind(k) == memory.ImportFD {
			c.caps.ImportKinds = append(c.caps.ImportKinds, memory.ImportKind(k))
		}
	}
	return nil
}

// Name returns the provider's name as the plugin reports it.
func (c *GRPCClient) Name() string { return c.name }

// Version returns the plugin's version string (may be empty).
func (c *GRPCClient) Version() string { return c.version }

// Unusable returns why the provider cannot work on this machine, or "".
func (c *GRPCClient) Unusable() string { return c.unusable }

// Capabilities returns the capabilities the plugin reported when loaded.
// CPUMappable is true only for a host-mappable plugin, whose buffers Bytes
// returns; ImportKinds then holds memory.ImportFD at most.
func (c *GRPCClient) Capabilities() memory.Capabilities { return c.caps }

// begin registers a call; it fails once the client is closed or the plugin
// has exited. Every successful begin is paired with end.
func (c *GRPCClient) begin() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if c.life != nil {
		select {
		case <-c.life.exited:
			return c.life.err
		default:
		}
	}
	c.inflight.Add(1)
	return nil
}

func (c *GRPCClient) end() { c.inflight.Done() }

// dead is closed when the plugin process has exited (never, without one).
func (c *GRPCClient) dead() <-chan struct{} {
	if c.life == nil {
		return nil
	}
	return c.life.exited
}

// callErr converts an RPC error: ctx's own error when ctx ended,
// ErrPluginExited when the connection broke because the plugin died, else a
// *RemoteError wrapping the plugin's sentinel.
func (c *GRPCClient) callErr(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	var re *RemoteError
	if errors.As(err, &re) || errors.Is(err, ErrPluginExited) || errors.Is(err, ErrClosed) {
		return err
	}
	st, isStatus := status.FromError(err)
	code := st.Code()
	if !isStatus {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("providers: %s: %s: %w", c.name, op, err)
		}
		if errors.Is(err, fdpass.ErrClosed) {
			code = codes.Unavailable
		} else {
			return fmt.Errorf("providers: %s: %s: %w", c.name, op, err)
		}
	}
	if code == codes.Canceled || code == codes.DeadlineExceeded {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("providers: %s: %s: %w", c.name, op, cerr)
		}
	}
	if code == codes.Unavailable || code == codes.Canceled {
		// The connection broke: if the plugin died, say so.
		if c.life != nil {
			t := time.NewTimer(exitGrace)
			defer t.Stop()
			select {
			case <-c.life.exited:
				return fmt.Errorf("providers: %s: %s: %w", c.name, op, c.life.err)
			case <-ctx.Done():
			case <-t.C:
			}
		}
	}
	if !isStatus {
		return fmt.Errorf("providers: %s: %s: %w", c.name, op, err)
	}
	return fromStatus(c.name, op, err)
}

// lookup returns what the host knows of buffer id.
func (c *GRPCClient) lookup(op string, id memory.BufferID) (remoteBuffer, error) {
	c.mu.Lock()
	b, ok := c.bufs[id]
	c.mu.Unlock()
	if !ok {
		return b, fmt.Errorf("providers: %s: %s: buffer %d: %w", c.name, op, id, memory.ErrUnknownBuffer)
	}
	return b, nil
}

// checkRange checks [off, off+n) against buffer id.
func (c *GRPCClient) checkRange(op string, id memory.BufferID, off, n int64) error {
	b, err := c.lookup(op, id)
	if err != nil {
		return err
	}
	if off < 0 || n < 0 || off > b.size || n > b.size-off {
		return fmt.Errorf("providers: %s: %s: buffer %d: [%d, %d+%d) of %d bytes: %w", c.name, op, id, off, off, n, b.size, memory.ErrOutOfBounds)
	}
	return nil
}

// checkCopies checks every copy against the host's record of the buffers,
// under one lock acquisition.
func (c *GRPCClient) checkCopies(copies []memory.Copy) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var (
		lastID   memory.BufferID
		lastSize int64 = -1
	)
	size := func(id memory.BufferID) (int64, bool) {
		if id == lastID && lastSize >= 0 {
			return lastSize, true
		}
		b, ok := c.bufs[id]
		if ok {
			lastID, lastSize = id, b.size
		}
		return b.size, ok
	}
	for i := range copies {
		cp := &copies[i]
		for _, r := range [2]struct {
			op  string
			id  memory.BufferID
			off int64
		}{{"gather src", cp.Src, cp.SrcOff}, {"gather dst", cp.Dst, cp.DstOff}} {
			n, ok := size(r.id)
			if !ok {
				return fmt.Errorf("providers: %s: %s: buffer %d: %w", c.name, r.op, r.id, memory.ErrUnknownBuffer)
			}
			if r.off < 0 || cp.Len < 0 || r.off > n || cp.Len > n-r.off {
				return fmt.Errorf("providers: %s: %s: buffer %d: [%d, %d+%d) of %d bytes: %w", c.name, r.op, r.id, r.off, r.off, cp.Len, n, memory.ErrOutOfBounds)
			}
		}
	}
	return nil
}

// Alloc allocates size bytes in the plugin. With dmabuf true the plugin
// exports the buffer as a dmabuf and its fd arrives over the side socket:
// Buffer.DmabufFD is then an fd in this process, owned by the buffer and
// closed by Free (or Close, or when the plugin exits). For a host-mappable
// plugin the buffer's file arrives too and is mapped here (see Bytes) once
// its size and seals are checked; the mapping lasts until Free or Close,
// even past the plugin's exit. It returns errors wrapping
// memory.ErrNoDmabuf, ErrUnusable or ErrPluginExited.
func (c *GRPCClient) Alloc(ctx context.Context, size int64, dmabuf bool) (memory.Buffer, error) {
	if err := c.begin(); err != nil {
		return memory.Buffer{DmabufFD: -1}, err
	}
	defer c.end()
	if c.fds == nil {
		return memory.Buffer{DmabufFD: -1}, errors.New("providers: no side socket")
	}
	id := c.reqID.Add(1)
	c.fds.Expect(id)
	if c.hostMap {
		c.fds.Expect(hostMapTag | id)
	}
	resp, err := c.rpc.Allocate(ctx, &providerpb.AllocateRequest{RequestId: id, Size: size, Dmabuf: dmabuf})
	if err != nil {
		c.fds.Forget(id)
		c.fds.Forget(hostMapTag | id)
		return memory.Buffer{DmabufFD: -1}, c.callErr(ctx, "alloc", err)
	}
	buf := memory.Buffer{ID: memory.BufferID(resp.GetBufferId()), Size: resp.GetSize(), DmabufFD: -1}
	if resp.GetDmabufSent() {
		fd, err := c.fds.Take(ctx, id)
		if err != nil {
			c.fds.Forget(hostMapTag | id)
			c.freeRemote(ctx, buf.ID)
			if errors.Is(err, fdpass.ErrClosed) {
				return memory.Buffer{DmabufFD: -1}, c.callErr(ctx, "alloc", err)
			}
			return memory.Buffer{DmabufFD: -1}, fmt.Errorf("providers: %s: alloc: receive dmabuf fd: %w", c.name, err)
		}
		buf.DmabufFD = fd
	} else {
		c.fds.Forget(id)
		if dmabuf {
			c.fds.Forget(hostMapTag | id)
			c.freeRemote(ctx, buf.ID)
			return memory.Buffer{DmabufFD: -1}, fmt.Errorf("providers: %s: alloc: %w: dmabuf requested but no fd sent", c.name, ErrProtocol)
		}
	}
	rb := remoteBuffer{size: buf.Size, fd: buf.DmabufFD}
	if c.hostMap {
		rb.mapping, rb.mem, err = c.mapAllocated(ctx, id, resp.GetHostFdSent(), buf.Size)
		if err != nil {
			if buf.DmabufFD >= 0 {
				closeFD(buf.DmabufFD)
			}
			c.freeRemote(ctx, buf.ID)
			return memory.Buffer{DmabufFD: -1}, err
		}
	}
	c.mu.Lock()
	c.bufs[buf.ID] = rb
	c.mu.Unlock()
	return buf, nil
}

// mapAllocated receives the file of a host-mappable plugin's new buffer
// (Allocate request id) and maps size bytes of it, checking its size and
// seals first so that the mapping can never fault past the file's end.
func (c *GRPCClient) mapAllocated(ctx context.Context, id uint64, sent bool, size int64) (mapping, mem []byte, err error) {
	if !sent {
		c.fds.Forget(hostMapTag | id)
		return nil, nil, fmt.Errorf("providers: %s: alloc: %w: host-mappable plugin sent no buffer file", c.name, ErrProtocol)
	}
	fd, err := c.fds.Take(ctx, hostMapTag|id)
	if err != nil {
		if errors.Is(err, fdpass.ErrClosed) {
			return nil, nil, c.callErr(ctx, "alloc", err)
		}
		return nil, nil, fmt.Errorf("providers: %s: alloc: receive buffer file: %w", c.name, err)
	}
	defer closeFD(fd) // the mapping keeps the memory
	mapping, mem, err = hostmem.MapImport(memory.ImportDesc{Kind: memory.ImportFD, FD: fd, Size: size})
	if err != nil {
		return nil, nil, fmt.Errorf("providers: %s: alloc: map buffer file: %w", c.name, err)
	}
	return mapping, mem, nil
}

// Import makes caller-owned memory a buffer of the plugin (see
// memory.Importer): CUDA memory of another process by IPC handle
// (memory.ImportCUDAIPC), or by an fd that is sent to the plugin over the
// side socket (the other kinds; d.FD stays the caller's, who may close it
// once Import returns). A kind the plugin does not list in
// Capabilities().ImportKinds fails with an error wrapping
// memory.ErrImportNotSupported, and any import into an unusable plugin with
// ErrUnusable, before any call to the plugin. The buffer is
// then used like an allocated one; Free (or Close, or the plugin's exit)
// undoes the import in the plugin and never frees the caller's memory. A
// host-mappable plugin imports only memory.ImportFD, and the host maps the
// memfd too (checked as hostmem.MapImport checks it), for Bytes.
func (c *GRPCClient) Import(ctx context.Context, d memory.ImportDesc) (memory.Buffer, error) {
	none := memory.Buffer{DmabufFD: -1}
	if c.unusable != "" {
		return none, fmt.Errorf("providers: %s: import: %w: %s", c.name, ErrUnusable, c.unusable)
	}
	if !c.caps.CanImport(d.Kind) {
		return none, fmt.Errorf("providers: %s: import %s: %w (the plugin imports %q)", c.name, d.Kind, memory.ErrImportNotSupported, c.caps.ImportKinds)
	}
	if err := d.Check(); err != nil {
		return none, fmt.Errorf("providers: %s: %w", c.name, err)
	}
	if err := c.begin(); err != nil {
		return none, err
	}
	defer c.end()
	id := c.reqID.Add(1)
	req := &providerpb.ImportRequest{RequestId: id, Kind: string(d.Kind), Handle: d.Handle, Offset: d.Offset, Size: d.Size}
	if d.Kind != memory.ImportCUDAIPC {
		if c.fds == nil {
			return none, errors.New("providers: no side socket")
		}
		if err := c.fds.Send(fdpass.KindStaging, importTag|id, d.FD); err != nil {
			return none, c.callErr(ctx, "import", err)
		}
		req.FdSent = true
	}
	resp, err := c.rpc.Import(ctx, req)
	if err != nil {
		return none, c.callErr(ctx, "import", err)
	}
	buf := memory.Buffer{ID: memory.BufferID(resp.GetBufferId()), Size: resp.GetSize(), DmabufFD: -1}
	if buf.Size != d.Size {
		c.freeRemote(ctx, buf.ID)
		return none, fmt.Errorf("providers: %s: import: %w: %d bytes imported, %d asked", c.name, ErrProtocol, buf.Size, d.Size)
	}
	rb := remoteBuffer{size: buf.Size, fd: -1}
	if c.hostMap {
		if rb.mapping, rb.mem, err = hostmem.MapImport(d); err != nil {
			c.freeRemote(ctx, buf.ID)
			return none, fmt.Errorf("providers: %s: import %s: %w", c.name, d.Kind, err)
		}
	}
	c.mu.Lock()
	c.bufs[buf.ID] = rb
	c.mu.Unlock()
	return buf, nil
}

// freeRemote frees a buffer the caller will never see, best effort.
func (c *GRPCClient) freeRemote(ctx context.Context, id memory.BufferID) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), attachTimeout)
	defer cancel()
	if _, err := c.rpc.Free(fctx, &providerpb.FreeRequest{BufferId: uint64(id)}); err != nil {
		c.logger.Warn("free of abandoned buffer failed", "plugin", c.name, "buffer", id, "error", err)
	}
}

// Free frees the buffer in the plugin, closes its dmabuf fd here and
// unmaps the host's mapping of it. Both are released even when the plugin
// fails the call (it exited, or no longer knows the buffer).
func (c *GRPCClient) Free(ctx context.Context, id memory.BufferID) error {
	if err := c.begin(); err != nil {
		if errors.Is(err, ErrPluginExited) {
			c.forget(id)
		}
		return err
	}
	defer c.end()
	_, err := c.rpc.Free(ctx, &providerpb.FreeRequest{BufferId: uint64(id)})
	err = c.callErr(ctx, "free", err)
	if err == nil || errors.Is(err, memory.ErrUnknownBuffer) || errors.Is(err, ErrPluginExited) {
		c.forget(id)
	}
	return err
}

// forget drops the host's record of buffer id: its dmabuf fd is closed and
// its mapping unmapped.
func (c *GRPCClient) forget(id memory.BufferID) {
	c.mu.Lock()
	b, ok := c.bufs[id]
	delete(c.bufs, id)
	c.mu.Unlock()
	if ok {
		b.release(c)
	}
}

// release closes b's dmabuf fd and unmaps its mapping.
func (b remoteBuffer) release(c *GRPCClient) {
	if b.fd >= 0 {
		closeFD(b.fd)
	}
	c.unmap(b.mapping)
}

// unmap unmaps the host's mapping of a plugin buffer (nil: none).
func (c *GRPCClient) unmap(mapping []byte) {
	if err := memfd.Unmap(mapping); err != nil {
		c.logger.Warn("unmap plugin buffer", "plugin", c.name, "error", err)
	}
}

var _ memory.Prefaulter = (*GRPCClient)(nil)

// Prefault makes every page of the host's mapping of a host-mappable
// plugin's buffer resident and writable here (memory.Prefaulter), so the
// first bytes received into it take no page fault. A buffer not mapped
// here is left as it is: the host's data path never touches its pages.
func (c *GRPCClient) Prefault(ctx context.Context, id memory.BufferID) error {
	if err := c.begin(); err != nil {
		return err
	}
	defer c.end()
	b, err := c.lookup("prefault", id)
	if err != nil {
		return err
	}
	if err := memfd.Populate(b.mem); err != nil {
		return fmt.Errorf("providers: %s: prefault buffer %d: %w", c.name, id, err)
	}
	return nil
}

// Bytes returns the host's mapping of a host-mappable plugin's buffer
// (memory.Mapper): writes to it are seen by the plugin and the reverse. The
// slice is valid until Free or Close, even after the plugin exits (the
// mapping holds the pages), but Bytes itself then fails with
// ErrPluginExited like every other call. A plugin that is not
// host-mappable has no buffer mapped here.
func (c *GRPCClient) Bytes(id memory.BufferID) ([]byte, error) {
	if err := c.begin(); err != nil {
		return nil, err
	}
	defer c.end()
	b, err := c.lookup("bytes", id)
	if err != nil {
		return nil, err
	}
	if b.mem == nil {
		return nil, fmt.Errorf("providers: %s: bytes: buffer %d: plugin memory is not mapped by the host (the plugin is not host-mappable)", c.name, id)
	}
	return b.mem, nil
}

// CopyIn copies src into dst at off through staging: src is copied into a
// staging buffer and the plugin copies it from there. Ranges larger than a
// staging slot are pipelined slot by slot. When src lies in a Staging buffer
// the plugin copies straight from it, with no host-side copy. Bounds are
// checked before any byte moves. When the plugin serves the ring, the copy
// is submitted there (in 1 MiB descriptors through one staging slot, for
// src outside staging) and CopyIn waits for its completion; otherwise each
// piece is an RPC.
func (c *GRPCClient) CopyIn(ctx context.Context, dst memory.BufferID, off int64, src []byte) error {
	if err := c.begin(); err != nil {
		return err
	}
	defer c.end()
	if err := c.checkRange("copy-in", dst, off, int64(len(src))); err != nil {
		return err
	}
	if c.ring != nil {
		return c.ringCopyIn(ctx, dst, off, src)
	}
	if s, soff := c.stage.within(src); s != nil {
		_, err := c.rpc.CopyIn(ctx, &providerpb.CopyInRequest{
			Dst: uint64(dst), DstOff: off, StagingId: s.id, StagingOff: soff, Len: int64(len(src)),
		})
		return c.callErr(ctx, "copy-in", err)
	}
	return c.pipeline(ctx, "copy-in", len(src), func(ctx context.Context, s *stagingSlot, pos, n int) error {
		copy(s.mem[:n], src[pos:pos+n])
		_, err := c.rpc.CopyIn(ctx, &providerpb.CopyInRequest{
			Dst: uint64(dst), DstOff: off + int64(pos), StagingId: s.id, Len: int64(n),
		})
		return err
	})
}

// AcquireStaging lends the caller one of the plugin's staging buffers, for
// CopyIn and ReadBack without the host-side copy (see Staging). It waits
// for a free staging slot while all are in use, until ctx ends.
func (c *GRPCClient) AcquireStaging(ctx context.Context) (*Staging, error) {
	if err := c.begin(); err != nil {
		return nil, err
	}
	defer c.end()
	s, err := c.stage.get(ctx, c.dead())
	if err != nil {
		return nil, c.callErr(ctx, "acquire staging", err)
	}
	c.stage.lend(s)
	return &Staging{Bytes: s.mem, slot: s, pool: c.stage}, nil
}

// ReadBack copies len(p) bytes of src at off into p through staging, slot by
// slot, pipelined; straight into p when p lies in a Staging buffer. Bounds
// are checked before any byte moves.
func (c *GRPCClient) ReadBack(ctx context.Context, src memory.BufferID, off int64, p []byte) error {
	if err := c.begin(); err != nil {
		return err
	}
	defer c.end()
	if err := c.checkRange("read-back", src, off, int64(len(p))); err != nil {
		return err
	}
	if c.ring != nil {
		return c.ringReadBack(ctx, src, off, p)
	}
	if s, soff := c.stage.within(p); s != nil {
		_, err := c.rpc.ReadBack(ctx, &providerpb.ReadBackRequest{
			Src: uint64(src), SrcOff: off, StagingId: s.id, StagingOff: soff, Len: int64(len(p)),
		})
		return c.callErr(ctx, "read-back", err)
	}
	return c.pipeline(ctx, "read-back", len(p), func(ctx context.Context, s *stagingSlot, pos, n int) error {
		if _, err := c.rpc.ReadBack(ctx, &providerpb.ReadBackRequest{
			Src: uint64(src), SrcOff: off + int64(pos), StagingId: s.id, Len: int64(n),
		}); err != nil {
			return err
		}
		copy(p[pos:pos+n], s.mem[:n])
		return nil
	})
}

// pipeline runs step over total bytes in staging-slot-sized chunks. Each
// chunk gets its own slot; a chunk's RPC runs while the next chunk is
// prepared. CopyIn's host-side copy happens in step before the RPC, so it is
// run inline for the first chunk and overlaps the previous chunk's RPC after.
func (c *GRPCClient) pipeline(ctx context.Context, op string, total int, step func(ctx context.Context, s *stagingSlot, pos, n int) error) error {
	slot := int(c.stage.slotSize)
	if total == 0 {
		return nil
	}
	if total <= slot {
		s, err := c.stage.get(ctx, c.dead())
		if err != nil {
			return c.callErr(ctx, op, err)
		}
		defer c.stage.put(s)
		return c.callErr(ctx, op, step(ctx, s, 0, total))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	for pos := 0; pos < total && ctx.Err() == nil; pos += slot {
		n := min(slot, total-pos)
		s, err := c.stage.get(ctx, c.dead())
		if err != nil {
			fail(err)
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.stage.put(s)
			if err := step(ctx, s, pos, n); err != nil {
				fail(err)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return c.callErr(ctx, op, firstErr)
	}
	return nil
}

// Gather sends the copies to the plugin, which performs them on the device
// in order, and returns when all are complete. Every copy is checked against
// the host's record of the buffers first, so a bad copy fails the call
// before any byte moves. Batches larger than 64Ki copies are sent as several
// RPCs, in order.
func (c *GRPCClient) Gather(ctx context.Context, copies []memory.Copy) error {
	if err := c.begin(); err != nil {
		return err
	}
	defer c.end()
	if err := c.checkCopies(copies); err != nil {
		return err
	}
	if c.ring != nil {
		return c.ringGather(ctx, copies)
	}
	buf := recordPool.Get().(*[]byte)
	defer recordPool.Put(buf)
	for len(copies) > 0 {
		batch := copies[:min(len(copies), maxGatherBatch)]
		copies = copies[len(batch):]
		*buf = appendCopies((*buf)[:0], batch)
		if _, err := c.rpc.Gather(ctx, &providerpb.GatherRequest{Copies: *buf}); err != nil {
			return c.callErr(ctx, "gather", err)
		}
	}
	return nil
}

// Checksum returns the CRC-32C of n bytes of buf at off, computed by the
// plugin (on the device when Capabilities().DeviceChecksum).
func (c *GRPCClient) Checksum(ctx context.Context, buf memory.BufferID, off, n int64) (uint32, error) {
	if err := c.begin(); err != nil {
		return 0, err
	}
	defer c.end()
	if err := c.checkRange("checksum", buf, off, n); err != nil {
		return 0, err
	}
	if c.ring != nil {
		return c.ringChecksum(ctx, buf, off, n)
	}
	resp, err := c.rpc.Checksum(ctx, &providerpb.ChecksumRequest{BufferId: uint64(buf), Off: []int64{off}, Len: []int64{n}})
	if err != nil {
		return 0, c.callErr(ctx, "checksum", err)
	}
	if len(resp.GetCrc32C()) != 1 {
		return 0, fmt.Errorf("providers: %s: checksum: %w: %d checksums for 1 range", c.name, ErrProtocol, len(resp.GetCrc32C()))
	}
	return resp.Crc32C[0], nil
}

// Close stops new calls, waits for the calls in flight, then releases
// staging and closes every dmabuf fd this client received. It does not stop
// the plugin process: Plugin.Close does, before calling this.
func (c *GRPCClient) Close() error {
	if !c.markClosed() {
		return nil
	}
	return c.release()
}

// markClosed makes new calls fail with ErrClosed. It reports false if the
// client was already closed.
func (c *GRPCClient) markClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.closed = true
	return true
}

// release waits for the calls in flight, then closes the side socket, the
// received dmabuf fds, the host's mappings of plugin buffers and the staging
// buffers.
func (c *GRPCClient) release() error {
	c.inflight.Wait()
	c.closeDmabufs()
	c.unmapAll()
	var errs []error
	if c.ring != nil {
		errs = append(errs, memfd.Unmap(c.ring.close(ErrClosed)))
	}
	if c.fds != nil {
		errs = append(errs, c.fds.Close())
	}
	errs = append(errs, c.stage.close())
	return errors.Join(errs...)
}

// closeDmabufs closes every dmabuf fd received from the plugin. Buffers stay
// in the table, so Free still reports on them, without an fd.
func (c *GRPCClient) closeDmabufs() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, b := range c.bufs {
		if b.fd >= 0 {
			closeFD(b.fd)
			b.fd = -1
			c.bufs[id] = b
		}
	}
}

// unmapAll unmaps the host's mappings of plugin buffers. Buffers stay in
// the table, so Free still reports on them.
func (c *GRPCClient) unmapAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, b := range c.bufs {
		if b.mapping != nil {
			c.unmap(b.mapping)
			b.mapping, b.mem = nil, nil
			c.bufs[id] = b
		}
	}
}

// pluginExited runs when the plugin process has exited: pending fds and the
// dmabuf fds of its buffers are closed; calls fail with ErrPluginExited.
// The host's mappings of its buffers stay, valid memory until Free or Close,
// so a receive still writing into one cannot fault.
func (c *GRPCClient) pluginExited() {
	if c.ring != nil {
		c.ring.stop(c.life.err)
	}
	if c.fds != nil {
		c.fds.Close()
	}
	c.closeDmabufs()
}
