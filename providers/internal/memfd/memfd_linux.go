package memfd

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Create returns a new memfd named name of size bytes, created with
// MFD_CLOEXEC|MFD_ALLOW_SEALING and sealed with seals (SealShrink, SealGrow).
// The caller owns the fd.
func Create(name string, size int64, seals int) (int, error) {
	if size <= 0 {
		return -1, errSize
	}
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, fmt.Errorf("memfd: %w", os.NewSyscallError("memfd_create", err))
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("memfd: %d bytes: %w", size, os.NewSyscallError("ftruncate", err))
	}
	var s int
	if seals&SealShrink != 0 {
		s |= unix.F_SEAL_SHRINK
	}
	if seals&SealGrow != 0 {
		s |= unix.F_SEAL_GROW
	}
	if s != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, s); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("memfd: %w", os.NewSyscallError("fcntl(F_ADD_SEALS)", err))
		}
	}
	return fd, nil
}

// Map maps size bytes of fd read-write and MAP_SHARED, so writes are seen by
// every other mapping of the same file (in this or another process).
func Map(fd int, size int64) ([]byte, error) {
	if size <= 0 {
		return nil, errSize
	}
	if int64(int(size)) != size {
		return nil, fmt.Errorf("memfd: map %d bytes: too large for this platform", size)
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("memfd: map %d bytes: %w", size, os.NewSyscallError("mmap", err))
	}
	return mem, nil
}

// Unmap removes a mapping made by Map.
func Unmap(mem []byte) error {
	if mem == nil {
		return nil
	}
	if err := unix.Munmap(mem); err != nil {
		return fmt.Errorf("memfd: %w", os.NewSyscallError("munmap", err))
	}
	return nil
}

// Close closes fd, ignoring EINTR as Linux has released the fd even then.
func Close(fd int) error {
	if err := unix.Close(fd); err != nil && err != unix.EINTR {
		return fmt.Errorf("memfd: %w", os.NewSyscallError("close", err))
	}
	return nil
}

// CheckSealed checks that fd, received from another process, is a file of
// exactly size bytes sealed against shrinking (F_SEAL_SHRINK), so a mapping
// of it can never fault past its end (SIGBUS) whatever the sender does later.
func CheckSealed(fd int, size int64) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("memfd: %w", os.NewSyscallError("fstat", err))
	}
	if st.Size != size {
		return fmt.Errorf("memfd: file of %d bytes, want %d", st.Size, size)
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return fmt.Errorf("memfd: %w", os.NewSyscallError("fcntl(F_GET_SEALS)", err))
	}
	if seals&unix.F_SEAL_SHRINK == 0 {
		return fmt.Errorf("memfd: not sealed against shrinking (seals %#x): create it with F_SEAL_SHRINK", seals)
	}
	return nil
}
