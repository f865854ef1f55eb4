package providers

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/blockxfer/blockxfer/providers/internal/fdpass"
	"github.com/blockxfer/blockxfer/providers/internal/memfd"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/providers/providerpb"
)

// GRPCServer is the plugin-side adapter: it serves an memory.Provider over
// the providerpb.Provider service, sends dmabuf fds on the side socket and
// maps the staging buffers the host attaches. It is safe for concurrent use.
// Serve creates and registers it.
type GRPCServer struct {
	providerpb.UnimplementedProviderServer

	impl   memory.Provider
	fds    *fdpass.Conn
	logger hclog.Logger

	mu       sync.RWMutex
	staging  map[uint64][]byte
	bufs     map[memory.BufferID]int64 // the buffers allocated for the host, and their sizes
	ring     *ringServer
	ringBusy bool // a ring is attached or being attached
}

// newGRPCServer returns a server for impl. fds is the plugin's end of the
// side socket; logger may be nil.
func newGRPCServer(impl memory.Provider, fds *fdpass.Conn, logger hclog.Logger) *GRPCServer {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &GRPCServer{impl: impl, fds: fds, logger: logger, staging: make(map[uint64][]byte), bufs: make(map[memory.BufferID]int64)}
}

// unusable returns the provider's unusable reason, or "".
func (s *GRPCServer) unusable() string {
	if u, ok := s.impl.(UnusableReasoner); ok {
		return u.UnusableReason()
	}
	return ""
}

// Capabilities implements providerpb.ProviderServer.
func (s *GRPCServer) Capabilities(ctx context.Context, _ *providerpb.CapabilitiesRequest) (*providerpb.CapabilitiesResponse, error) {
	c := s.impl.Capabilities()
	resp := &providerpb.CapabilitiesResponse{
		Name:           s.impl.Name(),
		Kind:           string(c.Kind),
		Device:         c.Device,
		DmabufExport:   c.DmabufExport,
		CpuMappable:    c.CPUMappable,
		Gather:         c.Gather,
		DeviceChecksum: c.DeviceChecksum,
		MaxAlloc:       c.MaxAlloc,
		UnusableReason: s.unusable(),
	}
	_, resp.HostMappable = hostMapper(s.impl)
	if _, ok := s.impl.(memory.Importer); ok {
		for _, k := range c.ImportKinds {
			resp.ImportKinds = append(resp.ImportKinds, string(k))
		}
	}
	if ringEnabled() {
		resp.RingVersion = ringVersion
	}
	if v, ok := s.impl.(Versioner); ok {
		resp.Version = v.Version()
	}
	return resp, nil
}

// Allocate implements providerpb.ProviderServer. A dmabuf fd is sent on the
// side socket, tagged with the request id, before the reply; so is the
// buffer's file for a HostMapper, tagged with the id | hostMapTag.
func (s *GRPCServer) Allocate(ctx context.Context, req *providerpb.AllocateRequest) (*providerpb.AllocateResponse, error) {
	if why := s.unusable(); why != "" {
		return nil, toStatus(fmt.Errorf("%w: %s", ErrUnusable, why))
	}
	buf, err := s.impl.Alloc(ctx, req.GetSize(), req.GetDmabuf())
	if err != nil {
		return nil, toStatus(err)
	}
	undo := func(why error) error {
		if ferr := s.impl.Free(context.WithoutCancel(ctx), buf.ID); ferr != nil {
			s.logger.Warn("free after failed allocate", "buffer", buf.ID, "error", ferr)
		}
		return toStatus(why)
	}
	sent := false
	if buf.DmabufFD >= 0 {
		if s.fds == nil {
			return nil, undo(errors.New("providers: no side socket to send the dmabuf fd on"))
		}
		if err := s.fds.Send(fdpass.KindDmabuf, req.GetRequestId(), buf.DmabufFD); err != nil {
			return nil, undo(err)
		}
		sent = true
	} else if req.GetDmabuf() {
		return nil, undo(fmt.Errorf("%w: provider allocated without a dmabuf fd", memory.ErrNoDmabuf))
	}
	hostSent := false
	if h, ok := hostMapper(s.impl); ok {
		fd, err := h.HostFD(buf.ID)
		if err == nil && s.fds == nil {
			err = errors.New("providers: no side socket to send the buffer's file on")
		}
		if err == nil {
			err = s.fds.Send(fdpass.KindDmabuf, hostMapTag|req.GetRequestId(), fd)
		}
		if err != nil {
			return nil, undo(fmt.Errorf("providers: send buffer %d to the host: %w", buf.ID, err))
		}
		hostSent = true
	}
	if err := ctx.Err(); err != nil {
		// The host gave up: it will not learn this buffer's id, so free it.
		return nil, undo(err)
	}
	s.mu.Lock()
	s.bufs[buf.ID] = buf.Size
	s.mu.Unlock()
	return &providerpb.AllocateResponse{BufferId: uint64(buf.ID), Size: buf.Size, DmabufSent: sent, HostFdSent: hostSent}, nil
}

// Import implements providerpb.ProviderServer: it takes the fd the host
// sent (for the kinds that have one) and hands the description to the
// provider's memory.Importer. The plugin's copy of the fd is closed when the
// call returns: an importer keeps what it needs (a mapping, a device
// pointer), not the fd.
func (s *GRPCServer) Import(ctx context.Context, req *providerpb.ImportRequest) (*providerpb.ImportResponse, error) {
	d := memory.ImportDesc{Kind: memory.ImportKind(req.GetKind()), FD: -1, Handle: req.GetHandle(), Offset: req.GetOffset(), Size: req.GetSize()}
	if req.GetFdSent() {
		if s.fds == nil {
			return nil, status.Error(codes.FailedPrecondition, "providers: no side socket to receive the import fd on")
		}
		fd, err := s.fds.Take(ctx, importTag|req.GetRequestId())
		if err != nil {
			return nil, toStatus(fmt.Errorf("providers: import %s: %w", d.Kind, err))
		}
		defer memfd.Close(fd)
		d.FD = fd
	}
	if why := s.unusable(); why != "" {
		return nil, toStatus(fmt.Errorf("%w: %s", ErrUnusable, why))
	}
	imp, ok := s.impl.(memory.Importer)
	if !ok {
		return nil, toStatus(fmt.Errorf("providers: import %s: %w: %s imports no memory", d.Kind, memory.ErrImportNotSupported, s.impl.Name()))
	}
	if err := d.Check(); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	buf, err := imp.Import(ctx, d)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := ctx.Err(); err != nil {
		// The host gave up: it will not learn this buffer's id, so undo it.
		if ferr := s.impl.Free(context.WithoutCancel(ctx), buf.ID); ferr != nil {
			s.logger.Warn("free after abandoned import", "buffer", buf.ID, "error", ferr)
		}
		return nil, toStatus(err)
	}
	s.mu.Lock()
	s.bufs[buf.ID] = buf.Size
	s.mu.Unlock()
	return &providerpb.ImportResponse{BufferId: uint64(buf.ID), Size: buf.Size}, nil
}

// Free implements providerpb.ProviderServer.
func (s *GRPCServer) Free(ctx context.Context, req *providerpb.FreeRequest) (*providerpb.FreeResponse, error) {
	id := memory.BufferID(req.GetBufferId())
	err := s.impl.Free(ctx, id)
	if err == nil || errors.Is(err, memory.ErrUnknownBuffer) {
		s.mu.Lock()
		delete(s.bufs, id)
		s.mu.Unlock()
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &providerpb.FreeResponse{}, nil
}

// AttachStaging implements providerpb.ProviderServer: it takes the staging
// memfd the host sent, maps it and hands it to a StagingRegistrar.
func (s *GRPCServer) AttachStaging(ctx context.Context, req *providerpb.AttachStagingRequest) (*providerpb.AttachStagingResponse, error) {
	if s.fds == nil {
		return nil, status.Error(codes.FailedPrecondition, "providers: no side socket to receive staging on")
	}
	id, size := req.GetStagingId(), req.GetSize()
	s.mu.RLock()
	_, dup := s.staging[id]
	s.mu.RUnlock()
	if dup {
		return nil, status.Errorf(codes.AlreadyExists, "providers: staging %d already attached", id)
	}
	fd, err := s.fds.Take(ctx, id)
	if err != nil {
		return nil, toStatus(fmt.Errorf("providers: staging %d: %w", id, err))
	}
	mem, err := memfd.Map(fd, size)
	memfd.Close(fd) // the mapping keeps the memory
	if err != nil {
		return nil, toStatus(fmt.Errorf("providers: staging %d: %w", id, err))
	}
	if r, ok := s.impl.(StagingRegistrar); ok {
		if err := r.RegisterStaging(mem); err != nil {
			memfd.Unmap(mem)
			return nil, toStatus(fmt.Errorf("providers: register staging %d: %w", id, err))
		}
	}
	s.mu.Lock()
	s.staging[id] = mem
	s.mu.Unlock()
	return &providerpb.AttachStagingResponse{}, nil
}

// stagingRange returns n bytes at off of staging buffer id.
func (s *GRPCServer) stagingRange(id uint64, off, n int64) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	s.mu.RLock()
	mem, ok := s.staging[id]
	s.mu.RUnlock()
	if !ok {
		return nil, status.Errorf(codes.FailedPrecondition, "providers: staging %d not attached", id)
	}
	if off < 0 || n < 0 || off > int64(len(mem)) || n > int64(len(mem))-off {
		return nil, status.Errorf(codes.InvalidArgument, "providers: staging %d: [%d, %d+%d) outside %d bytes", id, off, off, n, len(mem))
	}
	return mem[off : off+n], nil
}

// CopyIn implements providerpb.ProviderServer.
func (s *GRPCServer) CopyIn(ctx context.Context, req *providerpb.CopyInRequest) (*providerpb.CopyInResponse, error) {
	src, err := s.stagingRange(req.GetStagingId(), req.GetStagingOff(), req.GetLen())
	if err != nil {
		return nil, err
	}
	if err := s.impl.CopyIn(ctx, memory.BufferID(req.GetDst()), req.GetDstOff(), src); err != nil {
		return nil, toStatus(err)
	}
	return &providerpb.CopyInResponse{}, nil
}

// Gather implements providerpb.ProviderServer.
func (s *GRPCServer) Gather(ctx context.Context, req *providerpb.GatherRequest) (*providerpb.GatherResponse, error) {
	buf := copyPool.Get().(*[]memory.Copy)
	defer copyPool.Put(buf)
	copies, err := decodeCopies((*buf)[:0], req.GetCopies())
	*buf = copies
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.impl.Gather(ctx, copies); err != nil {
		return nil, toStatus(err)
	}
	return &providerpb.GatherResponse{}, nil
}

// ReadBack implements providerpb.ProviderServer.
func (s *GRPCServer) ReadBack(ctx context.Context, req *providerpb.ReadBackRequest) (*providerpb.ReadBackResponse, error) {
	dst, err := s.stagingRange(req.GetStagingId(), req.GetStagingOff(), req.GetLen())
	if err != nil {
		return nil, err
	}
	if err := s.impl.ReadBack(ctx, memory.BufferID(req.GetSrc()), req.GetSrcOff(), dst); err != nil {
		return nil, toStatus(err)
	}
	return &providerpb.ReadBackResponse{}, nil
}

// Checksum implements providerpb.ProviderServer.
func (s *GRPCServer) Checksum(ctx context.Context, req *providerpb.ChecksumRequest) (*providerpb.ChecksumResponse, error) {
	if len(req.GetOff()) != len(req.GetLen()) {
		return nil, status.Errorf(codes.InvalidArgument, "providers: checksum: %d offsets, %d lengths", len(req.GetOff()), len(req.GetLen()))
	}
	resp := &providerpb.ChecksumResponse{Crc32C: make([]uint32, len(req.GetOff()))}
	for i := range req.GetOff() {
		sum, err := s.impl.Checksum(ctx, memory.BufferID(req.GetBufferId()), req.Off[i], req.Len[i])
		if err != nil {
			return nil, toStatus(err)
		}
		resp.Crc32C[i] = sum
	}
	return resp, nil
}

// stopRing stops serving the ring, waiting for the operations running.
// Call it before closing the provider.
func (s *GRPCServer) stopRing() {
	s.mu.Lock()
	r := s.ring
	s.ring = nil
	s.mu.Unlock()
	if r != nil {
		r.stop()
	}
}

// releaseStaging unmaps every staging buffer. Call it only after the
// provider is closed and no call can run.
func (s *GRPCServer) releaseStaging() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, mem := range s.staging {
		if err := memfd.Unmap(mem); err != nil {
			s.logger.Warn("unmap staging", "staging", id, "error", err)
		}
		delete(s.staging, id)
	}
}
