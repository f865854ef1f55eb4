package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
)

// TestDoctorServer: `doctor SERVER` checks only the interface that routes
// to SERVER (here the loopback) and says so in the header; each role gets
// a verdict line.
func TestDoctorServer(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the NIC checks need Linux")
	}
	var out bytes.Buffer
	err := Doctor(context.Background(), "blockcat doctor", []string{"--json", "--plugin-dir", t.TempDir(), "127.0.0.1:7070"}, &out, io.Discard)
	if !errors.Is(err, ErrChecksFailed) {
		t.Fatalf("doctor on the loopback: %v, want failed checks", err)
	}
	var rep struct {
		Checks []struct {
			Scope, Name, Kind, Detail string
			OK                        bool
		}
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out.String())
	}
	cs := rep.Checks
	lo := ""
	verdicts := map[string]string{}
	for _, c := range cs {
		if c.Kind == "info" && c.Name == "route" {
			lo = c.Scope
		}
		if c.Kind == "verdict" {
			verdicts[c.Name] = c.Detail
		}
	}
	if ifc, err := net.InterfaceByName(lo); err != nil || ifc.Flags&net.FlagLoopback == 0 {
		t.Fatalf("route names %q, not the loopback (%v):\n%s", lo, err, out.String())
	}
	for _, c := range cs {
		if c.Kind == "" && c.Scope != lo && (c.Name == "ntuple" || c.Name == "tcp-data-split") {
			t.Errorf("an interface that does not route to the server was checked: %+v", c)
		}
	}
	if !strings.HasPrefix(verdicts["devmem-rx"], "devmem RX on "+lo+": no") || !strings.HasPrefix(verdicts["devmem-tx"], "devmem TX on "+lo+": no") {
		t.Errorf("verdicts %q", verdicts)
	}

	out.Reset()
	_ = Doctor(context.Background(), "blockd doctor", []string{"--plugin-dir", t.TempDir(), "127.0.0.1"}, &out, io.Discard)
	text := out.String()
	for _, want := range []string{"server 127.0.0.1 is reached via " + lo, "\ndevmem RX on " + lo + ": no", "\ndevmem TX on " + lo + ": no"} {
		if !strings.Contains(text, want) {
			t.Errorf("text output lacks %q:\n%s", want, text)
		}
	}
	if code := ExitCode("blockd", Doctor(context.Background(), "blockd doctor", []string{"a", "b"}, io.Discard, io.Discard), io.Discard); code != 2 {
		t.Errorf("doctor with two servers: exit %d, want 2", code)
	}
}
