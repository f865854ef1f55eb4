package memfd

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCreateMap(t *testing.T) {
	fd, err := Create("memfd-test", 8192, SealShrink|SealGrow)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fd)
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil || seals != unix.F_SEAL_SHRINK|unix.F_SEAL_GROW {
		t.Errorf("seals = %#x, %v; want F_SEAL_SHRINK|F_SEAL_GROW", seals, err)
	}
	if err := unix.Ftruncate(fd, 16384); err == nil {
		t.Error("grew a grow-sealed memfd")
	}
	a, err := Map(fd, 8192)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Map(fd, 8192)
	if err != nil {
		t.Fatal(err)
	}
	copy(a[4000:], "shared")
	if !bytes.Equal(b[4000:4006], []byte("shared")) {
		t.Error("two mappings of one memfd do not share bytes: not MAP_SHARED")
	}
	if err := Unmap(a); err != nil {
		t.Error(err)
	}
	if err := Unmap(b); err != nil {
		t.Error(err)
	}
	if err := Unmap(nil); err != nil {
		t.Errorf("Unmap(nil) = %v", err)
	}
}

func TestBadSizes(t *testing.T) {
	for _, size := range []int64{0, -1} {
		if fd, err := Create("x", size, 0); err == nil {
			Close(fd)
			t.Errorf("Create(%d) succeeded", size)
		}
		if _, err := Map(0, size); err == nil {
			t.Errorf("Map(%d) succeeded", size)
		}
	}
	fd, err := Create("unsealed", 4096, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fd)
	if seals, _ := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0); seals != 0 {
		t.Errorf("seals = %#x without asking for any", seals)
	}
}

func TestCheckSealed(t *testing.T) {
	fd, err := Create("check", 8192, SealShrink|SealGrow)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fd)
	if err := CheckSealed(fd, 8192); err != nil {
		t.Errorf("sealed memfd of the right size: %v", err)
	}
	if err := CheckSealed(fd, 4096); err == nil {
		t.Error("size mismatch accepted")
	}
	open, err := Create("unsealed", 8192, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(open)
	if err := CheckSealed(open, 8192); err == nil || !strings.Contains(err.Error(), "F_SEAL_SHRINK") {
		t.Errorf("unsealed memfd: %v, want a refusal naming F_SEAL_SHRINK", err)
	}
}
