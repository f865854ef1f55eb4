package agent

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/blockxfer/blockxfer/providers/memory"
)

// Version is the local protocol version this agent speaks.
const Version = 1

// Limits of the local protocol (docs/agent-protocol.md section 2).
const (
	// MaxMessage is the largest message, either direction, in bytes.
	MaxMessage = 64 << 10
	// MaxReadsPerSubmit is the most reads one submit carries.
	MaxReadsPerSubmit = 256
	// MaxTag is the longest tag, in bytes.
	MaxTag = 256
	// MaxName is the longest server address or volume name, in bytes.
	MaxName = 256
	// MaxWait is the longest a wait blocks, in milliseconds.
	MaxWait = 60_000
	// MaxCompletionsPerReply is the most completions one wait answers.
	MaxCompletionsPerReply = 64
	// MaxDevice is the highest GPU ordinal a register may name.
	MaxDevice = 1023
	// IPCHandleSize is the size of a CUDA IPC handle (CUipcMemHandle), in
	// bytes; it travels as twice as many hex digits.
	IPCHandleSize = 64
)

// Ops a client sends.
const (
	OpHello      = "hello"
	OpStat       = "stat"
	OpRegister   = "register"
	OpUnregister = "unregister"
	OpSubmit     = "submit"
	OpWait       = "wait"
	OpCancel     = "cancel"
)

// Error codes an agent answers with, besides the engine's (the wire
// protocol's code names such as not-found, out-of-range, corrupt, and the
// engine-side ones in codeOf).
const (
	CodeBadMessage    = "bad-message"    // not a valid request: the message says why
	CodeTooLarge      = "too-large"      // a message over MaxMessage bytes
	CodeUnexpectedFD  = "unexpected-fd"  // fds passed with a request that takes none, or the wrong number
	CodeUnknownHandle = "unknown-handle" // no such registration on this connection
	CodeUnknownRead   = "unknown-read"   // no such read id on this connection
	CodeVersion       = "version"        // protocol version not spoken
	CodeNotSupported  = "not-supported"  // a memory kind the agent cannot import
	CodeLimit         = "limit"          // a per-connection limit reached
	CodePermission    = "permission"     // the peer's uid is not allowed
	CodeImport        = "import"         // the memory could not be imported (the message says why)
	CodeDevice        = "device"         // device memory cannot be served on that device (the message says why)
)

// ReadSpec is one read of a submit.
type ReadSpec struct {
	// Striped: Volume is a striped volume of the agent's cluster catalog,
	// read from the servers its manifest names; Server is empty.
	Striped   bool   `json:"striped"`
	Server    string `json:"server"`
	Volume    string `json:"volume"`
	Offset    int64  `json:"offset"`
	Length    int64  `json:"length"`
	Handle    uint64 `json:"handle"`
	DstOffset int64  `json:"dst_offset"`
	Tag       string `json:"tag"`
	// TimeoutMS bounds the read, reconnects included (0: no limit).
	TimeoutMS int64 `json:"timeout_ms"`
}

// Request is a decoded client message. Which fields apply depends on Op
// (docs/agent-protocol.md section 4).
type Request struct {
	Op  string `json:"op"`
	Seq uint64 `json:"seq"`

	Version int    `json:"version"` // hello
	Client  string `json:"client"`  // hello

	Server  string `json:"server"`  // stat
	Volume  string `json:"volume"`  // stat
	Striped bool   `json:"striped"` // stat: Volume is a striped volume; no Server

	Kind   string `json:"kind"`   // register
	Offset int64  `json:"offset"` // register
	Size   int64  `json:"size"`   // register
	// Device is the GPU ordinal of a cuda-ipc or cuda-vmm-fd register
	// (required for those kinds, absent for the others).
	Device *int `json:"device"`
	// IPCHandle is the CUipcMemHandle of a cuda-ipc register, as hex.
	IPCHandle string `json:"ipc_handle"`

	Handle uint64 `json:"handle"` // unregister

	Reads []ReadSpec `json:"reads"` // submit

	IDs       []uint64 `json:"ids"`        // wait, cancel
	TimeoutMS int64    `json:"timeout_ms"` // wait
	Max       int      `json:"max"`        // wait
}

// ProtoError is a refusal of a request: a code name and a message.
type ProtoError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *ProtoError) Error() string { return e.Code + ": " + e.Message }

func badMessage(format string, args ...any) *ProtoError {
	return &ProtoError{Code: CodeBadMessage, Message: fmt.Sprintf(format, args...)}
}

// Decode parses one client message of which fds file descriptors arrived
// with it, and checks it against the protocol: size, JSON shape (unknown
// fields are refused), the op and the fields it needs, every limit, and the
// number of fds (one with register, except none with kind cuda-ipc; none
// with the other ops). It returns the request
// and, on refusal, a *ProtoError. The Seq of a request refused after its
// JSON was parsed is kept, so the error can answer it.
func Decode(msg []byte, fds int) (*Request, error) {
	if len(msg) > MaxMessage {
		return nil, &ProtoError{Code: CodeTooLarge, Message: fmt.Sprintf("message of %d bytes, at most %d", len(msg), MaxMessage)}
	}
	var q Request
	dec := json.NewDecoder(bytes.NewReader(msg))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		return nil, badMessage("not a JSON request object: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &q, badMessage("trailing data after the JSON object")
	}
	wantFDs := 0
	switch q.Op {
	case OpHello:
		if q.Version <= 0 {
			return &q, badMessage("hello: version must be positive")
		}
		if len(q.Client) > MaxName {
			return &q, badMessage("hello: client name longer than %d bytes", MaxName)
		}
	case OpStat:
		if q.Striped && q.Server != "" {
			return &q, badMessage("stat: a striped volume names no server (its manifest does)")
		}
		if err := checkName("stat: server", q.Server); err != nil && !q.Striped {
			return &q, err
		}
		if err := checkName("stat: volume", q.Volume); err != nil {
			return &q, err
		}
	case OpRegister:
		n, err := checkRegister(&q)
		if err != nil {
			return &q, err
		}
		wantFDs = n
	case OpUnregister:
		if q.Handle == 0 {
			return &q, badMessage("unregister: no handle")
		}
	case OpSubmit:
		if len(q.Reads) == 0 || len(q.Reads) > MaxReadsPerSubmit {
			return &q, badMessage("submit: %d reads, want 1 to %d", len(q.Reads), MaxReadsPerSubmit)
		}
		for i, r := range q.Reads {
			if err := checkRead(r); err != nil {
				err.Message = fmt.Sprintf("submit: read %d: %s", i, err.Message)
				return &q, err
			}
		}
	case OpWait:
		if len(q.IDs) > MaxCompletionsPerReply {
			return &q, badMessage("wait: %d ids, at most %d", len(q.IDs), MaxCompletionsPerReply)
		}
		if q.TimeoutMS < 0 || q.TimeoutMS > MaxWait {
			return &q, badMessage("wait: timeout_ms %d, want 0 to %d", q.TimeoutMS, MaxWait)
		}
		if q.Max < 0 || q.Max > MaxCompletionsPerReply {
			return &q, badMessage("wait: max %d, want 0 (as many as fit) to %d", q.Max, MaxCompletionsPerReply)
		}
	case OpCancel:
		if len(q.IDs) == 0 {
			return &q, badMessage("cancel: no ids")
		}
	case "":
		return &q, badMessage("no op")
	default:
		return &q, badMessage("unknown op %.64q (want hello, stat, register, unregister, submit, wait or cancel)", q.Op)
	}
	if fds != wantFDs {
		return &q, &ProtoError{Code: CodeUnexpectedFD, Message: fmt.Sprintf("%s carries %d fds, want %d (the fds were closed)", q.Op, fds, wantFDs)}
	}
	return &q, nil
}

// checkRegister checks a register's fields for its kind and returns how
// many fds it carries: none with cuda-ipc (the handle travels in the
// message), one with the others.
func checkRegister(q *Request) (fds int, err *ProtoError) {
	if q.Size <= 0 || q.Offset < 0 || q.Offset > (1<<62)-q.Size {
		return 0, badMessage("register: size %d at offset %d: size must be positive, offset not negative", q.Size, q.Offset)
	}
	device := memory.ImportKind(q.Kind) == memory.ImportCUDAIPC || memory.ImportKind(q.Kind) == memory.ImportCUDAVMMFD
	switch memory.ImportKind(q.Kind) {
	case memory.ImportFD, memory.ImportShm, memory.ImportCUDAIPC, memory.ImportCUDAVMMFD, memory.ImportDmabuf:
	case "":
		return 0, badMessage("register: no kind")
	default:
		return 0, badMessage("register: unknown kind %.64q (want fd, shm, cuda-ipc, cuda-vmm-fd or dmabuf)", q.Kind)
	}
	switch {
	case device && q.Device == nil:
		return 0, badMessage("register %s: no device (the GPU ordinal the memory is on)", q.Kind)
	case device && (*q.Device < 0 || *q.Device > MaxDevice):
		return 0, badMessage("register %s: device %d, want 0 to %d", q.Kind, *q.Device, MaxDevice)
	case !device && q.Device != nil:
		return 0, badMessage("register %s: device applies to cuda-ipc and cuda-vmm-fd only", q.Kind)
	}
	if memory.ImportKind(q.Kind) != memory.ImportCUDAIPC {
		if q.IPCHandle != "" {
			return 0, badMessage("register %s: ipc_handle applies to cuda-ipc only", q.Kind)
		}
		return 1, nil
	}
	if _, err := ipcHandle(q.IPCHandle); err != nil {
		return 0, badMessage("register cuda-ipc: ipc_handle: %v", err)
	}
	return 0, nil
}

// ipcHandle decodes a cuda-ipc register's ipc_handle: IPCHandleSize bytes
// as hex digits.
func ipcHandle(s string) ([]byte, error) {
	if len(s) != 2*IPCHandleSize {
		return nil, fmt.Errorf("%d characters, want %d hex digits (the %d-byte CUipcMemHandle)", len(s), 2*IPCHandleSize, IPCHandleSize)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not hex: %v", err)
	}
	return b, nil
}

func checkName(what, s string) *ProtoError {
	if s == "" {
		return badMessage("%s is empty", what)
	}
	if len(s) > MaxName {
		return badMessage("%s longer than %d bytes", what, MaxName)
	}
	return nil
}

func checkRead(r ReadSpec) *ProtoError {
	if r.Striped && r.Server != "" {
		return badMessage("a striped read names no server (its manifest does)")
	}
	if !r.Striped {
		if err := checkName("server", r.Server); err != nil {
			return err
		}
	}
	if err := checkName("volume", r.Volume); err != nil {
		return err
	}
	switch {
	case r.Handle == 0:
		return badMessage("no handle")
	case r.Length <= 0 || r.Offset < 0 || r.DstOffset < 0 || r.Offset > (1<<62)-r.Length || r.DstOffset > (1<<62)-r.Length:
		return badMessage("offset %d, length %d, dst_offset %d: length must be positive, offsets not negative", r.Offset, r.Length, r.DstOffset)
	case len(r.Tag) > MaxTag:
		return badMessage("tag longer than %d bytes", MaxTag)
	case r.TimeoutMS < 0:
		return badMessage("timeout_ms %d is negative", r.TimeoutMS)
	}
	return nil
}
