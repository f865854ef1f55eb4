package agent

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecode checks that Decode never panics, refuses with a *ProtoError,
// and accepts only requests within the protocol's limits.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"op":"hello","seq":1,"version":1,"client":"py"}`,
		`{"op":"stat","seq":2,"server":"h:7070","volume":"v"}`,
		`{"op":"register","seq":3,"kind":"fd","size":4096,"offset":0}`,
		`{"op":"unregister","seq":4,"handle":1}`,
		`{"op":"submit","seq":5,"reads":[{"server":"h","volume":"v","offset":0,"length":10,"handle":1,"dst_offset":0,"tag":"t","timeout_ms":0}]}`,
		`{"op":"wait","seq":6,"ids":[1,2],"timeout_ms":100,"max":2}`,
		`{"op":"cancel","seq":7,"ids":[1]}`,
		`{"op":"submit","reads":[{"length":-1}]}`,
		`{"op":"wait","timeout_ms":99999999}`,
		`[]`, `null`, `{"op":1}`, "\x00",
	} {
		f.Add([]byte(s), 0)
		f.Add([]byte(s), 1)
	}
	f.Fuzz(func(t *testing.T, msg []byte, fds int) {
		q, err := Decode(msg, fds)
		if err != nil {
			var pe *ProtoError
			if !errors.As(err, &pe) || pe.Code == "" || pe.Message == "" {
				t.Fatalf("Decode error %v is not a complete *ProtoError", err)
			}
			return
		}
		if len(msg) > MaxMessage {
			t.Fatalf("accepted a %d-byte message", len(msg))
		}
		if (q.Op == OpRegister) != (fds == 1) || (fds != 0 && fds != 1) {
			t.Fatalf("accepted %s with %d fds", q.Op, fds)
		}
		switch q.Op {
		case OpSubmit:
			if len(q.Reads) == 0 || len(q.Reads) > MaxReadsPerSubmit {
				t.Fatalf("accepted %d reads", len(q.Reads))
			}
			for _, r := range q.Reads {
				if r.Length <= 0 || r.Offset < 0 || r.DstOffset < 0 || r.Handle == 0 || len(r.Tag) > MaxTag ||
					r.Server == "" || r.Volume == "" || r.Offset+r.Length < 0 || r.DstOffset+r.Length < 0 {
					t.Fatalf("accepted read %+v", r)
				}
			}
		case OpRegister:
			if q.Size <= 0 || q.Offset < 0 || q.Offset+q.Size < 0 {
				t.Fatalf("accepted register %+v", q)
			}
		case OpWait:
			if q.TimeoutMS < 0 || q.TimeoutMS > MaxWait || q.Max < 0 || q.Max > MaxCompletionsPerReply {
				t.Fatalf("accepted wait %+v", q)
			}
		case OpHello, OpStat, OpUnregister, OpCancel:
		default:
			t.Fatalf("accepted op %q", q.Op)
		}
		// What was accepted re-encodes and decodes the same.
		b, err := json.Marshal(q)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(b, fds); err != nil && len(b) <= MaxMessage {
			t.Fatalf("re-encoded request refused: %v\n%s", err, b)
		}
	})
}
