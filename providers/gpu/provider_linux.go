//go:build linux && cgo

package main

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/providers"
	"github.com/blockxfer/blockxfer/providers/buftab"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// maxStreams is how many CUDA streams concurrent Gathers share.
const maxStreams = 4

// checksumChunk is how much Checksum reads back per driver call.
const checksumChunk = 4 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checksumBufs holds read-back buffers for Checksum.
var checksumBufs = sync.Pool{New: func() any { b := make([]byte, checksumChunk); return &b }}

// provider is the CUDA memory.Provider for one device. It is safe for
// concurrent use: copies look their buffers up through a buftab.Reader and
// run (and a Gather hands its stream back) before Done, so Free and Close,
// which take buffers out of the table, wait for them.
type provider struct {
	cfg         config
	why         string // unusable reason
	device      cuDevice
	ctx         cuContext // the device's primary context, retained
	name        string
	version     string
	total       int64
	dmabufOK    bool
	noDmabufWhy string
	pageSize    int64

	// rdmaFlush: reads of memory a NIC may have written (buffers exported
	// as dmabufs) are preceded by cuFlushGPUDirectRDMAWrites; rdmaNote
	// says why or why not (in Version).
	rdmaFlush bool
	rdmaNote  string

	// importKinds are the kinds Import accepts; noImport says, for the
	// CUDA kinds not among them, why not (in Version and Import's error).
	importKinds []memory.ImportKind
	noImport    map[memory.ImportKind]string

	// ipc holds the IPC handles open, by handle: the imports of one
	// allocation share its mapping, which is closed with the last of them.
	ipcMu sync.Mutex
	ipc   map[[ipcHandleSize]byte]*ipcMapping

	// testSkipGatherSync makes Gather return without waiting for its
	// copies: only the test proving the stand-in driver catches that.
	testSkipGatherSync bool

	streams  chan cuStream
	streamMu sync.Mutex
	nstreams int

	bufs *buftab.Table[*gpuBuffer]

	// mu guards staging and closed, and orders Alloc's Add against Close:
	// once Close has drained the table no buffer is added, so no copy can
	// start on the released context or take a stream being destroyed.
	mu      sync.Mutex
	staging [][]byte // registered with cuMemHostRegister
	closed  bool
}

// gpuBuffer is one cuMemAlloc allocation, or an import of caller-owned
// memory.
type gpuBuffer struct {
	ptr  uint64 // device address
	size int64  // as asked
	fd   int    // exported dmabuf, or -1: with one, a NIC may write it
	// undo releases an import (closes the IPC handle, unmaps the VMM
	// memory) instead of cuMemFree; nil for an allocation.
	undo func() error
}

// ipcHandleSize is the size of a CUipcMemHandle.
const ipcHandleSize = 64

// ipcMapping is another process's allocation, opened by its IPC handle.
type ipcMapping struct {
	ptr  uint64 // the allocation's base here
	size int64  // the whole allocation
	refs int    // imports using it
}

// newProvider loads the driver and opens the configured device. Any failure
// makes the provider unusable, with a reason saying what to fix.
func newProvider(cfg config) *provider {
	p := &provider{
		cfg:      cfg,
		pageSize: int64(unix.Getpagesize()),
		streams:  make(chan cuStream, maxStreams),
		bufs:     buftab.New[*gpuBuffer]("gpu"),
		version:  "1",
		ipc:      make(map[[ipcHandleSize]byte]*ipcMapping),
	}
	p.why = p.open()
	return p
}

// open returns "" or why the device cannot be used.
func (p *provider) open() string {
	if p.cfg.err != nil {
		return p.cfg.err.Error()
	}
	if err, missing := loadDriver(p.cfg.library); err != nil {
		if missing {
			return fmt.Sprintf("%s lacks the CUDA driver entry point %v: the NVIDIA driver is too old, update it", p.cfg.library, err)
		}
		if p.cfg.override {
			return fmt.Sprintf("%s (from %s) cannot be loaded: %v", p.cfg.library, libraryEnv, err)
		}
		return fmt.Sprintf("%s not found: install the NVIDIA driver (dlopen: %v)", p.cfg.library, err)
	}
	if err := cuInit(); err != nil {
		return fmt.Sprintf("%v: no usable NVIDIA GPU (is the kernel driver loaded? try nvidia-smi)", err)
	}
	driver := ""
	if v, err := cuDriverVersion(); err == nil {
		driver = fmt.Sprintf("CUDA driver %d.%d; ", v/1000, v%1000/10)
	}
	n, err := cuDeviceCount()
	if err != nil {
		return err.Error()
	}
	if p.cfg.device >= n {
		return fmt.Sprintf("CUDA device %d requested (-device or %s) but the driver reports %d device(s)", p.cfg.device, deviceEnv, n)
	}
	if p.device, err = cuDeviceGet(p.cfg.device); err != nil {
		return err.Error()
	}
	p.name = cuDeviceName(p.device)
	if p.total, err = cuDeviceTotalMem(p.device); err != nil {
		return err.Error()
	}
	supported, err := cuDmabufSupported(p.device)
	switch {
	case err != nil:
		p.noDmabufWhy = fmt.Sprintf("cannot tell whether cuda:%d exports dmabufs: %v", p.cfg.device, err)
	case !supported:
		p.noDmabufWhy = fmt.Sprintf("cuda:%d (%s) reports CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED = 0: dmabuf export needs a GPU and driver that support it (the NVIDIA open kernel modules, CUDA 11.7+)", p.cfg.device, p.name)
	case !hasDmabufExport():
		p.noDmabufWhy = fmt.Sprintf("%s has no cuMemGetHandleForAddressRange: dmabuf export needs CUDA 11.7+, update the NVIDIA driver", p.cfg.library)
	default:
		p.dmabufOK = true
	}
	ordering, orderingErr := cuDeviceAttribute(p.device, attrGPUDirectRDMAWritesOrdering)
	options, optionsErr := cuDeviceAttribute(p.device, attrGPUDirectRDMAFlushWritesOptions)
	p.rdmaFlush, p.rdmaNote = rdmaFlushPolicy(ordering, orderingErr, options, optionsErr, hasRDMAFlush())
	p.probeImports()
	p.version = "1 (" + driver + p.rdmaNote + "; " + p.importNote() + ")"
	if p.ctx, err = cuPrimaryCtxRetain(p.device); err != nil {
		return err.Error()
	}
	return ""
}

// probeImports decides which kinds of caller-owned CUDA memory Import
// accepts: cuda-ipc where the driver has the IPC entry points, cuda-vmm-fd
// where it has the VMM ones and the device supports VMM memory shared as
// POSIX fds. For each kind left out it records why.
func (p *provider) probeImports() {
	p.noImport = make(map[memory.ImportKind]string)
	if missing := loadIPC(); missing != "" {
		p.noImport[memory.ImportCUDAIPC] = fmt.Sprintf("%s lacks %s: importing CUDA IPC handles needs a newer NVIDIA driver, update it", p.cfg.library, missing)
	} else {
		p.importKinds = append(p.importKinds, memory.ImportCUDAIPC)
	}
	vmm, vmmErr := cuDeviceAttribute(p.device, attrVMMSupported)
	posix, posixErr := cuDeviceAttribute(p.device, attrPOSIXFDSupported)
	switch missing := loadVMM(); {
	case missing != "":
		p.noImport[memory.ImportCUDAVMMFD] = fmt.Sprintf("%s lacks %s: importing VMM memory by fd needs CUDA 10.2+, update the NVIDIA driver", p.cfg.library, missing)
	case vmmErr != nil:
		p.noImport[memory.ImportCUDAVMMFD] = fmt.Sprintf("cannot tell whether cuda:%d supports VMM memory: %v", p.cfg.device, vmmErr)
	case vmm == 0:
		p.noImport[memory.ImportCUDAVMMFD] = fmt.Sprintf("cuda:%d reports CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 0: share the memory by IPC handle (cuda-ipc) instead", p.cfg.device)
	case posixErr != nil || posix == 0:
		p.noImport[memory.ImportCUDAVMMFD] = fmt.Sprintf("cuda:%d does not share VMM memory as POSIX fds (CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED = 0 or unreadable): share it by IPC handle (cuda-ipc) instead", p.cfg.device)
	default:
		p.importKinds = append(p.importKinds, memory.ImportCUDAVMMFD)
	}
}

// importNote says which kinds Import accepts and why the others are left
// out, for Version.
func (p *provider) importNote() string {
	note := "imports none"
	if len(p.importKinds) > 0 {
		kinds := make([]string, len(p.importKinds))
		for i, k := range p.importKinds {
			kinds[i] = string(k)
		}
		note = "imports " + strings.Join(kinds, ", ")
	}
	for _, k := range []memory.ImportKind{memory.ImportCUDAIPC, memory.ImportCUDAVMMFD} {
		if why, ok := p.noImport[k]; ok {
			note += fmt.Sprintf("; no %s import: %s", k, why)
		}
	}
	return note
}

// CUDA driver API values for GPUDirect RDMA write ordering and flushing
// (CUGPUDirectRDMAWritesOrdering, CUflushGPUDirectRDMAWritesOptions).
const (
	rdmaOrderingNone       = 0   // CU_GPU_DIRECT_RDMA_WRITES_ORDERING_NONE
	rdmaOrderingOwner      = 100 // CU_GPU_DIRECT_RDMA_WRITES_ORDERING_OWNER
	rdmaOrderingAllDevices = 200 // CU_GPU_DIRECT_RDMA_WRITES_ORDERING_ALL_DEVICES
	rdmaFlushOptionHost    = 1   // CU_FLUSH_GPU_DIRECT_RDMA_WRITES_OPTION_HOST
)

// orderingName names a CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WRITES_ORDERING
// value.
func orderingName(v int) string {
	switch v {
	case rdmaOrderingNone:
		return "NONE"
	case rdmaOrderingOwner:
		return "OWNER"
	case rdmaOrderingAllDevices:
		return "ALL_DEVICES"
	}
	return fmt.Sprint(v)
}

// rdmaFlushPolicy decides whether the GPU must flush a NIC's writes
// (cuFlushGPUDirectRDMAWrites to the owner) before reading memory the NIC
// wrote, from CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WRITES_ORDERING (118) and
// _FLUSH_WRITES_OPTIONS (117), and says what it chose. Writes ordered for
// the owning GPU (OWNER or ALL_DEVICES: Hopper and later on PCIe) need no
// flush. Below that (pre-Hopper GPUs, and the NONE some C2C platforms
// report) a device copy could read bytes the NIC has written but that are
// not yet visible: flush, if the driver offers the host-side flush. An
// unreadable ordering is taken as NONE.
func rdmaFlushPolicy(ordering int, orderingErr error, options int, optionsErr error, haveFlush bool) (bool, string) {
	if orderingErr == nil && ordering >= rdmaOrderingOwner {
		return false, fmt.Sprintf("GPUDirect RDMA writes ordered (%s): no flush", orderingName(ordering))
	}
	why := "ordering " + orderingName(ordering)
	if orderingErr != nil {
		why = fmt.Sprintf("ordering unknown: %v", orderingErr)
	}
	switch {
	case !haveFlush:
		return false, fmt.Sprintf("GPUDirect RDMA writes unordered (%s) and the driver lacks cuFlushGPUDirectRDMAWrites: NIC-written bytes may be read stale", why)
	case optionsErr != nil:
		return false, fmt.Sprintf("GPUDirect RDMA writes unordered (%s) and the flush options are unknown (%v): NIC-written bytes may be read stale", why, optionsErr)
	case options&rdmaFlushOptionHost == 0:
		return false, fmt.Sprintf("GPUDirect RDMA writes unordered (%s) and no host flush (flush options %#x): NIC-written bytes may be read stale", why, options)
	}
	return true, fmt.Sprintf("GPUDirect RDMA writes unordered (%s): cuFlushGPUDirectRDMAWrites before reading NIC-written memory", why)
}

// flushFor flushes the NIC's writes before a read of b, if b is exported (a
// NIC may have written it) and the GPU needs the flush.
func (p *provider) flushFor(b *gpuBuffer) error {
	if !p.rdmaFlush || b.fd < 0 {
		return nil
	}
	return cuFlushRDMAWrites(p.ctx)
}

func (p *provider) Name() string { return "gpu" }

// Version reports the plugin and driver versions and whether reads of
// NIC-written memory are preceded by a GPUDirect RDMA flush, and why
// (providers.Versioner; `blockcat providers` shows it).
func (p *provider) Version() string { return p.version }

// UnusableReason says why the GPU cannot be used (providers.UnusableReasoner).
func (p *provider) UnusableReason() string { return p.why }

func (p *provider) Capabilities() memory.Capabilities {
	return memory.Capabilities{
		Kind:           memory.GPU,
		Device:         fmt.Sprintf("cuda:%d", p.cfg.device),
		DmabufExport:   p.dmabufOK,
		CPUMappable:    false,
		Gather:         true,
		DeviceChecksum: false,
		MaxAlloc:       p.total,
		ImportKinds:    p.importKinds,
	}
}

// Alloc allocates size bytes, rounded up to the host page size (dmabuf
// export needs page-aligned ranges). With dmabuf true the whole allocation
// is exported with cuMemGetHandleForAddressRange; the buffer owns the fd.
func (p *provider) Alloc(ctx context.Context, size int64, dmabuf bool) (memory.Buffer, error) {
	none := memory.Buffer{DmabufFD: -1}
	if p.why != "" {
		return none, fmt.Errorf("gpu: %w: %s", providers.ErrUnusable, p.why)
	}
	if dmabuf && !p.dmabufOK {
		return none, fmt.Errorf("gpu: %w: %s", memory.ErrNoDmabuf, p.noDmabufWhy)
	}
	if size <= 0 {
		return none, fmt.Errorf("gpu: alloc %d bytes: size must be positive", size)
	}
	rounded := (size + p.pageSize - 1) &^ (p.pageSize - 1)
	ptr, err := cuMemAlloc(p.ctx, rounded)
	if err != nil {
		return none, fmt.Errorf("gpu: alloc %d bytes on cuda:%d: %w", rounded, p.cfg.device, err)
	}
	b := &gpuBuffer{ptr: ptr, size: size, fd: -1}
	if dmabuf {
		if int64(ptr)%p.pageSize != 0 {
			cuMemFree(p.ctx, ptr)
			return none, fmt.Errorf("gpu: cuMemAlloc returned %#x, not page-aligned: cannot export it as a dmabuf", ptr)
		}
		if b.fd, err = cuExportDmabuf(p.ctx, ptr, rounded); err != nil {
			cuMemFree(p.ctx, ptr)
			return none, fmt.Errorf("gpu: export %d bytes as a dmabuf: %w", rounded, err)
		}
	}
	return p.add(b)
}

// add puts b in the table, or releases it if the provider is closed.
func (p *provider) add(b *gpuBuffer) (memory.Buffer, error) {
	none := memory.Buffer{DmabufFD: -1}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		b.release(p.ctx)
		return none, errors.New("gpu: provider closed")
	}
	id, err := p.bufs.Add(b, b.size)
	if err != nil {
		b.release(p.ctx)
		return none, err
	}
	return memory.Buffer{ID: id, Size: b.size, DmabufFD: b.fd}, nil
}

// Import makes caller-owned CUDA memory a buffer (memory.Importer), used
// like an allocated one until Free, which undoes the import and never
// frees the caller's memory:
//
//   - memory.ImportCUDAIPC: another process's cuMemAlloc memory by the
//     64-byte handle cuIpcGetMemHandle gave for the allocation's base;
//     cuIpcOpenMemHandle_v2 (CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS) opens it,
//     and the buffer is [Offset, Offset+Size) of the allocation
//     (cuMemGetAddressRange_v2 gives its size). Imports of one allocation
//     share one open handle, closed (cuIpcCloseMemHandle) with the last.
//   - memory.ImportCUDAVMMFD: a VMM allocation (cuMemCreate) the caller
//     exported as a POSIX fd (cuMemExportToShareableHandle), imported with
//     cuMemImportFromShareableHandle, mapped whole (to Offset+Size, rounded
//     up to the allocation granularity, where the fd does not say the
//     allocation's size) at an address reserved for it, read-write for this
//     device; Free unmaps it and frees the address range.
//
// Other kinds, and these where the driver or device cannot (see Version),
// fail with an error wrapping memory.ErrImportNotSupported.
func (p *provider) Import(ctx context.Context, d memory.ImportDesc) (memory.Buffer, error) {
	none := memory.Buffer{DmabufFD: -1}
	if p.why != "" {
		return none, fmt.Errorf("gpu: %w: %s", providers.ErrUnusable, p.why)
	}
	if !slices.Contains(p.importKinds, d.Kind) {
		why, ok := p.noImport[d.Kind]
		if !ok {
			why = fmt.Sprintf("the gpu provider imports CUDA memory (%s, %s) only", memory.ImportCUDAIPC, memory.ImportCUDAVMMFD)
		}
		return none, fmt.Errorf("gpu: import %s: %w: %s", d.Kind, memory.ErrImportNotSupported, why)
	}
	if err := d.Check(); err != nil {
		return none, fmt.Errorf("gpu: %w", err)
	}
	var (
		b   *gpuBuffer
		err error
	)
	if d.Kind == memory.ImportCUDAIPC {
		b, err = p.importIPC(d)
	} else {
		b, err = p.importVMM(d)
	}
	if err != nil {
		return none, err
	}
	return p.add(b)
}

// importIPC opens (or shares) the IPC handle and checks the range against
// the allocation.
func (p *provider) importIPC(d memory.ImportDesc) (*gpuBuffer, error) {
	if len(d.Handle) != ipcHandleSize {
		return nil, fmt.Errorf("gpu: import cuda-ipc: handle of %d bytes: pass the %d-byte CUipcMemHandle cuIpcGetMemHandle returns", len(d.Handle), ipcHandleSize)
	}
	key := [ipcHandleSize]byte(d.Handle)
	m, err := p.openIPC(key)
	if err != nil {
		return nil, err
	}
	if d.Offset > m.size || d.Size > m.size-d.Offset {
		err := fmt.Errorf("gpu: import cuda-ipc: [%d, %d+%d) is outside the %d-byte allocation the handle names: %w", d.Offset, d.Offset, d.Size, m.size, memory.ErrOutOfBounds)
		return nil, errors.Join(err, p.closeIPC(key))
	}
	return &gpuBuffer{ptr: m.ptr + uint64(d.Offset), size: d.Size, fd: -1, undo: func() error { return p.closeIPC(key) }}, nil
}

// openIPC opens the allocation an IPC handle names, or takes another
// reference to it if an import has it open.
func (p *provider) openIPC(key [ipcHandleSize]byte) (*ipcMapping, error) {
	p.ipcMu.Lock()
	defer p.ipcMu.Unlock()
	if m, ok := p.ipc[key]; ok {
		m.refs++
		return m, nil
	}
	ptr, size, err := cuIPCOpen(p.ctx, key[:])
	if err != nil {
		return nil, fmt.Errorf("gpu: import cuda-ipc: %w%s", err, ipcHint(err))
	}
	m := &ipcMapping{ptr: ptr, size: size, refs: 1}
	p.ipc[key] = m
	return m, nil
}

// closeIPC drops a reference to an open IPC handle, closing it with the last.
func (p *provider) closeIPC(key [ipcHandleSize]byte) error {
	p.ipcMu.Lock()
	defer p.ipcMu.Unlock()
	m := p.ipc[key]
	if m.refs--; m.refs > 0 {
		return nil
	}
	delete(p.ipc, key)
	return cuIPCClose(p.ctx, m.ptr)
}

// ipcHint says what to fix for a failed cuIpcOpenMemHandle.
func ipcHint(err error) string {
	var ce *cudaError
	if !errors.As(err, &ce) {
		return ""
	}
	switch ce.Name {
	case "CUDA_ERROR_INVALID_VALUE":
		return ": IPC handle of memory freed by its owner (or of an owner that exited), or from another device; " +
			"the owner must keep the memory allocated while it is imported"
	case "CUDA_ERROR_INVALID_CONTEXT":
		return ": the handle was made in this process, and IPC handles open only in another process"
	}
	return ""
}

// importVMM imports and maps the VMM allocation d.FD shares.
func (p *provider) importVMM(d memory.ImportDesc) (*gpuBuffer, error) {
	need := d.Offset + d.Size
	var st unix.Stat_t
	if err := unix.Fstat(d.FD, &st); err == nil && st.Size > 0 {
		// An fd that tells the allocation's size: map it whole.
		if need > st.Size {
			return nil, fmt.Errorf("gpu: import cuda-vmm-fd: [%d, %d+%d) is outside the %d-byte allocation the fd shares: %w", d.Offset, d.Offset, d.Size, st.Size, memory.ErrOutOfBounds)
		}
		need = st.Size
	}
	va, mapped, err := cuVMMImport(p.ctx, d.FD, p.cfg.device, need)
	if err != nil {
		var ce *cudaError
		switch {
		case errors.As(err, &ce) && ce.Op == "cuMemMap" && ce.Name == "CUDA_ERROR_INVALID_VALUE":
			err = fmt.Errorf("%w: %d bytes from the start of the allocation are more than it holds: %w", err, need, memory.ErrOutOfBounds)
		case errors.As(err, &ce) && strings.HasPrefix(ce.Op, "cuMemImportFromShareableHandle"):
			err = fmt.Errorf("%w: pass the fd cuMemExportToShareableHandle(CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) returned, "+
				"of memory created with that type in CUmemAllocationProp.requestedHandleTypes", err)
		}
		return nil, fmt.Errorf("gpu: import cuda-vmm-fd: %w", err)
	}
	return &gpuBuffer{ptr: va + uint64(d.Offset), size: d.Size, fd: -1, undo: func() error { return cuVMMRelease(p.ctx, va, mapped) }}, nil
}

// release undoes an import, or closes the dmabuf and frees the device
// memory of an allocation.
func (b *gpuBuffer) release(ctx cuContext) error {
	if b.undo != nil {
		return b.undo()
	}
	var errs []error
	if b.fd >= 0 {
		errs = append(errs, unix.Close(b.fd))
	}
	return errors.Join(append(errs, cuMemFree(ctx, b.ptr))...)
}

func (p *provider) Free(ctx context.Context, id memory.BufferID) error {
	b, err := p.bufs.Remove("free", id)
	if err != nil {
		return err
	}
	return b.release(p.ctx)
}

// CopyIn copies host bytes to the device with cuMemcpyHtoD. From a staging
// buffer (pinned by RegisterStaging) this is a direct DMA.
func (p *provider) CopyIn(ctx context.Context, dst memory.BufferID, off int64, src []byte) error {
	r := p.bufs.Read()
	defer r.Done()
	b, err := r.Lookup("copy-in", dst, off, int64(len(src)))
	if err != nil {
		return err
	}
	if err := cuHtoD(p.ctx, b.ptr+uint64(off), src); err != nil {
		return fmt.Errorf("gpu: copy-in: %w", err)
	}
	return nil
}

// ReadBack copies device bytes to the host with cuMemcpyDtoH.
func (p *provider) ReadBack(ctx context.Context, src memory.BufferID, off int64, dst []byte) error {
	r := p.bufs.Read()
	defer r.Done()
	b, err := r.Lookup("read-back", src, off, int64(len(dst)))
	if err != nil {
		return err
	}
	if err := p.flushFor(b); err != nil {
		return fmt.Errorf("gpu: read-back: %w", err)
	}
	if err := cuDtoH(p.ctx, dst, b.ptr+uint64(off)); err != nil {
		return fmt.Errorf("gpu: read-back: %w", err)
	}
	return nil
}

// Gather checks every copy (source, then destination), queues them all on
// one stream in order (cuMemcpyDtoDAsync) and waits for the stream. If a
// source is exported (a NIC may have written it, e.g. the devmem RX arena)
// and the GPU does not order NIC writes, the NIC's writes are flushed first
// (cuFlushGPUDirectRDMAWrites). The stream goes back to the pool before the
// Reader is Done, so once Close has drained the table every stream is in
// the pool.
func (p *provider) Gather(ctx context.Context, copies []memory.Copy) error {
	if len(copies) == 0 {
		return nil
	}
	r := p.bufs.Read()
	defer r.Done()
	dst, src, n := make([]uint64, len(copies)), make([]uint64, len(copies)), make([]uint64, len(copies))
	flush := false
	for i, c := range copies {
		s, err := r.Lookup("gather src", c.Src, c.SrcOff, c.Len)
		if err != nil {
			return err
		}
		flush = flush || p.rdmaFlush && s.fd >= 0
		d, err := r.Lookup("gather dst", c.Dst, c.DstOff, c.Len)
		if err != nil {
			return err
		}
		dst[i], src[i], n[i] = d.ptr+uint64(c.DstOff), s.ptr+uint64(c.SrcOff), uint64(c.Len)
	}
	s, err := p.stream(ctx)
	if err != nil {
		return err
	}
	defer func() { p.streams <- s }()
	if err := cuGather(p.ctx, s, flush, !p.testSkipGatherSync, dst, src, n); err != nil {
		return fmt.Errorf("gpu: gather: %w", err)
	}
	return nil
}

// stream returns a free stream, creating up to maxStreams.
func (p *provider) stream(ctx context.Context) (cuStream, error) {
	select {
	case s := <-p.streams:
		return s, nil
	default:
	}
	p.streamMu.Lock()
	if p.nstreams < maxStreams {
		p.nstreams++
		p.streamMu.Unlock()
		s, err := cuStreamCreate(p.ctx)
		if err != nil {
			p.streamMu.Lock()
			p.nstreams--
			p.streamMu.Unlock()
			return nil, fmt.Errorf("gpu: %w", err)
		}
		return s, nil
	}
	p.streamMu.Unlock()
	select {
	case s := <-p.streams:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Checksum reads the range back in 4 MiB chunks and computes CRC-32C on the
// host: there is no device kernel for it.
func (p *provider) Checksum(ctx context.Context, buf memory.BufferID, off, n int64) (uint32, error) {
	r := p.bufs.Read()
	defer r.Done()
	b, err := r.Lookup("checksum", buf, off, n)
	if err != nil {
		return 0, err
	}
	if err := p.flushFor(b); err != nil {
		return 0, fmt.Errorf("gpu: checksum: %w", err)
	}
	chunk := checksumBufs.Get().(*[]byte)
	defer checksumBufs.Put(chunk)
	var sum uint32
	for pos := int64(0); pos < n; {
		m := min(n-pos, int64(len(*chunk)))
		if err := cuDtoH(p.ctx, (*chunk)[:m], b.ptr+uint64(off+pos)); err != nil {
			return 0, fmt.Errorf("gpu: checksum: %w", err)
		}
		sum = crc32.Update(sum, castagnoli, (*chunk)[:m])
		pos += m
	}
	return sum, nil
}

// RegisterStaging pins a staging buffer with cuMemHostRegister so CopyIn and
// ReadBack through it are direct DMA (providers.StagingRegistrar).
func (p *provider) RegisterStaging(mem []byte) error {
	if p.why != "" || len(mem) == 0 {
		return nil
	}
	if err := cuHostRegister(p.ctx, mem); err != nil {
		return fmt.Errorf("gpu: pin staging: %w", err)
	}
	p.mu.Lock()
	p.staging = append(p.staging, mem)
	p.mu.Unlock()
	return nil
}

// Close frees every buffer, destroys the streams, unpins staging and
// releases the primary context.
func (p *provider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.why != "" {
		p.closed = true
		return nil
	}
	p.closed = true
	var errs []error
	for _, b := range p.bufs.Drain() {
		errs = append(errs, b.release(p.ctx))
	}
	p.streamMu.Lock()
	for ; p.nstreams > 0; p.nstreams-- {
		errs = append(errs, cuStreamDestroy(p.ctx, <-p.streams))
	}
	p.streamMu.Unlock()
	for _, mem := range p.staging {
		errs = append(errs, cuHostUnregister(p.ctx, mem))
	}
	p.staging = nil
	errs = append(errs, cuPrimaryCtxRelease(p.device))
	return errors.Join(errs...)
}
