package catalog

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestListAfter(t *testing.T) {
	c, _ := openCatalog(t)
	all := []string{"B", "a", "a-1", "a.", "aa", "b", "c"} // bytewise order
	var vs []*Volume
	for _, name := range []string{"c", "a", "b", "B", "aa", "a.", "a-1"} {
		vs = append(vs, sampleVolume(name, 1))
	}
	if err := c.PutMany(vs); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		after string
		limit int
		want  []string
	}{
		{"", 0, all},
		{"", -1, all},
		{"", 3, all[:3]},
		{"B", 0, all[1:]},   // after an existing name: excluded
		{"a", 2, all[2:4]},  // a page from the middle
		{"a-0", 0, all[2:]}, // between names
		{"a-1\x00", 1, []string{"a."}},
		{"A", 0, all},    // before the first
		{"c", 0, nil},    // at the last
		{"zzz", 5, nil},  // past the last
		{"\xff", 0, nil}, // not a valid name: only a position
		{"aa", 1, []string{"b"}},
	}
	for _, tt := range tests {
		got, err := c.ListAfter(tt.after, tt.limit)
		if err != nil {
			t.Fatalf("ListAfter(%q, %d): %v", tt.after, tt.limit, err)
		}
		if !slices.Equal(names(got), tt.want) {
			t.Errorf("ListAfter(%q, %d) = %q, want %q", tt.after, tt.limit, names(got), tt.want)
		}
	}
	list, err := c.List()
	if err != nil || !slices.Equal(names(list), all) {
		t.Errorf("List = %q, %v; want %q", names(list), err, all)
	}

	// Paging with the last name of each page visits every volume once.
	var paged []string
	for after := ""; ; {
		page, err := c.ListAfter(after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, names(page)...)
		after = page[len(page)-1].Name
	}
	if !slices.Equal(paged, all) {
		t.Errorf("paged = %q, want %q", paged, all)
	}

	// Records come back whole, as Get returns them.
	got, err := c.ListAfter("b", 1)
	if err != nil || len(got) != 1 {
		t.Fatalf("ListAfter(b, 1) = %v, %v", got, err)
	}
	want, err := c.Get("c")
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Generation != want.Generation || got[0].Backing != want.Backing || !slices.Equal(got[0].CRCs, want.CRCs) {
		t.Errorf("ListAfter record %+v, Get %+v", got[0], want)
	}
}

func TestListAfterEmptyCatalog(t *testing.T) {
	c, _ := openCatalog(t)
	if vs, err := c.ListAfter("", 10); err != nil || len(vs) != 0 {
		t.Errorf("ListAfter on an empty catalog = %v, %v", vs, err)
	}
}

func TestPutMany(t *testing.T) {
	c, _ := openCatalog(t)
	if err := c.Put(sampleVolume("taken", 1)); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	vs := make([]*Volume, n)
	for i := range vs {
		vs[i] = sampleVolume(fmt.Sprintf("v%05d", n-i), 2)
		vs[i].Generation = 0
	}
	vs[0].Created = time.Time{}
	start := time.Now()
	if err := c.PutMany(vs); err != nil {
		t.Fatal(err)
	}
	t.Logf("PutMany of %d volumes: %v", n, time.Since(start))
	for i, v := range vs {
		if i > 0 && v.Generation <= vs[i-1].Generation {
			t.Fatalf("generation %d of %q not above %d", v.Generation, v.Name, vs[i-1].Generation)
		}
	}
	if vs[0].Created.IsZero() || vs[0].Created.Location() != time.UTC {
		t.Errorf("Created %v, want now in UTC", vs[0].Created)
	}
	got, err := c.Get(vs[7].Name)
	if err != nil || got.Generation != vs[7].Generation || !got.Created.Equal(vs[7].Created) {
		t.Errorf("Get = %+v, %v; want generation %d", got, err, vs[7].Generation)
	}
	list, err := c.List()
	if err != nil || len(list) != n+1 {
		t.Fatalf("List has %d volumes, %v; want %d", len(list), err, n+1)
	}
	if err := c.PutMany(nil); err != nil {
		t.Errorf("PutMany(nil): %v", err)
	}
}

// TestPutManyAllOrNothing checks that a failing PutMany stores nothing and
// leaves its arguments alone.
func TestPutManyAllOrNothing(t *testing.T) {
	c, path := openCatalog(t)
	if err := c.Put(sampleVolume("taken", 1)); err != nil {
		t.Fatal(err)
	}
	bad := sampleVolume("bad", 1)
	bad.Backing = "relative/path"
	tests := []struct {
		name   string
		vs     []*Volume
		want   error
		naming string
	}{
		{"exists", []*Volume{sampleVolume("new1", 1), sampleVolume("taken", 1)}, ErrExists, `"taken"`},
		{"duplicate", []*Volume{sampleVolume("new1", 1), sampleVolume("dup", 1), sampleVolume("dup", 1)}, ErrExists, `"dup"`},
		{"bad name", []*Volume{sampleVolume("new1", 1), sampleVolume(".hidden", 1)}, ErrBadName, `".hidden"`},
		{"invalid", []*Volume{sampleVolume("new1", 1), bad}, ErrInvalid, `"bad"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.PutMany(tt.vs)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.naming) || !strings.HasPrefix(err.Error(), "catalog: put ") {
				t.Fatalf("PutMany = %v, want %v naming %s", err, tt.want, tt.naming)
			}
			for _, v := range tt.vs {
				if v.Generation != 7 {
					t.Errorf("%q: generation set to %d on failure", v.Name, v.Generation)
				}
			}
			list, err := c.List()
			if err != nil || !slices.Equal(names(list), []string{"taken"}) {
				t.Errorf("after a failed PutMany: List = %q, %v", names(list), err)
			}
		})
	}
	c.Close()
	ro, err := Open(path, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.PutMany([]*Volume{sampleVolume("x", 1)}); !errors.Is(err, ErrReadOnly) {
		t.Errorf("read-only PutMany: %v, want ErrReadOnly", err)
	}
	if _, err := ro.ListAfter("", 1); err != nil {
		t.Errorf("read-only ListAfter: %v", err)
	}
}
