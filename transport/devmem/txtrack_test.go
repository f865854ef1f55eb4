package devmem

import (
	"errors"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCompletionTracker(t *testing.T) {
	var released []uint32
	tr := NewCompletionTracker(0, func(b uint32) { released = append(released, b) })
	for i := uint32(0); i < 4; i++ {
		if seq := tr.Sent(10 + i); seq != i {
			t.Fatalf("Sent = %d, want %d", seq, i)
		}
	}
	// A buffer used by two calls (a resumed partial send).
	tr.Sent(20)
	tr.Sent(20, 21)
	if tr.InFlight() != 6 {
		t.Fatalf("InFlight = %d, want 6", tr.InFlight())
	}
	steps := []struct {
		c    Completion
		want []uint32
	}{
		{Completion{Lo: 0, Hi: 1, Copied: true}, []uint32{10, 11}},
		{Completion{Lo: 3, Hi: 3}, []uint32{13}}, // out of order
		{Completion{Lo: 4, Hi: 4}, nil},          // buffer 20 still in call 5
		{Completion{Lo: 2, Hi: 2}, []uint32{12}},
		{Completion{Lo: 5, Hi: 5}, []uint32{20, 21}},
	}
	for _, s := range steps {
		released = nil
		if err := tr.Complete(s.c); err != nil {
			t.Fatalf("Complete(%+v): %v", s.c, err)
		}
		if diff := cmp.Diff(s.want, released); diff != "" {
			t.Errorf("Complete(%+v) released (-want +got):\n%s", s.c, diff)
		}
	}
	if tr.InFlight() != 0 {
		t.Errorf("InFlight = %d after all completions", tr.InFlight())
	}
	want := TrackerStats{Sends: 6, Completed: 6, Copied: 2, Notifications: 5, Released: 6}
	if diff := cmp.Diff(want, tr.Stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
}

func TestCompletionTrackerWraps(t *testing.T) {
	var released []uint32
	first := uint32(0xffffffff - 99)
	tr := NewCompletionTracker(first, func(b uint32) { released = append(released, b) })
	// 300 sends cross 2^32 and force the ring to grow.
	for i := uint32(0); i < 300; i++ {
		tr.Sent(i)
	}
	if tr.Next() != first+300 || tr.Next() != 200 {
		t.Fatalf("Next = %d, want 200", tr.Next())
	}
	// One coalesced completion spanning the wrap: [first+50, 149].
	if err := tr.Complete(Completion{Lo: first + 50, Hi: 149}); err != nil {
		t.Fatal(err)
	}
	if len(released) != 200 || released[0] != 50 || released[199] != 249 {
		t.Fatalf("released %d buffers, first %d", len(released), released[0])
	}
	if err := tr.Complete(Completion{Lo: first, Hi: first + 49}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Complete(Completion{Lo: 150, Hi: 199}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(released)
	for i, b := range released {
		if b != uint32(i) {
			t.Fatalf("released[%d] = %d", i, b)
		}
	}
	if tr.InFlight() != 0 {
		t.Errorf("InFlight = %d", tr.InFlight())
	}
}

func TestCompletionTrackerMismatch(t *testing.T) {
	tr := NewCompletionTracker(5, func(uint32) {})
	tr.Sent(1)
	tr.Sent(2)
	bad := []Completion{
		{Lo: 4, Hi: 4}, // before the first send
		{Lo: 7, Hi: 7}, // not sent yet
		{Lo: 5, Hi: 7}, // runs past the last send
		{Lo: 6, Hi: 5}, // wrapped: 2^32 calls
	}
	for _, c := range bad {
		if err := tr.Complete(c); !errors.Is(err, ErrCompletionMismatch) {
			t.Errorf("Complete(%+v) = %v, want ErrCompletionMismatch", c, err)
		}
	}
	if err := tr.Complete(Completion{Lo: 6, Hi: 6}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Complete(Completion{Lo: 6, Hi: 6}); !errors.Is(err, ErrCompletionMismatch) {
		t.Errorf("second completion of 6 = %v, want ErrCompletionMismatch", err)
	}
	if tr.InFlight() != 2 {
		t.Errorf("InFlight = %d, want 2 (5 outstanding, 6 done behind it)", tr.InFlight())
	}
}

func TestCompletionTrackerNoAlloc(t *testing.T) {
	tr := NewCompletionTracker(0, func(uint32) {})
	bufs := []uint32{1, 2, 3, 4}
	for i := 0; i < 100; i++ { // warm the ring
		tr.Sent(bufs...)
	}
	_ = tr.Complete(Completion{Lo: 0, Hi: 99})
	allocs := testing.AllocsPerRun(100, func() {
		lo := tr.Sent(bufs...)
		hi := tr.Sent(bufs...)
		if err := tr.Complete(Completion{Lo: lo, Hi: hi}); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per send+complete", allocs)
	}
}
