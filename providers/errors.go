package providers

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/blockxfer/blockxfer/internal/syserr"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/providers/providerpb"
)

// Errors of the plugin machinery. The engine's own sentinels
// (memory.ErrNoDmabuf, memory.ErrUnknownBuffer, memory.ErrOutOfBounds) cross
// the plugin boundary intact: errors.Is works on what a Plugin returns.
var (
	// ErrPluginExited: the plugin process is gone (crashed, was killed or
	// exited). Errors wrapping it name the plugin, its pid and exit status.
	ErrPluginExited = errors.New("provider plugin exited")
	// ErrUnusable: the provider cannot work on this machine (no device, no
	// driver, kernel module not loaded); the error says why and how to fix it.
	ErrUnusable = errors.New("provider unusable on this machine")
	// ErrClosed: the Plugin (or GRPCClient) was closed.
	ErrClosed = errors.New("provider plugin closed")
	// ErrNotSupported: provider plugins need Linux (memfd, SCM_RIGHTS,
	// Pdeathsig). It wraps syserr.ErrNotSupported, so
	// errors.Is(err, devmem.ErrNotSupported) holds for it too.
	ErrNotSupported = syserr.NotOnThisOS("provider plugins")
	// ErrProtocol: the plugin broke the plugin protocol (e.g. said it sent a
	// dmabuf fd and did not).
	ErrProtocol = errors.New("provider plugin protocol error")
)

// RemoteError is an error a plugin returned for a call. It wraps the engine
// or providers sentinel the plugin's error wrapped, if any.
type RemoteError struct {
	// Plugin is the provider's name.
	Plugin string
	// Op is the operation: "alloc", "free", "copy-in", "gather", ...
	Op string
	// Code is the gRPC status code.
	Code codes.Code
	// Message is the plugin's error text.
	Message string
	// Err is the sentinel (memory.ErrUnknownBuffer, ErrUnusable, ...) or nil.
	Err error
}

// Error formats the error as "providers: <plugin>: <op>: <message>".
func (e *RemoteError) Error() string {
	return fmt.Sprintf("providers: %s: %s: %s", e.Plugin, e.Op, e.Message)
}

// Unwrap returns the sentinel, or nil.
func (e *RemoteError) Unwrap() error { return e.Err }

// toStatus converts a provider error into a gRPC status error whose details
// name the sentinel it wraps.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var (
		code = codes.Unknown
		kind = providerpb.ErrorDetail_KIND_UNSPECIFIED
	)
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, memory.ErrUnknownBuffer):
		code, kind = codes.NotFound, providerpb.ErrorDetail_KIND_UNKNOWN_BUFFER
	case errors.Is(err, memory.ErrOutOfBounds):
		code, kind = codes.OutOfRange, providerpb.ErrorDetail_KIND_OUT_OF_BOUNDS
	case errors.Is(err, memory.ErrNoDmabuf):
		code, kind = codes.FailedPrecondition, providerpb.ErrorDetail_KIND_NO_DMABUF
	case errors.Is(err, ErrUnusable):
		code, kind = codes.FailedPrecondition, providerpb.ErrorDetail_KIND_UNUSABLE
	case errors.Is(err, memory.ErrImportNotSupported):
		code, kind = codes.Unimplemented, providerpb.ErrorDetail_KIND_IMPORT_NOT_SUPPORTED
	}
	st := status.New(code, err.Error())
	if kind != providerpb.ErrorDetail_KIND_UNSPECIFIED {
		if withDetail, derr := st.WithDetails(&providerpb.ErrorDetail{Kind: kind}); derr == nil {
			st = withDetail
		}
	}
	return st.Err()
}

// fromStatus converts a gRPC error from a plugin into a *RemoteError wrapping
// the sentinel its details (or, for plugins not written with this package,
// its code) name.
func fromStatus(plugin, op string, err error) *RemoteError {
	st := status.Convert(err)
	re := &RemoteError{Plugin: plugin, Op: op, Code: st.Code(), Message: st.Message()}
	for _, d := range st.Details() {
		if ed, ok := d.(*providerpb.ErrorDetail); ok {
			re.Err = sentinelOf(ed.GetKind())
		}
	}
	if re.Err == nil {
		switch st.Code() {
		case codes.NotFound:
			re.Err = memory.ErrUnknownBuffer
		case codes.OutOfRange:
			re.Err = memory.ErrOutOfBounds
		}
	}
	return re
}

// sentinelOf maps an ErrorDetail kind to its sentinel.
func sentinelOf(k providerpb.ErrorDetail_Kind) error {
	switch k {
	case providerpb.ErrorDetail_KIND_NO_DMABUF:
		return memory.ErrNoDmabuf
	case providerpb.ErrorDetail_KIND_UNKNOWN_BUFFER:
		return memory.ErrUnknownBuffer
	case providerpb.ErrorDetail_KIND_OUT_OF_BOUNDS:
		return memory.ErrOutOfBounds
	case providerpb.ErrorDetail_KIND_UNUSABLE:
		return ErrUnusable
	case providerpb.ErrorDetail_KIND_IMPORT_NOT_SUPPORTED:
		return memory.ErrImportNotSupported
	}
	return nil
}
