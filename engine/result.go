package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
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
	DataConn     int           `json:"data_conn"`  // -1: the bytes came in the Extent, on the control connection
	Latency      time.Duration `json:"latency_ns"` // announcement to last byte placed
	// Verified: the extent's bytes were checked against its CRC-32C.
	Verified bool `json:"verified"`
	// CRC32C is the CRC the server announced for the extent: the stored
	// CRC of the bytes as they were written.
	CRC32C uint32 `json:"crc32c"`
	// Transport received the extent: the transport of its data
	// connection ("devmem", "devmem-emulated" or "tcp"). Set on
	// Result.Extents; empty in the ExtentTiming handed to OnExtent.
	Transport string `json:"transport,omitempty"`
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
	Transport      string         `json:"transport"` // how the client received: see settlePath
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
	// SmallRead is the server's devmem threshold when FallbackReason is
	// small-read: reads shorter than it go over plain TCP.
	SmallRead int64 `json:"small_read,omitempty"`
}

// Codes that start a Result.FallbackReason when a session with devmem data
// connections received a read over its plain ones (docs/devmem.md,
// "Per-read path"). The code is followed by ": " and the detail.
const (
	// ReasonSmallRead: the read is shorter than the server's threshold
	// (Result.SmallRead); a small copy is cheaper than a devmem receive.
	ReasonSmallRead = "small-read"
	// ReasonPlainRequested: the request asked for plain connections
	// (Request.Plain).
	ReasonPlainRequested = "plain-requested"
	// ReasonServerSpreads: the server does not choose per read (a blockd
	// older than data connection kinds): it spread the read over every
	// data connection.
	ReasonServerSpreads = "server-spreads"
	// ReasonNoDevmemConn: the server had no devmem connection to send on.
	ReasonNoDevmemConn = "no-devmem-conn"
)

// settlePath sets the result's Transport and FallbackReason from the data
// connections that carried its extents. Extents on Config.Transport's
// connections only (or none) keep the session's transport and reason; on
// PlainTransport's only, the result names that transport and why the read
// went there; on both, Transport joins the two names with "+"
// ("devmem-emulated+tcp") and the reason is the plain part's. It also
// counts the read on Config.Metrics and logs its path at debug. r.mu must
// be held.
func (r *request) settlePath() {
	s := r.s
	if s == nil || r.id == 0 {
		return // never sent
	}
	if r.plainBytes > 0 {
		plain := s.cfg.PlainTransport.Name()
		r.res.Transport = plain
		if r.mainBytes > 0 {
			r.res.Transport = s.cfg.Transport.Name() + "+" + plain
		}
		switch {
		case r.plain:
			r.res.FallbackReason = ReasonPlainRequested + ": the request asked for plain data connections"
		case !s.kinds:
			r.res.FallbackReason = ReasonServerSpreads + ": the server does not choose a path per read; it spread the extents over every data connection"
		case s.smallRead > 0 && uint64(r.length) < s.smallRead:
			r.res.FallbackReason = fmt.Sprintf("%s: %d bytes, below the server's devmem threshold of %d bytes", ReasonSmallRead, r.length, s.smallRead)
			r.res.SmallRead = int64(s.smallRead)
		default:
			r.res.FallbackReason = ReasonNoDevmemConn + ": the server had no devmem data connection for it"
		}
	}
	s.cfg.Metrics.read(r.res.Transport, reasonCode(r.res.FallbackReason))
	if s.cfg.Logger.Enabled(context.Background(), slog.LevelDebug) { // its arguments cost a small read allocations
		s.cfg.Logger.Debug("read path", "id", r.id, "volume", r.res.Volume, "offset", r.offset, "length", r.length,
			"transport", r.res.Transport, "reason", r.res.FallbackReason, "state", r.state)
	}
}

// addPath folds the path of r, one piece of a read that a Client fetched
// in several sessions, into res, the whole read's result, before r's
// extents are added to it: Transport names each transport that carried
// an extent (devmem first, joined by "+"), the fallback reason is the
// latest such piece's that has one. Until an extent lands, res has the
// path of the latest piece.
func (res *Result) addPath(r *Result) {
	res.ServerSend = r.ServerSend
	if len(r.Extents) == 0 {
		if len(res.Extents) == 0 { // nothing landed yet: the session's path
			res.Transport, res.FallbackReason, res.SmallRead = r.Transport, r.FallbackReason, r.SmallRead
		}
		return
	}
	var names []string
	if len(res.Extents) > 0 {
		names = strings.Split(res.Transport, "+")
	}
	for _, n := range strings.Split(r.Transport, "+") {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if i := slices.Index(names, transport.TCP); i >= 0 {
		names = append(slices.Delete(names, i, i+1), transport.TCP)
	}
	res.Transport = strings.Join(names, "+")
	if r.FallbackReason != "" {
		res.FallbackReason = r.FallbackReason
	}
	res.SmallRead = max(res.SmallRead, r.SmallRead)
}

// reasonCode is the code a fallback reason starts with ("" for none).
func reasonCode(reason string) string {
	code, _, _ := strings.Cut(reason, ":")
	return code
}

// noPlainPath explains why a session cannot honour Request.Plain.
func (s *Session) noPlainPath() error {
	if !s.hasPlain {
		return fmt.Errorf("%w: the session has no plain data connection (Config.PlainTransport, PlainConns)", ErrNoPlainPath)
	}
	return fmt.Errorf("%w: the server does not choose a path per read", ErrNoPlainPath)
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
	return r.counted(recv, func() error { return recv.Receive(ctx, r.dst, off, n) })
}

// counted runs receive, a receive call of recv, counting on the request's
// result the bytes recv placed from host memory meanwhile (LinearCounter).
func (r *request) counted(recv transport.Receiver, receive func() error) error {
	lc, ok := recv.(LinearCounter)
	if !ok {
		return receive()
	}
	b0, f0 := lc.LinearPlaced()
	err := receive()
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
	// ErrNoPlainPath: a read asked for plain data connections
	// (Request.Plain) that its devmem session cannot give it.
	ErrNoPlainPath = errors.New("no plain path for the read")
)
