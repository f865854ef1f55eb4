package engine

import (
	"os"
	"sync"
	"time"

	"github.com/blockxfer/blockxfer/catalog"
)

// volumeHandles shares open backing files among a server's reads: the reads
// open on one generation of a volume, however many and however long they
// wait for in-flight budget, hold one file between them. A read parked
// behind back-pressure so costs no file descriptor of its own, and a
// replaced volume's new generation gets a file of its own while reads of the
// old one finish on theirs.
//
// When the volume source counts its changes ([changeCounter]; *catalog.Store
// does), a handle also outlives its reads: it stays open, with its decoded
// record and block CRCs, for the next read of the volume, which then costs
// no catalog transaction, no open, fstat or close. Any change to the source
// (a replace, a remove, new block CRCs) invalidates every cached handle the
// next time a read is acquired or [volumeHandles.sweep] runs: idle ones are
// closed, busy ones close after their last read. A source without the
// counter is opened per read, as before, and its handles close after their
// last read. At most maxIdleHandles idle handles are kept, none idle for
// longer than handleIdle once another read comes by, and
// [volumeHandles.closeIdle] closes them all when the server closes.
type volumeHandles struct {
	mu    sync.Mutex
	open  map[string]*volumeHandle // the newest generation's handle
	epoch uint64                   // the source's Changes() the cached handles were opened under
	idle  int                      // handles in open with no reads
	swept time.Time                // when idle handles were last checked for age
}

// volumeHandle is one open generation of a volume.
type volumeHandle struct {
	v      *catalog.Volume
	f      *os.File
	refs   int       // guarded by volumeHandles.mu
	cached bool      // stays open without reads; guarded by volumeHandles.mu
	used   time.Time // when the last read released it; guarded by volumeHandles.mu

	blocksOnce sync.Once
	blocks     *catalog.Blocks // loaded by the first partial read, see blocksOf
}

// changeCounter is implemented by volume sources that count their changes
// (*catalog.Store does): what they returned stays current while Changes
// returns the same value.
type changeCounter interface {
	Changes() uint64
}

const (
	// maxIdleHandles bounds the volumes a server keeps open without reads.
	maxIdleHandles = 256
	// handleIdle is how long an idle handle is kept for the next read.
	handleIdle = time.Minute
)

// acquire returns the handle of name's current generation, from the cache
// or opened through src. Release it with release.
func (h *volumeHandles) acquire(src Volumes, name string) (*volumeHandle, error) {
	cc, counted := src.(changeCounter)
	var epoch uint64
	if counted {
		// Read the count before the source: a change committed after
		// this load makes the next acquire reopen.
		epoch = cc.Changes()
		h.mu.Lock()
		h.revalidateLocked(epoch)
		if vh := h.open[name]; vh != nil {
			if vh.refs == 0 {
				h.idle--
			}
			vh.refs++
			h.mu.Unlock()
			return vh, nil
		}
		h.mu.Unlock()
	}
	f, v, err := src.Open(name)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if vh := h.open[name]; vh != nil && vh.v.Generation == v.Generation {
		if vh.refs == 0 {
			h.idle--
		}
		vh.refs++
		f.Close()
		return vh, nil
	}
	if h.open == nil {
		h.open = map[string]*volumeHandle{}
	}
	// An older generation's handle stays with its reads until they end.
	if old := h.open[name]; old != nil {
		h.forgetLocked(old)
	}
	// Cache it only if nothing changed since the count was read; otherwise
	// the record may already be stale for the epoch now cached under.
	vh := &volumeHandle{v: v, f: f, refs: 1, cached: counted && epoch == h.epoch}
	h.open[name] = vh
	return vh, nil
}

// release ends one read's use of vh. The file is closed after its last
// read unless vh is cached for the next one.
func (h *volumeHandles) release(vh *volumeHandle) {
	h.mu.Lock()
	vh.refs--
	closeIt := false
	if vh.refs == 0 {
		switch {
		case h.open[vh.v.Name] != vh:
			closeIt = true // forgotten: replaced or invalidated
		case vh.cached:
			vh.used = time.Now()
			h.idle++
			h.trimLocked(vh.used)
		default:
			delete(h.open, vh.v.Name)
			closeIt = true
		}
	}
	h.mu.Unlock()
	if closeIt {
		vh.close()
	}
}

// revalidateLocked forgets every cached handle if the source changed since
// they were opened.
func (h *volumeHandles) revalidateLocked(epoch uint64) {
	if epoch == h.epoch {
		return
	}
	h.epoch = epoch
	for _, vh := range h.open {
		h.forgetLocked(vh)
	}
}

// forgetLocked takes vh out of the cache, closing it now if no read holds
// it (the last read's release closes it otherwise).
func (h *volumeHandles) forgetLocked(vh *volumeHandle) {
	delete(h.open, vh.v.Name)
	if vh.refs == 0 {
		h.idle--
		vh.close()
	}
}

// trimLocked closes idle handles beyond maxIdleHandles, and at most once a
// second those idle for longer than handleIdle.
func (h *volumeHandles) trimLocked(now time.Time) {
	if h.idle <= maxIdleHandles && now.Sub(h.swept) < time.Second {
		return
	}
	h.swept = now
	for _, vh := range h.open {
		if vh.refs == 0 && (h.idle > maxIdleHandles || now.Sub(vh.used) > handleIdle) {
			h.forgetLocked(vh)
		}
	}
}

// sweep forgets the cached handles if src changed since they were opened,
// so a replaced or removed volume's file is closed now rather than at the
// next read.
func (h *volumeHandles) sweep(src Volumes) {
	if cc, ok := src.(changeCounter); ok {
		h.mu.Lock()
		h.revalidateLocked(cc.Changes())
		h.mu.Unlock()
	}
}

// closeIdle closes every handle no read holds, and makes those still held
// close after their last read.
func (h *volumeHandles) closeIdle() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, vh := range h.open {
		h.forgetLocked(vh)
	}
}

// close closes vh's file; no read may hold it.
func (vh *volumeHandle) close() { vh.f.Close() }

// blocksOf returns the block CRCs of vh's generation, nil when there are
// none, asking s the first time.
func (vh *volumeHandle) blocksOf(s *Server) *catalog.Blocks {
	vh.blocksOnce.Do(func() { vh.blocks = s.blocksOf(vh.v) })
	return vh.blocks
}
