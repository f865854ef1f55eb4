package hostmem

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/providers/memory"
)

// importKinds are the kinds Import takes here.
var importKinds = []memory.ImportKind{memory.ImportFD, memory.ImportShm}

// MapImport checks the file d names and maps d.Size bytes of it at
// d.Offset read-write and shared. The file must be a regular file (a memfd)
// reaching past Offset+Size, sealed against shrinking (F_SEAL_SHRINK) and
// not against writing, so the mapping can never fault past the file's end
// (SIGBUS) whatever the fd's other holders do later. It returns the whole
// mapping (to unmap with munmap) and the imported bytes within it. Import
// uses it, and so does a plugin host that maps its plugin's buffers.
func MapImport(d memory.ImportDesc) (mapping, mem []byte, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(d.FD, &st); err != nil {
		return nil, nil, fmt.Errorf("fd %d: %w", d.FD, os.NewSyscallError("fstat", err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, nil, fmt.Errorf("fd %d is not a regular file (mode %#o): pass a memfd (memfd_create)", d.FD, st.Mode)
	}
	if d.Offset+d.Size > st.Size {
		return nil, nil, fmt.Errorf("[%d, %d+%d) is past the end of the %d-byte file: %w",
			d.Offset, d.Offset, d.Size, st.Size, memory.ErrOutOfBounds)
	}
	seals, err := unix.FcntlInt(uintptr(d.FD), unix.F_GET_SEALS, 0)
	if err != nil {
		seals = 0 // EINVAL: a file that cannot be sealed
	}
	if seals&unix.F_SEAL_SHRINK == 0 {
		return nil, nil, fmt.Errorf("fd %d is not sealed against shrinking: create it with memfd_create(MFD_ALLOW_SEALING) "+
			"and add F_SEAL_SHRINK (fcntl F_ADD_SEALS) after sizing it, so it cannot be truncated under a read", d.FD)
	}
	if seals&(unix.F_SEAL_WRITE|unix.F_SEAL_FUTURE_WRITE) != 0 {
		return nil, nil, fmt.Errorf("fd %d is sealed against writing (F_SEAL_WRITE or F_SEAL_FUTURE_WRITE): a destination must be writable", d.FD)
	}
	if int64(int(d.Size)) != d.Size {
		return nil, nil, fmt.Errorf("%d bytes: too large for this platform", d.Size)
	}
	page := int64(os.Getpagesize())
	skip := d.Offset % page
	// Not MAP_POPULATE: a large region the caller fills only in part
	// (an allocator's arena) must not be made resident whole here.
	mapping, err = unix.Mmap(d.FD, d.Offset-skip, int(skip+d.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		if err == unix.EACCES {
			return nil, nil, fmt.Errorf("fd %d: %w: the fd must be open for reading and writing", d.FD, os.NewSyscallError("mmap", err))
		}
		return nil, nil, fmt.Errorf("map %d bytes at %d of fd %d: %w", d.Size, d.Offset, d.FD, os.NewSyscallError("mmap", err))
	}
	return mapping, mapping[skip : skip+d.Size : skip+d.Size], nil
}
