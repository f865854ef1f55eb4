package engine

import (
	"os"
	"sync"

	"github.com/blockxfer/blockxfer/catalog"
)

// volumeHandles shares open backing files among a server's reads: the reads
// open on one generation of a volume, however many and however long they
// wait for in-flight budget, hold one file between them. A read parked
// behind back-pressure so costs no file descriptor of its own, and a
// replaced volume's new generation gets a file of its own while reads of the
// old one finish on theirs.
type volumeHandles struct {
	mu   sync.Mutex
	open map[string]*volumeHandle // the newest generation's handle
}

// volumeHandle is one open generation of a volume.
type volumeHandle struct {
	v    *catalog.Volume
	f    *os.File
	refs int // guarded by volumeHandles.mu
}

// acquire opens name through src, or shares the handle already open on the
// same generation. Release it with release.
func (h *volumeHandles) acquire(src Volumes, name string) (*volumeHandle, error) {
	f, v, err := src.Open(name)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if vh := h.open[name]; vh != nil && vh.v.Generation == v.Generation {
		vh.refs++
		f.Close()
		return vh, nil
	}
	if h.open == nil {
		h.open = map[string]*volumeHandle{}
	}
	// An older generation's handle stays with its reads until they end.
	vh := &volumeHandle{v: v, f: f, refs: 1}
	h.open[name] = vh
	return vh, nil
}

// release ends one read's use of vh, closing its file after the last.
func (h *volumeHandles) release(vh *volumeHandle) {
	h.mu.Lock()
	vh.refs--
	last := vh.refs == 0
	if last && h.open[vh.v.Name] == vh {
		delete(h.open, vh.v.Name)
	}
	h.mu.Unlock()
	if last {
		vh.f.Close()
	}
}
