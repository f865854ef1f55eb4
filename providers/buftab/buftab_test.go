package buftab

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockxfer/blockxfer/providers/memory"
)

// buf stands in for a provider's buffer.
type buf struct {
	name     string
	released atomic.Bool
}

func add(t *testing.T, tab *Table[*buf], name string, size int64) memory.BufferID {
	t.Helper()
	id, err := tab.Add(&buf{name: name}, size)
	if err != nil {
		t.Fatalf("Add(%s, %d): %v", name, size, err)
	}
	return id
}

func TestAddGetRemove(t *testing.T) {
	tab := New[*buf]("test")
	a := add(t, tab, "a", 10)
	b := add(t, tab, "b", 20)
	if a != 1 || b != 2 {
		t.Errorf("ids = %d, %d; want 1, 2", a, b)
	}
	if n := tab.Len(); n != 2 {
		t.Errorf("Len = %d, want 2", n)
	}
	for id, want := range map[memory.BufferID]string{a: "a", b: "b"} {
		got, err := tab.Get("get", id)
		if err != nil || got.name != want {
			t.Errorf("Get(%d) = %v, %v; want %s", id, got, err, want)
		}
		got, err = tab.Lookup("lookup", id, 0, 10)
		if err != nil || got.name != want {
			t.Errorf("Lookup(%d) = %v, %v; want %s", id, got, err, want)
		}
	}
	got, err := tab.Remove("free", a)
	if err != nil || got.name != "a" {
		t.Fatalf("Remove(%d) = %v, %v; want a", a, got, err)
	}
	if _, err := tab.Remove("free", a); !errors.Is(err, memory.ErrUnknownBuffer) {
		t.Errorf("second Remove: %v, want ErrUnknownBuffer", err)
	}
	if got, err := tab.Get("get", a); !errors.Is(err, memory.ErrUnknownBuffer) || got != nil {
		t.Errorf("Get of a removed id = %v, %v; want nil, ErrUnknownBuffer", got, err)
	}
	if n := tab.Len(); n != 1 {
		t.Errorf("Len = %d after Remove, want 1", n)
	}
}

func TestIDsNeverReused(t *testing.T) {
	tab := New[*buf]("test")
	seen := make(map[memory.BufferID]bool)
	fresh := func(id memory.BufferID) {
		t.Helper()
		if id == 0 || seen[id] {
			t.Fatalf("id %d handed out again (or zero)", id)
		}
		seen[id] = true
	}
	for range 3 {
		id := add(t, tab, "x", 1)
		fresh(id)
		if _, err := tab.Remove("free", id); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		fresh(add(t, tab, "y", 1))
	}
	if got := len(tab.Drain()); got != 3 {
		t.Fatalf("Drain returned %d buffers, want 3", got)
	}
	fresh(add(t, tab, "z", 1))
}

// TestBounds checks the range check at and past every edge, through each of
// the lookups that make it.
func TestBounds(t *testing.T) {
	tab := New[*buf]("test")
	const size = 4096
	id := add(t, tab, "a", size)
	empty := add(t, tab, "empty", 0)
	for _, tc := range []struct {
		id     memory.BufferID
		off, n int64
		ok     bool
	}{
		{id, 0, size, true},
		{id, 0, 0, true},
		{id, size, 0, true},      // empty range at the end
		{id, size - 1, 1, true},  // last byte
		{id, 1, size - 1, true},  // off+n == size
		{id, 0, size + 1, false}, // one past the end
		{id, 1, size, false},     // off+n == size+1
		{id, size + 1, 0, false}, // empty range past the end
		{id, -1, 1, false},       // negative offset
		{id, -1, 0, false},       // negative offset, empty
		{id, 0, -1, false},       // negative length
		{id, size, -1, false},    // negative length at the end
		{id, math.MaxInt64, 1, false},
		{id, 1, math.MaxInt64, false},             // off+n overflows
		{id, math.MaxInt64, math.MaxInt64, false}, // off+n overflows
		{id, math.MinInt64, math.MaxInt64, false},
		{id, size / 2, math.MaxInt64 - 1, false},
		{empty, 0, 0, true},
		{empty, 0, 1, false},
		{empty, 1, 0, false},
	} {
		r := tab.Read()
		_, rErr := r.Lookup("copy-in", tc.id, tc.off, tc.n)
		r.Done()
		_, tErr := tab.Lookup("copy-in", tc.id, tc.off, tc.n)
		for _, err := range []error{rErr, tErr} {
			switch {
			case tc.ok && err != nil:
				t.Errorf("buffer %d [%d, +%d): unexpected error %v", tc.id, tc.off, tc.n, err)
			case !tc.ok && !errors.Is(err, memory.ErrOutOfBounds):
				t.Errorf("buffer %d [%d, +%d): error = %v, want ErrOutOfBounds", tc.id, tc.off, tc.n, err)
			case !tc.ok && errors.Is(err, memory.ErrUnknownBuffer):
				t.Errorf("buffer %d [%d, +%d): error = %v also wraps ErrUnknownBuffer", tc.id, tc.off, tc.n, err)
			}
		}
	}
}

func TestErrorText(t *testing.T) {
	tab := New[*buf]("hostmem")
	id := add(t, tab, "a", 4096)
	_, err := tab.Lookup("copy-in", id, 4000, 100)
	if want := "hostmem: copy-in: buffer 1: [4000, 4000+100) of 4096 bytes: range outside buffer"; err == nil || err.Error() != want {
		t.Errorf("out of bounds: %v, want %q", err, want)
	}
	_, err = tab.Lookup("copy-in", 7, 0, 1)
	if want := "hostmem: copy-in: buffer 7: unknown buffer"; err == nil || err.Error() != want {
		t.Errorf("unknown: %v, want %q", err, want)
	}
	if !errors.Is(err, memory.ErrUnknownBuffer) || errors.Is(err, memory.ErrOutOfBounds) {
		t.Errorf("unknown: %v wraps the wrong sentinel", err)
	}
	_, err = tab.Remove("free", 7)
	if want := "hostmem: free: buffer 7: unknown buffer"; err == nil || err.Error() != want {
		t.Errorf("Remove: %v, want %q", err, want)
	}
	r := tab.Read()
	defer r.Done()
	if _, err := r.Get("gather dst", 9); err == nil || err.Error() != "hostmem: gather dst: buffer 9: unknown buffer" {
		t.Errorf("Reader.Get: %v", err)
	}
}

func TestReaderCache(t *testing.T) {
	tab := New[*buf]("test")
	ids := []memory.BufferID{add(t, tab, "a", 1), add(t, tab, "b", 2), add(t, tab, "c", 3)}
	names := map[memory.BufferID]string{ids[0]: "a", ids[1]: "b", ids[2]: "c"}
	r := tab.Read()
	defer r.Done()
	// Cycle through more buffers than the cache holds, in both orders, with
	// each buffer's own size as the edge.
	for _, seq := range [][]int{{0, 1, 2, 0, 1, 2}, {2, 2, 1, 0, 0, 2, 1}, {0, 1, 0, 1, 2, 0}} {
		for _, i := range seq {
			id := ids[i]
			b, err := r.Lookup("x", id, 0, int64(i+1))
			if err != nil || b.name != names[id] {
				t.Fatalf("Lookup(%d) = %v, %v; want %s", id, b, err, names[id])
			}
			if _, err := r.Lookup("x", id, 0, int64(i+2)); !errors.Is(err, memory.ErrOutOfBounds) {
				t.Fatalf("Lookup(%d) past its end: %v (cache mixed up sizes?)", id, err)
			}
			if b, err := r.Get("x", id); err != nil || b.name != names[id] {
				t.Fatalf("Get(%d) = %v, %v", id, b, err)
			}
		}
	}
	if _, err := r.Lookup("x", 99, 0, 0); !errors.Is(err, memory.ErrUnknownBuffer) {
		t.Errorf("unknown id through the Reader: %v", err)
	}
}

func TestCheckGather(t *testing.T) {
	tab := New[*buf]("test")
	a := add(t, tab, "a", 100)
	b := add(t, tab, "b", 50)
	const gone = memory.BufferID(99)
	for _, tc := range []struct {
		name   string
		copies []memory.Copy
		want   error // nil, ErrUnknownBuffer or ErrOutOfBounds
		text   string
	}{
		{"none", nil, nil, ""},
		{"edges", []memory.Copy{
			{Src: a, SrcOff: 50, Dst: b, DstOff: 0, Len: 50},
			{Src: b, SrcOff: 50, Dst: a, DstOff: 100, Len: 0},
			{Src: a, Dst: a, DstOff: 1, Len: 99},
		}, nil, ""},
		{"src past the end", []memory.Copy{{Src: a, SrcOff: 51, Dst: b, Len: 50}}, memory.ErrOutOfBounds,
			"test: gather src: buffer 1: [51, 51+50) of 100 bytes: range outside buffer"},
		{"dst past the end", []memory.Copy{{Src: a, Dst: b, DstOff: 1, Len: 50}}, memory.ErrOutOfBounds,
			"test: gather dst: buffer 2: [1, 1+50) of 50 bytes: range outside buffer"},
		{"negative length", []memory.Copy{{Src: a, Dst: b, Len: -1}}, memory.ErrOutOfBounds, ""},
		{"overflow", []memory.Copy{{Src: a, SrcOff: 1, Dst: b, Len: math.MaxInt64}}, memory.ErrOutOfBounds, ""},
		{"unknown src", []memory.Copy{{Src: gone, Dst: b, Len: 1}}, memory.ErrUnknownBuffer,
			"test: gather src: buffer 99: unknown buffer"},
		{"unknown dst", []memory.Copy{{Src: a, Dst: gone, Len: 1}}, memory.ErrUnknownBuffer,
			"test: gather dst: buffer 99: unknown buffer"},
		// Both buffers are checked before either range.
		{"src out of bounds, dst unknown", []memory.Copy{{Src: a, SrcOff: 100, Dst: gone, Len: 1}}, memory.ErrUnknownBuffer, ""},
		// The first bad copy is reported; later ones are not looked at.
		{"first error", []memory.Copy{
			{Src: a, Dst: b, Len: 10},
			{Src: a, Dst: b, DstOff: 45, Len: 10},
			{Src: gone, Dst: b, Len: 1},
		}, memory.ErrOutOfBounds, ""},
	} {
		r := tab.Read()
		err := r.CheckGather(tc.copies)
		r.Done()
		switch {
		case tc.want == nil && err != nil:
			t.Errorf("%s: unexpected error %v", tc.name, err)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("%s: error = %v, want %v", tc.name, err, tc.want)
		case tc.text != "" && (err == nil || err.Error() != tc.text):
			t.Errorf("%s: error = %v, want %q", tc.name, err, tc.text)
		}
	}
}

func TestReaderDone(t *testing.T) {
	tab := New[*buf]("test")
	id := add(t, tab, "a", 1)
	r := tab.Read()
	r.Done()
	r.Done() // a second Done does nothing
	// The read lock is free: a writer gets through.
	if _, err := tab.Remove("free", id); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if recover() == nil {
			t.Error("Lookup after Done did not panic")
		}
	}()
	r.Lookup("x", id, 0, 0)
}

// TestRemoveWaitsForReaders checks the guarantee the providers rely on: a
// buffer looked up through a Reader is not handed back (to be released)
// before the Reader is Done.
func TestRemoveWaitsForReaders(t *testing.T) {
	for _, how := range []string{"Remove", "Drain", "Close"} {
		t.Run(how, func(t *testing.T) {
			tab := New[*buf]("test")
			id := add(t, tab, "a", 8)
			r := tab.Read()
			if _, err := r.Lookup("copy", id, 0, 8); err != nil {
				t.Fatal(err)
			}
			done := make(chan []*buf)
			go func() {
				switch how {
				case "Remove":
					b, _ := tab.Remove("free", id)
					done <- []*buf{b}
				case "Drain":
					done <- tab.Drain()
				case "Close":
					done <- tab.Close(errors.New("closed"))
				}
			}()
			select {
			case <-done:
				t.Fatalf("%s returned while a Reader held the buffer", how)
			case <-time.After(50 * time.Millisecond):
			}
			r.Done()
			if got := <-done; len(got) != 1 || got[0].name != "a" {
				t.Fatalf("%s returned %v", how, got)
			}
		})
	}
}

func TestDrain(t *testing.T) {
	tab := New[*buf]("test")
	if got := tab.Drain(); got != nil {
		t.Errorf("Drain of an empty table = %v", got)
	}
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		add(t, tab, name, 1)
	}
	if _, err := tab.Remove("free", 2); err != nil {
		t.Fatal(err)
	}
	var names string
	for _, b := range tab.Drain() {
		names += b.name
	}
	if names != "acde" {
		t.Errorf("Drain returned %q, want acde (in id order)", names)
	}
	if n := tab.Len(); n != 0 {
		t.Errorf("Len = %d after Drain", n)
	}
	// Still usable.
	id := add(t, tab, "f", 1)
	if b, err := tab.Get("get", id); err != nil || b.name != "f" {
		t.Errorf("Get after Drain = %v, %v", b, err)
	}
}

func TestClose(t *testing.T) {
	errClosed := errors.New("test: closed")
	tab := New[*buf]("test")
	a := add(t, tab, "a", 4)
	add(t, tab, "b", 4)
	if got := tab.Close(errClosed); len(got) != 2 || got[0].name != "a" || got[1].name != "b" {
		t.Fatalf("Close returned %v, want a, b", got)
	}
	if got := tab.Close(errors.New("again")); got != nil {
		t.Errorf("second Close returned %v", got)
	}
	nb := &buf{name: "late"}
	if id, err := tab.Add(nb, 1); err != errClosed || id != 0 {
		t.Errorf("Add after Close = %d, %v; want 0, the close error", id, err)
	}
	_, getErr := tab.Get("get", a)
	_, lookErr := tab.Lookup("lookup", a, 0, 1)
	_, rmErr := tab.Remove("free", a)
	r := tab.Read()
	readerErr := r.Err()
	_, rGetErr := r.Get("get", a)
	_, rLookErr := r.Lookup("lookup", 99, -1, 0)
	r.Done()
	for name, err := range map[string]error{
		"Get": getErr, "Lookup": lookErr, "Remove": rmErr,
		"Reader.Err": readerErr, "Reader.Get": rGetErr, "Reader.Lookup": rLookErr,
	} {
		if err != errClosed {
			t.Errorf("%s after Close: %v, want the close error as is", name, err)
		}
	}
	if n := tab.Len(); n != 0 {
		t.Errorf("Len = %d after Close", n)
	}
	open := New[*buf]("test").Read()
	defer open.Done()
	if err := open.Err(); err != nil {
		t.Errorf("Reader.Err on an open table: %v", err)
	}
}

func TestMisuse(t *testing.T) {
	for name, f := range map[string]func(){
		"negative size": func() { New[*buf]("test").Add(&buf{}, -1) },
		"nil close err": func() { New[*buf]("test").Close(nil) },
		"zero Reader":   func() { var r Reader[*buf]; r.Err() },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

// TestConcurrentUse hammers one table from many goroutines (run it with
// -race): every buffer a Reader finds is unreleased until Done, ids are
// unique, and nothing is lost.
func TestConcurrentUse(t *testing.T) {
	tab := New[*buf]("test")
	shared := add(t, tab, "shared", 1<<20)
	var (
		wg  sync.WaitGroup
		ids sync.Map
		bad atomic.Int64
	)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				b := &buf{name: fmt.Sprint(g, "/", i)}
				id, err := tab.Add(b, 4096)
				if err != nil {
					bad.Add(1)
					return
				}
				if _, dup := ids.LoadOrStore(id, b); dup {
					bad.Add(1)
				}
				r := tab.Read()
				s, err1 := r.Lookup("gather src", id, 0, 4096)
				d, err2 := r.Lookup("gather dst", shared, int64(g)*4096, 4096)
				if err1 != nil || err2 != nil || s != b || s.released.Load() || d.released.Load() {
					bad.Add(1)
				}
				// Another goroutine's buffer: it may be gone, but never
				// released while this Reader holds it.
				if o, err := r.Get("peek", id-1); err == nil && o.released.Load() {
					bad.Add(1)
				}
				r.Done()
				if _, err := tab.Lookup("checksum", id, 4095, 1); err != nil {
					bad.Add(1)
				}
				if got, err := tab.Remove("free", id); err != nil || got != b {
					bad.Add(1)
				}
				b.released.Store(true)
			}
		})
	}
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Errorf("%d inconsistencies under concurrent use", n)
	}
	if got := tab.Drain(); len(got) != 1 || got[0].name != "shared" {
		t.Errorf("left in the table: %v, want only the shared buffer", got)
	}
}

func TestReaderNoAllocations(t *testing.T) {
	tab := New[*buf]("test")
	a, b := add(t, tab, "a", 1<<16), add(t, tab, "b", 1<<16)
	copies := []memory.Copy{{Src: a, Dst: b, Len: 4096}, {Src: b, SrcOff: 4096, Dst: a, Len: 4096}}
	n := testing.AllocsPerRun(100, func() {
		r := tab.Read()
		defer r.Done()
		if err := r.CheckGather(copies); err != nil {
			panic(err)
		}
		if _, err := r.Get("gather src", a); err != nil {
			panic(err)
		}
		for off := int64(0); off < 1<<16; off += 4096 {
			if _, err := r.Lookup("gather src", a, off, 4096); err != nil {
				panic(err)
			}
			if _, err := r.Lookup("gather dst", b, 1<<16-4096-off, 4096); err != nil {
				panic(err)
			}
		}
		if _, err := tab.Lookup("checksum", a, 0, 1); err != nil {
			panic(err)
		}
	})
	if n != 0 {
		t.Errorf("lookups allocate %.1f times per run, want 0", n)
	}
}

// Example shows how a provider keeps its buffers: copies look up through a
// Reader and run before Done, so Free cannot release a buffer under them.
func Example() {
	type buffer struct{ mem []byte }
	bufs := New[*buffer]("demo")

	// Alloc
	id, _ := bufs.Add(&buffer{mem: make([]byte, 8)}, 8)

	// CopyIn
	copyIn := func(id memory.BufferID, off int64, src []byte) error {
		r := bufs.Read()
		defer r.Done()
		b, err := r.Lookup("copy-in", id, off, int64(len(src)))
		if err != nil {
			return err
		}
		copy(b.mem[off:], src)
		return nil
	}
	fmt.Println(copyIn(id, 2, []byte("hi")))
	fmt.Println(copyIn(id, 7, []byte("hi")))

	// Free: remove under the lock, release outside it.
	b, _ := bufs.Remove("free", id)
	b.mem = nil // release it
	fmt.Println(copyIn(id, 0, nil))
	// Output:
	// <nil>
	// demo: copy-in: buffer 1: [7, 7+2) of 8 bytes: range outside buffer
	// demo: copy-in: buffer 1: unknown buffer
}
