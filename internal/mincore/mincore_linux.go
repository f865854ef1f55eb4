package mincore

import (
	"errors"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pages returns mincore(2)'s vector for mem: one byte per page, bit 0 set
// where the page is in memory.
func pages(mem []byte) ([]byte, error) {
	vec := make([]byte, (len(mem)+os.Getpagesize()-1)/os.Getpagesize())
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(mem))), uintptr(len(mem)),
		uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if errno != 0 {
		return nil, os.NewSyscallError("mincore", errno)
	}
	return vec, nil
}

// Resident counts the pages of mem, a page-aligned mapping, that are in
// memory.
func Resident(mem []byte) (int, error) {
	vec, err := pages(mem)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n, nil
}

// Mapped reports whether all of mem is mapped: mincore fails with ENOMEM
// for a range that is not.
func Mapped(mem []byte) (bool, error) {
	_, err := pages(mem)
	if errors.Is(err, unix.ENOMEM) {
		return false, nil
	}
	return err == nil, err
}
