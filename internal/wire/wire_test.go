package wire

import (
	"errors"
	"strings"
	"testing"
)

func fail(detail string) error { return errors.New(detail + ": bad") }

func TestDecoder(t *testing.T) {
	b := []byte{1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 'x', 'y', 0, 2, 'h', 'i'}
	d := NewDecoder(b, fail)
	var arr [2]byte
	if d.U8("a") != 1 || d.U16("b") != 2 || d.U32("c") != 3 || d.U64("d") != 4 {
		t.Fatalf("integers wrong: %v", d.Err())
	}
	d.Array(arr[:], "e")
	if string(arr[:]) != "xy" || d.String("f", 8) != "hi" || d.Err() != nil || d.Len() != 0 {
		t.Fatalf("array %q, err %v, left %d", arr, d.Err(), d.Len())
	}
	if d.U8("g") != 0 || !strings.Contains(d.Err().Error(), "truncated at g") {
		t.Fatalf("truncation: %v", d.Err())
	}
	// The first failure sticks.
	d.Failf("later")
	if !strings.Contains(d.Err().Error(), "truncated at g") {
		t.Fatalf("error replaced: %v", d.Err())
	}
}

func TestBytes(t *testing.T) {
	b := []byte{'a', 'b', 'c', 'd'}
	d := NewDecoder(b, fail)
	got := d.Bytes(3, "data")
	if string(got) != "abc" || cap(got) != 3 || d.Len() != 1 {
		t.Fatalf("Bytes(3) = %q (cap %d), %d left", got, cap(got), d.Len())
	}
	if b[0] = 'z'; got[0] != 'z' {
		t.Fatal("Bytes copied; want the input aliased")
	}
	if got := d.Bytes(2, "more"); got != nil || !strings.Contains(d.Err().Error(), "truncated at more") {
		t.Fatalf("Bytes past the end = %q, %v", got, d.Err())
	}
}

func TestStringBound(t *testing.T) {
	d := NewDecoder([]byte{0, 5, 'a', 'b', 'c', 'd', 'e'}, fail)
	if s := d.String("name", 4); s != "" || !strings.Contains(d.Err().Error(), "name is 5 bytes, more than 4") {
		t.Fatalf("got %q, %v", s, d.Err())
	}
	d = NewDecoder([]byte{0, 5, 'a'}, fail)
	if d.String("name", 9); !strings.Contains(d.Err().Error(), "truncated at name") {
		t.Fatalf("short string: %v", d.Err())
	}
}

func FuzzDecoder(f *testing.F) {
	f.Add([]byte{0, 3, 'a', 'b', 'c', 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		d := NewDecoder(b, fail)
		s := d.String("s", 16)
		d.U32("n")
		if len(s) > 16 {
			t.Fatalf("string of %d bytes passed a bound of 16", len(s))
		}
		if d.Err() == nil && d.Len() != len(b)-2-len(s)-4 {
			t.Fatalf("consumed wrong count")
		}
	})
}
