package memory

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// ImportKind names the kind of caller-owned memory an [ImportDesc]
// describes.
type ImportKind string

// Import kinds. A provider supports some of them and refuses the others with
// an error wrapping [ErrImportNotSupported].
const (
	// ImportFD: host memory the caller shares by a memfd (memfd_create),
	// sealed against shrinking (F_SEAL_SHRINK) so that it cannot be
	// truncated under a read. The importer maps it.
	ImportFD ImportKind = "fd"
	// ImportShm: host memory in a shared-memory file (shm_open, a tmpfs
	// file) shared by fd. Such a file cannot be sealed, so the caller
	// could truncate it under a read; importers refuse it unless they are
	// told to trust their callers.
	ImportShm ImportKind = "shm"
	// ImportCUDAIPC: CUDA device memory of another process, by the 64-byte
	// handle cuIpcGetMemHandle returned (cuIpcOpenMemHandle opens it).
	ImportCUDAIPC ImportKind = "cuda-ipc"
	// ImportCUDAVMMFD: CUDA virtual-memory-management allocation shared as
	// a POSIX fd (cuMemExportToShareableHandle), such as PyTorch's
	// expandable segments (cuMemImportFromShareableHandle opens it).
	ImportCUDAVMMFD ImportKind = "cuda-vmm-fd"
	// ImportDmabuf: a dmabuf fd whose exporter allows the importer to map
	// or attach it.
	ImportDmabuf ImportKind = "dmabuf"
)

// CanImport reports whether c lists kind among its ImportKinds.
func (c Capabilities) CanImport(kind ImportKind) bool {
	return slices.Contains(c.ImportKinds, kind)
}

// MaxIPCHandle is the largest opaque handle an ImportDesc carries (a CUDA
// IPC handle is 64 bytes).
const MaxIPCHandle = 64

// ImportDesc describes caller-owned memory to import: Size bytes at Offset
// of the object FD (or Handle) names.
type ImportDesc struct {
	Kind ImportKind
	// FD is the file descriptor for the fd, shm, cuda-vmm-fd and dmabuf
	// kinds; -1 for the others. Import does not take it over: the caller
	// still owns it and may close it once Import has returned, as the
	// import holds what it needs (a mapping, a device pointer).
	FD int
	// Handle is the opaque handle for cuda-ipc (at most MaxIPCHandle
	// bytes); nil for the others.
	Handle []byte
	// Offset is where the memory starts within the object, in bytes. It
	// need not be page-aligned: a sub-range of a larger allocation is
	// imported as it is.
	Offset int64
	// Size is the number of bytes imported; it must be positive and
	// Offset+Size must lie within the object.
	Size int64
}

// Check reports what is wrong with d on its face (no kernel or driver
// call): an unknown kind, a size that is not positive, a negative offset, a
// missing fd or handle.
func (d ImportDesc) Check() error {
	switch d.Kind {
	case ImportFD, ImportShm, ImportCUDAVMMFD, ImportDmabuf:
		if d.FD < 0 {
			return fmt.Errorf("import %s: no fd", d.Kind)
		}
	case ImportCUDAIPC:
		if len(d.Handle) == 0 || len(d.Handle) > MaxIPCHandle {
			return fmt.Errorf("import %s: handle of %d bytes, want 1 to %d", d.Kind, len(d.Handle), MaxIPCHandle)
		}
	default:
		return fmt.Errorf("import %q: %w: unknown kind (want %s, %s, %s, %s or %s)", d.Kind, ErrImportNotSupported,
			ImportFD, ImportShm, ImportCUDAIPC, ImportCUDAVMMFD, ImportDmabuf)
	}
	if d.Size <= 0 {
		return fmt.Errorf("import %s: size %d: must be positive", d.Kind, d.Size)
	}
	if d.Offset < 0 || d.Offset > (1<<62)-d.Size {
		return fmt.Errorf("import %s: offset %d: out of range", d.Kind, d.Offset)
	}
	return nil
}

// Importer is implemented by providers that can use memory the caller owns
// as a destination instead of allocating it. The returned Buffer is used
// like an allocated one (CopyIn, Gather, ReadBack, Checksum, Bytes where
// the provider maps its buffers) and released by Free or Close, which undo
// the import (unmap, close the handle) but never free the caller's memory.
type Importer interface {
	// Import makes the memory d describes a buffer of this provider. A
	// kind the provider cannot import fails with an error wrapping
	// ErrImportNotSupported. The Buffer's DmabufFD is -1.
	Import(ctx context.Context, d ImportDesc) (Buffer, error)
}

// ErrImportNotSupported: the provider cannot import memory of this kind.
var ErrImportNotSupported = errors.New("import of this memory kind not supported")
