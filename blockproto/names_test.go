package blockproto

import (
	"errors"
	"fmt"
	"testing"
)

func TestTypeString(t *testing.T) {
	want := []string{"Type(0)", "Hello", "Challenge", "Auth", "Welcome", "DataAttached",
		"ListVolumes", "VolumeList", "StatVolume", "VolumeInfo", "Read", "Extent",
		"ReadDone", "Error", "Cancel", "Ping", "Pong", "Goodbye", "PutVolume", "PutAck",
		"PutData", "PutCommit", "PutAbort", "PutDone", "PutError", "Type(25)"}
	for i, w := range want {
		if got := Type(i).String(); got != w {
			t.Errorf("Type(%d).String() = %q, want %q", i, got, w)
		}
	}
	if got := Type(255).String(); got != "Type(255)" {
		t.Errorf("Type(255) = %q", got)
	}
	for _, s := range samples() {
		if got, want := s.msg.Type().String(), fmt.Sprintf("%T", s.msg)[len("*blockproto."):]; got != want {
			t.Errorf("%T: Type().String() = %q", s.msg, got)
		}
	}
}

func TestCodeString(t *testing.T) {
	want := map[Code]string{
		0: "code(0)", CodeInternal: "internal", CodeBadRequest: "bad-request",
		CodeAuth: "auth", CodeNotFound: "not-found", CodeOutOfRange: "out-of-range",
		CodeBusy: "busy", CodeTimedOut: "timed-out", CodeCancelled: "cancelled",
		CodeShuttingDown: "shutting-down", CodeIO: "io", CodeVersion: "version",
		CodeExists: "exists", CodeCorrupt: "corrupt", CodeReplaced: "replaced", 15: "code(15)", 65535: "code(65535)",
	}
	for c, w := range want {
		if got := c.String(); got != w {
			t.Errorf("Code(%d).String() = %q, want %q", uint16(c), got, w)
		}
	}
}

func TestErrorIsAnError(t *testing.T) {
	var err error = &Error{ID: 4, Code: CodeOutOfRange, Message: "offset 9 past end 8"}
	if got := err.Error(); got != "out-of-range: offset 9 past end 8" {
		t.Errorf("Error() = %q", got)
	}
	if got := (&Error{Code: CodeTimedOut}).Error(); got != "timed-out" {
		t.Errorf("Error() without message = %q", got)
	}
	wrapped := fmt.Errorf("fetch: %w", err)
	var we *Error
	if !errors.As(wrapped, &we) || we.Code != CodeOutOfRange || we.ID != 4 {
		t.Errorf("errors.As did not find the wire error in %v", wrapped)
	}
}

func TestKindString(t *testing.T) {
	for k, w := range map[Kind]string{KindControl: "control", KindData: "data", 0: "Kind(0)", 9: "Kind(9)"} {
		if got := k.String(); got != w {
			t.Errorf("Kind(%d) = %q, want %q", uint8(k), got, w)
		}
	}
}
