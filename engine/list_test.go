package engine_test

import (
	"bytes"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/engine"
)

// listNames returns n distinct volume names of exactly MaxName bytes whose
// bytewise order differs from the order they are made in: the first bytes
// cycle through characters from both ends of the name alphabet.
func listNames(n int) []string {
	prefixes := []string{"z", "-", "a", "0", "_", "A", "Z", "9", "x.", "x-"}
	names := make([]string, n)
	for i := range names {
		name := fmt.Sprintf("%s%06d", prefixes[i%len(prefixes)], n-i)
		names[i] = name + strings.Repeat("n", blockproto.MaxName-len(name))
	}
	return names
}

// register adds volumes named names to the store's catalog in one
// transaction, all on one shared backing file: listing never opens it.
func register(t *testing.T, store *catalog.Store, names []string) map[string]*catalog.Volume {
	t.Helper()
	backing := filepath.Join(t.TempDir(), "shared.vol")
	if err := os.WriteFile(backing, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	vs := make([]*catalog.Volume, len(names))
	for i, name := range names {
		vs[i] = &catalog.Volume{Name: name, Size: 4096 * int64(1+i%3), ExtentSize: 4096,
			Backing: backing, CRCs: make([]uint32, 1+i%3)}
	}
	if err := store.Catalog().PutMany(vs); err != nil {
		t.Fatal(err)
	}
	byName := make(map[string]*catalog.Volume, len(vs))
	for _, v := range vs {
		byName[v.Name] = v
	}
	return byName
}

// checkListing checks that got lists every volume of want exactly once, in
// bytewise name order, with its record's geometry and generation.
func checkListing(t *testing.T, got []blockproto.VolumeStat, want map[string]*catalog.Volume) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("listed %d volumes, want %d", len(got), len(want))
	}
	for i, st := range got {
		if i > 0 && st.Name <= got[i-1].Name {
			t.Fatalf("entry %d %q does not sort after %q", i, st.Name, got[i-1].Name)
		}
		v, ok := want[st.Name]
		if !ok {
			t.Fatalf("listed %q, which is not in the catalog", st.Name)
		}
		if st.Size != uint64(v.Size) || st.ExtentSize != uint32(v.ExtentSize) || st.Generation != v.Generation {
			t.Fatalf("listed %+v, catalog has %+v", st, v)
		}
	}
}

// TestListManyVolumes lists a catalog of more than two pages of volumes with
// the longest names: every name arrives once and in order, the pages are
// full MaxVolumes pages that fit a frame, and the session stays usable.
func TestListManyVolumes(t *testing.T) {
	const n = 10000
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	data := e.volume("real", 64<<10, 4096)
	start := time.Now()
	want := register(t, e.store, listNames(n))
	t.Logf("registered %d volumes in %v", n, time.Since(start))
	rv, err := e.store.Get("real")
	if err != nil {
		t.Fatal(err)
	}
	want["real"] = rv

	c := e.client(nil)
	start = time.Now()
	got, err := c.Volumes(ctx)
	if err != nil {
		t.Fatalf("Volumes: %v", err)
	}
	t.Logf("listed %d volumes in %v", len(got), time.Since(start))
	checkListing(t, got, want)

	// Page by page: full pages, each encodable in one frame, the last one
	// short and without Next.
	var sizes []int
	var paged []blockproto.VolumeStat
	for after := ""; ; {
		vols, next, err := c.VolumesPage(ctx, after)
		if err != nil {
			t.Fatalf("VolumesPage(%.10q): %v", after, err)
		}
		body, err := blockproto.Marshal(&blockproto.VolumeList{Volumes: vols, Next: next})
		if err != nil || len(body) > blockproto.MaxFrame {
			t.Fatalf("page after %.10q: %d bytes, %v", after, len(body), err)
		}
		sizes = append(sizes, len(vols))
		paged = append(paged, vols...)
		if next == "" {
			break
		}
		if next != vols[len(vols)-1].Name {
			t.Fatalf("Next %.10q is not the page's last name", next)
		}
		after = next
	}
	if full := blockproto.MaxVolumes; !slices.Equal(sizes, []int{full, full, n + 1 - 2*full}) {
		t.Errorf("page sizes %v, want two of %d and one of %d", sizes, full, n+1-2*full)
	}
	if !slices.Equal(paged, got) {
		t.Error("paging by hand listed differently from Volumes")
	}

	// A cursor that names no volume, and one past the end.
	mid := got[5000].Name
	vols, next, err := c.VolumesPage(ctx, mid[:len(mid)-1])
	if err != nil || len(vols) != blockproto.MaxVolumes || vols[0].Name != mid || next == "" {
		t.Fatalf("VolumesPage(between names) = %d volumes from %.10q, next %.10q, %v", len(vols), vols[0].Name, next, err)
	}
	last := got[len(got)-1].Name
	if vols, next, err := c.VolumesPage(ctx, last); err != nil || len(vols) != 0 || next != "" {
		t.Fatalf("VolumesPage(last name) = %d volumes, next %q, %v; want none", len(vols), next, err)
	}
	// A cursor too long to send is refused without ending the session.
	if _, _, err := c.VolumesPage(ctx, last+"x"); err == nil {
		t.Fatal("VolumesPage with a 129-byte cursor succeeded")
	}

	// The session is still usable: stat, read, list again.
	st, err := c.Stat(ctx, "real")
	if err != nil || st.Size != uint64(len(data)) {
		t.Fatalf("Stat after listing: %+v, %v", st, err)
	}
	buf, mem := c.alloc(t, int64(len(data)))
	if _, err := c.Read(ctx, "real", []engine.Range{{Offset: 0, Length: int64(len(data))}}, buf); err != nil {
		t.Fatalf("Read after listing: %v", err)
	}
	if !bytes.Equal(mem, data) {
		t.Fatal("read after listing returned other bytes")
	}
	if err := c.Err(); err != nil {
		t.Fatalf("session ended: %v", err)
	}

	// Listings on several sessions at once, while volumes are added: every
	// listing is in order without repeats, and holds every volume that
	// existed throughout.
	var wg sync.WaitGroup
	clients := []*client{c, e.client(nil), e.client(nil)}
	errs := make(chan error, len(clients))
	for _, cl := range clients {
		wg.Go(func() {
			got, err := cl.Volumes(ctx)
			if err != nil {
				errs <- err
				return
			}
			seen := 0
			for i, st := range got {
				if i > 0 && st.Name <= got[i-1].Name {
					errs <- fmt.Errorf("entry %d %.10q does not sort after %.10q", i, st.Name, got[i-1].Name)
					return
				}
				if _, ok := want[st.Name]; ok {
					seen++
				}
			}
			if seen != len(want) {
				errs <- fmt.Errorf("listing holds %d of the %d volumes", seen, len(want))
			}
		})
	}
	more := make([]string, 50)
	for i := range more {
		more[i] = fmt.Sprintf("late%03d", i)
	}
	register(t, e.store, more)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// plainVolumes hides every method of its Volumes but the interface's, so the
// server cannot list from a key and pages the whole List.
type plainVolumes struct{ engine.Volumes }

// listerVolumes lists from a key itself.
type listerVolumes struct {
	engine.Volumes
	cat   *catalog.Catalog
	calls *int64
	mu    *sync.Mutex
}

func (l listerVolumes) ListAfter(after string, limit int) ([]*catalog.Volume, error) {
	l.mu.Lock()
	*l.calls++
	l.mu.Unlock()
	return l.cat.ListAfter(after, limit)
}

// TestListSources pages a listing of more than one page from each kind of
// volume source the server accepts.
func TestListSources(t *testing.T) {
	const n = blockproto.MaxVolumes + 7
	var calls int64
	var mu sync.Mutex
	for _, tt := range []struct {
		name string
		wrap func(store *catalog.Store) engine.Volumes
	}{
		{"store", nil},
		{"list-only", func(s *catalog.Store) engine.Volumes { return plainVolumes{s} }},
		{"lister", func(s *catalog.Store) engine.Volumes {
			return listerVolumes{Volumes: s, cat: s.Catalog(), calls: &calls, mu: &mu}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOpts{cfg: func(cfg *engine.ServerConfig) {
				if tt.wrap != nil {
					cfg.Volumes = tt.wrap(cfg.Volumes.(*catalog.Store))
				}
			}})
			// Short names, in an order unlike the sorted one.
			names := make([]string, n)
			for i, j := range mrand.Perm(n) {
				names[i] = fmt.Sprintf("v%d", j)
			}
			want := register(t, e.store, names)
			c := e.client(nil)
			got, err := c.Volumes(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			checkListing(t, got, want)
			vols, next, err := c.VolumesPage(context.Background(), "")
			if err != nil || len(vols) != blockproto.MaxVolumes || next != vols[len(vols)-1].Name {
				t.Fatalf("first page: %d volumes, next %q, %v", len(vols), next, err)
			}
		})
	}
	if calls != 3 {
		t.Errorf("the lister source was asked %d times, want 3 (two pages, then one)", calls)
	}
}

// TestListEmpty lists a server without volumes: one empty last page.
func TestListEmpty(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.client(nil)
	vols, next, err := c.VolumesPage(context.Background(), "")
	if err != nil || len(vols) != 0 || next != "" {
		t.Fatalf("VolumesPage = %v, %q, %v; want an empty last page", vols, next, err)
	}
	if vols, err := c.Volumes(context.Background()); err != nil || len(vols) != 0 {
		t.Fatalf("Volumes = %v, %v", vols, err)
	}
}
