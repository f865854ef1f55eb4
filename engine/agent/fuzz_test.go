package agent

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzDecode checks that Decode never panics, refuses with a *ProtoError,
// and accepts only requests within the protocol's limits.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"op":"hello","seq":1,"version":1,"client":"py"}`,
		`{"op":"stat","seq":2,"server":"h:7070","volume":"v"}`,
		`{"op":"register","seq":3,"kind":"fd","size":4096,"offset":0}`,
		`{"op":"register","seq":3,"kind":"cuda-ipc","device":0,"ipc_handle":"` + strings.Repeat("0a", IPCHandleSize) + `","size":4096,"offset":12}`,
		`{"op":"register","seq":3,"kind":"cuda-vmm-fd","device":1,"size":4096}`,
		`{"op":"register","kind":"cuda-ipc","device":-1,"ipc_handle":"zz","size":1}`,
		`{"op":"unregister","seq":4,"handle":1}`,
		`{"op":"submit","seq":5,"reads":[{"server":"h","volume":"v","offset":0,"length":10,"handle":1,"dst_offset":0,"tag":"t","timeout_ms":0}]}`,
		`{"op":"wait","seq":6,"ids":[1,2],"timeout_ms":100,"max":2}`,
		`{"op":"cancel","seq":7,"ids":[1]}`,
		`{"op":"submit","reads":[{"length":-1}]}`,
		`{"op":"submit","seq":5,"reads":[{"striped":true,"volume":"v","offset":0,"length":10,"handle":1}]}`,
		`{"op":"submit","reads":[{"striped":true,"server":"h","volume":"v","length":10,"handle":1}]}`,
		`{"op":"wait","timeout_ms":99999999}`,
		`[]`, `null`, `{"op":1}`, "\x00",
	} {
		for fds := range 3 {
			f.Add([]byte(s), fds)
		}
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
		wantFDs := 0
		if q.Op == OpRegister && q.Kind != "cuda-ipc" {
			wantFDs = 1
		}
		if fds != wantFDs {
			t.Fatalf("accepted %s %s with %d fds", q.Op, q.Kind, fds)
		}
		switch q.Op {
		case OpSubmit:
			if len(q.Reads) == 0 || len(q.Reads) > MaxReadsPerSubmit {
				t.Fatalf("accepted %d reads", len(q.Reads))
			}
			for _, r := range q.Reads {
				if r.Length <= 0 || r.Offset < 0 || r.DstOffset < 0 || r.Handle == 0 || len(r.Tag) > MaxTag ||
					(r.Server == "") != r.Striped || r.Volume == "" || r.Offset+r.Length < 0 || r.DstOffset+r.Length < 0 {
					t.Fatalf("accepted read %+v", r)
				}
			}
		case OpRegister:
			if q.Size <= 0 || q.Offset < 0 || q.Offset+q.Size < 0 {
				t.Fatalf("accepted register %+v", q)
			}
			device := q.Kind == "cuda-ipc" || q.Kind == "cuda-vmm-fd"
			if device != (q.Device != nil) || device && (*q.Device < 0 || *q.Device > MaxDevice) {
				t.Fatalf("accepted register %s with device %v", q.Kind, q.Device)
			}
			if h, err := hex.DecodeString(q.IPCHandle); (q.Kind == "cuda-ipc") != (len(h) == IPCHandleSize) || err != nil {
				t.Fatalf("accepted register %s with ipc_handle %q", q.Kind, q.IPCHandle)
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
