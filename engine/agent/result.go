package agent

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/ec"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// Completion is the outcome of one read as a wait reports it
// (docs/agent-protocol.md section 5). Keys follow docs/json.md.
type Completion struct {
	ID                uint64      `json:"id"`
	Tag               string      `json:"tag"`
	State             string      `json:"state"` // done, failed, cancelled or timed-out
	Server            string      `json:"server"`
	Volume            string      `json:"volume"`
	Offset            int64       `json:"offset_bytes"`
	Length            int64       `json:"length_bytes"`
	Handle            uint64      `json:"handle"`
	DstOffset         int64       `json:"dst_offset_bytes"`
	Bytes             int64       `json:"fetched_bytes"`
	Transport         *string     `json:"transport"` // null: no session was opened
	ServerTransport   *string     `json:"server_transport"`
	FallbackReason    *string     `json:"fallback_reason"`
	Verified          bool        `json:"verified"`
	VerifiedExtents   int         `json:"verified_extents"`
	UnverifiedExtents int         `json:"unverified_extents"`
	Extents           int         `json:"extents"`
	Reconnects        int         `json:"reconnects"`
	Striped           bool        `json:"striped"`
	Stripes           int64       `json:"stripes"`          // of a striped read: stripes read
	DegradedStripes   int         `json:"degraded_stripes"` // of a striped read: stripes reconstructed from parity
	Start             string      `json:"start"`            // RFC 3339, when the agent started the read
	QueuedSeconds     float64     `json:"queued_seconds"`
	Seconds           float64     `json:"seconds"`
	BytesPerSecond    float64     `json:"bytes_per_second"`
	MaxExtentLatency  float64     `json:"max_extent_latency_seconds"`
	Error             *ProtoError `json:"error"`
}

// complete fills c from the engine's results for the read's pieces and the
// error the read ended with.
func (c *Completion) complete(res []engine.Result, err error, submitted, start, end time.Time) {
	c.Start = start.UTC().Format(time.RFC3339Nano)
	c.QueuedSeconds = start.Sub(submitted).Seconds()
	c.Seconds = end.Sub(start).Seconds()
	for _, r := range res {
		c.Bytes += r.Bytes
		c.VerifiedExtents += r.VerifiedExtents
		c.UnverifiedExtents += r.UnverifiedExtents
		c.Extents += len(r.Extents)
		c.Reconnects = max(c.Reconnects, r.Reconnects)
		for _, e := range r.Extents {
			c.MaxExtentLatency = max(c.MaxExtentLatency, e.Latency.Seconds())
		}
		if r.Transport != "" {
			c.Transport = ptr(r.Transport)
		}
		if r.ServerSend != "" {
			c.ServerTransport = ptr(r.ServerSend)
		}
		if r.FallbackReason != "" {
			c.FallbackReason = ptr(r.FallbackReason)
		}
	}
	c.Verified = c.UnverifiedExtents == 0 && c.VerifiedExtents > 0
	if c.Seconds > 0 {
		c.BytesPerSecond = float64(c.Bytes) / c.Seconds
	}
	c.State = engine.StateDone.String()
	if err != nil {
		c.State = stateOf(err).String()
		c.Error = errorOf(err)
	}
}

// completeStriped fills c from the outcome of a striped read: res (nil
// if the read did not start), through path (the receive path of its
// servers, nil if none was chosen), checked if verify.
func (c *Completion) completeStriped(res *ec.ReadResult, path *Path, verify bool, err error, submitted, start, end time.Time) {
	c.complete(nil, err, submitted, start, end)
	c.Striped = true
	if res != nil {
		c.Stripes, c.DegradedStripes = res.Stripes, len(res.Degraded)
	}
	if path != nil {
		c.Transport = ptr(path.Transport.Name())
		if path.FallbackReason != "" {
			c.FallbackReason = ptr(path.FallbackReason)
		}
	}
	if err == nil {
		c.Bytes = c.Length
		c.Verified = verify
		if c.Seconds > 0 {
			c.BytesPerSecond = float64(c.Bytes) / c.Seconds
		}
	}
}

func ptr(s string) *string { return &s }

// stateOf is the terminal state of a read that ended with err.
func stateOf(err error) engine.State {
	switch {
	case errors.Is(err, context.Canceled):
		return engine.StateCancelled
	case errors.Is(err, context.DeadlineExceeded):
		return engine.StateTimedOut
	}
	return engine.StateFailed
}

// maxErrorMessage bounds an error message in a reply.
const maxErrorMessage = 2048

// errorOf names err with its code (codeOf) and message.
func errorOf(err error) *ProtoError {
	msg := err.Error()
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage] + "..."
	}
	return &ProtoError{Code: codeOf(err), Message: msg}
}

// codeOf names the engine error err: the wire code of a server's error
// (not-found, out-of-range, corrupt, ...), or one of cancelled, timed-out,
// corrupt (a checksum mismatch found here), auth, volume-replaced,
// unavailable (the server could not be reached or the session was lost
// and could not be resumed; of a striped read: too many shards could not
// be fetched), not-found (no such striped volume), not-supported (striped
// reads without a cluster catalog), out-of-range, internal.
func codeOf(err error) string {
	var pe *blockproto.Error
	var ne *net.OpError
	switch {
	case errors.Is(err, engine.ErrVolumeReplaced): // the server's replaced too
		return "volume-replaced"
	case errors.Is(err, ec.ErrNoManifest):
		return "not-found"
	case errors.Is(err, errVolumeRange):
		return "out-of-range"
	case errors.Is(err, ec.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, errNoCatalog):
		return CodeNotSupported
	case errors.As(err, &pe):
		return pe.Code.String()
	case errors.Is(err, errServerAddr):
		return CodeBadMessage
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timed-out"
	case errors.Is(err, engine.ErrChecksum):
		return "corrupt"
	case errors.Is(err, engine.ErrAuth):
		return "auth"
	case errors.Is(err, engine.ErrSessionClosed), errors.Is(err, engine.ErrDraining),
		errors.Is(err, engine.ErrNotBlockxfer), errors.As(err, &ne):
		return "unavailable"
	case errors.Is(err, memory.ErrOutOfBounds):
		return "out-of-range"
	}
	return "internal"
}
