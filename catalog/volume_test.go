package catalog

import (
	"errors"
	"hash/crc32"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	good := []string{
		"a", "vol1", "A-b_c.d", "a..b", "x.", "0", "-dash", "_under",
		strings.Repeat("n", MaxNameLen),
	}
	for _, name := range good {
		if err := ValidName(name); err != nil {
			t.Errorf("ValidName(%q) = %v, want nil", name, err)
		}
	}
	bad := []string{
		"", "../x", "/etc", ".hidden", ".", "..", "a/b", "a\x00b", "\x00",
		strings.Repeat("n", MaxNameLen+1), "sp ace", "tab\t", "é", "a\\b", "a:b",
	}
	for _, name := range bad {
		err := ValidName(name)
		if !errors.Is(err, ErrBadName) {
			t.Errorf("ValidName(%q) = %v, want ErrBadName", name, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "catalog: ") {
			t.Errorf("ValidName(%q) error %q lacks the catalog: prefix", name, err)
		}
	}
}

func TestExtentGeometry(t *testing.T) {
	tests := []struct {
		size, extentSize int64
		extents          int
		lastOff, lastN   int64
	}{
		{size: 4096, extentSize: 4096, extents: 1, lastOff: 0, lastN: 4096},
		{size: 1, extentSize: 4096, extents: 1, lastOff: 0, lastN: 1},
		{size: 4097, extentSize: 4096, extents: 2, lastOff: 4096, lastN: 1},
		{size: 3 * 8192, extentSize: 8192, extents: 3, lastOff: 2 * 8192, lastN: 8192},
		{size: 10<<20 + 5, extentSize: 4 << 20, extents: 3, lastOff: 8 << 20, lastN: 2<<20 + 5},
	}
	for _, tt := range tests {
		v := &Volume{Size: tt.size, ExtentSize: tt.extentSize}
		if got := v.Extents(); got != tt.extents {
			t.Errorf("size %d extent %d: Extents() = %d, want %d", tt.size, tt.extentSize, got, tt.extents)
			continue
		}
		off, n := v.ExtentRange(tt.extents - 1)
		if off != tt.lastOff || n != tt.lastN {
			t.Errorf("size %d extent %d: last ExtentRange = (%d, %d), want (%d, %d)",
				tt.size, tt.extentSize, off, n, tt.lastOff, tt.lastN)
		}
		var total int64
		for i := range v.Extents() {
			o, n := v.ExtentRange(i)
			if o != total {
				t.Errorf("extent %d starts at %d, want %d", i, o, total)
			}
			total += n
		}
		if total != tt.size {
			t.Errorf("extents cover %d bytes, want %d", total, tt.size)
		}
	}
	if got := (&Volume{}).Extents(); got != 0 {
		t.Errorf("zero Volume has %d extents, want 0", got)
	}
}

func TestExtentRangePanics(t *testing.T) {
	v := &Volume{Name: "p", Size: 8192, ExtentSize: 4096}
	for _, i := range []int{-1, 2} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("ExtentRange(%d) did not panic", i)
				}
			}()
			v.ExtentRange(i)
		}()
	}
}

// TestCastagnoli pins the CRC table to CRC-32C with the standard check value,
// so a switch to another polynomial cannot pass unnoticed.
func TestCastagnoli(t *testing.T) {
	if got := crc32.Checksum([]byte("123456789"), castagnoli); got != 0xe3069283 {
		t.Fatalf("CRC-32C(123456789) = %#08x, want 0xe3069283", got)
	}
}

func TestCheckGeometry(t *testing.T) {
	tests := []struct {
		size, extentSize int64
		ok               bool
	}{
		{1, 4096, true},
		{1 << 40, DefaultExtentSize, true},
		{MaxExtents * 4096, 4096, true},
		{MaxExtents*4096 + 1, 4096, false},
		{0, 4096, false},
		{-1, 4096, false},
		{4096, 0, false},
		{4096, 4095, false},
		{4096, 4096 + 512, false},
		{4096, MaxExtentSize + 4096, false},
		{1<<63 - 1, MaxExtentSize, false},
	}
	for _, tt := range tests {
		if p := checkGeometry(tt.size, tt.extentSize); (p == "") != tt.ok {
			t.Errorf("checkGeometry(%d, %d) = %q, want ok=%v", tt.size, tt.extentSize, p, tt.ok)
		}
	}
}
