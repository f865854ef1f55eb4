package blockproto

import "strconv"

var typeNames = [...]string{
	TypeHello:        "Hello",
	TypeChallenge:    "Challenge",
	TypeAuth:         "Auth",
	TypeWelcome:      "Welcome",
	TypeDataAttached: "DataAttached",
	TypeListVolumes:  "ListVolumes",
	TypeVolumeList:   "VolumeList",
	TypeStatVolume:   "StatVolume",
	TypeVolumeInfo:   "VolumeInfo",
	TypeRead:         "Read",
	TypeExtent:       "Extent",
	TypeReadDone:     "ReadDone",
	TypeError:        "Error",
	TypeCancel:       "Cancel",
	TypePing:         "Ping",
	TypePong:         "Pong",
	TypeGoodbye:      "Goodbye",
	TypePutVolume:    "PutVolume",
	TypePutAck:       "PutAck",
	TypePutData:      "PutData",
	TypePutCommit:    "PutCommit",
	TypePutAbort:     "PutAbort",
	TypePutDone:      "PutDone",
	TypePutError:     "PutError",
}

// String returns the message type's name, such as "Extent", or "Type(N)" for
// a number this version does not know.
func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return "Type(" + strconv.Itoa(int(t)) + ")"
}

var codeNames = [...]string{
	CodeInternal:     "internal",
	CodeBadRequest:   "bad-request",
	CodeAuth:         "auth",
	CodeNotFound:     "not-found",
	CodeOutOfRange:   "out-of-range",
	CodeBusy:         "busy",
	CodeTimedOut:     "timed-out",
	CodeCancelled:    "cancelled",
	CodeShuttingDown: "shutting-down",
	CodeIO:           "io",
	CodeVersion:      "version",
	CodeExists:       "exists",
	CodeCorrupt:      "corrupt",
	CodeReplaced:     "replaced",
}

// String returns the code's name, such as "not-found", or "code(N)" for a
// number this version does not know.
func (c Code) String() string {
	if int(c) < len(codeNames) && codeNames[c] != "" {
		return codeNames[c]
	}
	return "code(" + strconv.Itoa(int(c)) + ")"
}

// Error makes a wire Error a Go error: "<code>: <message>", such as
// "not-found: no volume \"scratch\"", or just "<code>" if Message is empty.
func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code.String()
	}
	return e.Code.String() + ": " + e.Message
}

// Error makes a PutError a Go error, printed like [Error.Error].
func (e *PutError) Error() string {
	return (&Error{ID: e.ID, Code: e.Code, Message: e.Message}).Error()
}

// Kind says which kind of connection a preamble opens.
type Kind uint8

// Connection kinds.
const (
	// KindControl opens a control connection ("BXC").
	KindControl Kind = 1
	// KindData opens a data connection ("BXD") and is followed by a token.
	KindData Kind = 2
)

// String returns "control", "data" or "Kind(N)".
func (k Kind) String() string {
	switch k {
	case KindControl:
		return "control"
	case KindData:
		return "data"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

var dataKindNames = [...]string{DataPlain: "plain", DataDevmem: "devmem", DataDevmemEmulated: "devmem-emulated"}

// String names the kind: "plain", "devmem", "devmem-emulated", or
// "kind(N)" for a byte no version defines.
func (k DataKind) String() string {
	if int(k) < len(dataKindNames) {
		return dataKindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}
