package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/blockxfer/blockxfer/transport"
)

// State is where a request stands.
type State int

// Request states. Every request ends in one of the terminal states.
const (
	StatePending State = iota
	StateDone
	StateFailed
	StateCancelled
	StateTimedOut
)

var stateNames = [...]string{"pending", "done", "failed", "cancelled", "timed-out"}

// String returns the state's name, as shown in JSON results and metrics.
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// MarshalText makes a State print as its name in JSON.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// ExtentTiming records one extent of a read.
type ExtentTiming struct {
	VolumeOffset int64         `json:"volume_offset"`
	Length       int64         `json:"length"`
	DataConn     int           `json:"data_conn"`
	Latency      time.Duration `json:"latency_ns"` // announcement to last byte placed
	// Verified: the extent's bytes were checked against its CRC-32C.
	Verified bool `json:"verified"`
	// CRC32C is the CRC the server announced for the extent: the stored
	// CRC of the bytes as they were written.
	CRC32C uint32 `json:"crc32c"`
}

// Result is the outcome of one read request.
type Result struct {
	Volume         string         `json:"volume"`
	Offset         int64          `json:"offset"`
	Length         int64          `json:"length"`
	Bytes          int64          `json:"bytes"` // payload placed in the destination
	State          State          `json:"state"`
	Err            error          `json:"-"`
	Error          string         `json:"error,omitempty"`
	Transport      string         `json:"transport"` // how the client received
	FallbackReason string         `json:"fallback_reason,omitempty"`
	ServerSend     string         `json:"server_transport"` // how the server sent
	Start          time.Time      `json:"start"`
	End            time.Time      `json:"end"`
	Extents        []ExtentTiming `json:"extents,omitempty"`
	// VerifiedExtents and UnverifiedExtents count the extents whose bytes
	// were, and were not, checked against their CRC-32C (see VerifyMode).
	VerifiedExtents   int `json:"verified_extents"`
	UnverifiedExtents int `json:"unverified_extents"`
	// Reconnects counts the sessions a Client re-dialled to finish the read.
	Reconnects int `json:"reconnects,omitempty"`
	// LinearBytes counts the payload bytes of the read that arrived in
	// host memory instead of device memory and were copied into the
	// destination: under devmem, bytes the NIC did not header-split
	// (SCM_DEVMEM_LINEAR frags, and packets it returned whole as plain
	// bytes). LinearFrags counts the copies they took. Both are 0 on the
	// TCP path, whose bytes all pass through host memory by design; a
	// devmem read with LinearBytes equal to Bytes had its flow on no bound
	// queue (docs/devmem.md).
	LinearBytes int64 `json:"linear_bytes"`
	LinearFrags int64 `json:"linear_frags"`
}

// LinearCounter is implemented by a transport.Receiver whose payload can
// land in host memory and be copied to the destination instead of being
// placed from device memory (transport/devmem's Receiver). LinearPlaced
// returns the bytes so placed and the copies they took, both only growing;
// the session reads them around each Receive and adds the difference to the
// request's Result.LinearBytes and LinearFrags.
type LinearCounter interface {
	LinearPlaced() (bytes, frags int64)
}

// receiveCounted receives n bytes of dc's stream into the request's
// destination at off, counting on its result the bytes that the receiver
// placed from host memory (LinearCounter).
func (r *request) receiveCounted(ctx context.Context, recv transport.Receiver, off, n int64) error {
	lc, ok := recv.(LinearCounter)
	if !ok {
		return recv.Receive(ctx, r.dst, off, n)
	}
	b0, f0 := lc.LinearPlaced()
	err := recv.Receive(ctx, r.dst, off, n)
	if b1, f1 := lc.LinearPlaced(); b1 != b0 || f1 != f0 {
		r.mu.Lock()
		r.res.LinearBytes += b1 - b0
		r.res.LinearFrags += f1 - f0
		r.mu.Unlock()
	}
	return err
}

// Duration is how long the request took.
func (r *Result) Duration() time.Duration { return r.End.Sub(r.Start) }

// Engine errors. Errors returned by the engine wrap one of these or a
// *blockproto.Error carrying the server's code and message.
var (
	// ErrSessionClosed: the session ended (closed locally, or its
	// connection to the server was lost) before the request finished.
	ErrSessionClosed = errors.New("session closed")
	// ErrChecksum: an extent's bytes do not match its CRC-32C, as the
	// client found or the server did (a corrupt error).
	ErrChecksum = errors.New("checksum mismatch")
	// ErrAuth: the server or the client failed authentication.
	ErrAuth = errors.New("authentication failed")
	// ErrDraining: the server is shutting down and takes no new reads.
	ErrDraining = errors.New("server is shutting down")
)
