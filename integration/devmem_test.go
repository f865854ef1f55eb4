package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDevmemModes runs blockd and blockcat with each --devmem mode and
// checks the bytes and what every output says about the path taken.
func TestDevmemModes(t *testing.T) {
	data, env := newData(t, map[string]string{"vol": "12MiB"})
	s := startServer(t, data, env, "--devmem", "emulate")
	want := s.volumeBytes(t, "vol")
	type getJSON struct {
		Transport       string
		ServerTransport string `json:"server_transport"`
		FallbackReason  string `json:"fallback_reason"`
		Bytes           int64
	}
	for _, tc := range []struct {
		mode, transport, reason string
	}{
		{"emulate", "devmem-emulated", ""},
		{"auto", "tcp", "loopback:"},
		{"off", "tcp", ""},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			js := mustRun(t, env, "blockcat", "get", s.addr, "vol", "--devmem", tc.mode, "--verify", "--json", "-o", out)
			var r getJSON
			if err := json.Unmarshal([]byte(js), &r); err != nil {
				t.Fatal(err)
			}
			if r.Transport != tc.transport || r.ServerTransport != "devmem-emulated" ||
				(tc.reason == "") != (r.FallbackReason == "") || !strings.HasPrefix(r.FallbackReason, tc.reason) {
				t.Fatalf("result %s", js)
			}
			if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
				t.Fatal("bytes differ")
			}
		})
	}
	t.Run("plugin provider gathers from the arena", func(t *testing.T) {
		// The example plugin exports its memfd as the arena's "dmabuf": the
		// software NIC binds it and every frag is gathered inside the plugin.
		out := filepath.Join(t.TempDir(), "out")
		js := mustRun(t, env, "blockcat", "get", s.addr, "vol", "--devmem", "emulate", "--provider", "example",
			"--verify", "--json", "-o", out)
		var r getJSON
		if err := json.Unmarshal([]byte(js), &r); err != nil || r.Transport != "devmem-emulated" {
			t.Fatalf("result %s (%v)", js, err)
		}
		if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
			t.Fatal("bytes differ")
		}
	})
	t.Run("require", func(t *testing.T) {
		r := runCmd(t, env, "blockcat", "get", s.addr, "vol", "--devmem", "require")
		if r.code == 0 || !strings.Contains(r.stderr, "devmem unavailable: loopback") {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
	})
	t.Run("text output names the emulation", func(t *testing.T) {
		r := runCmd(t, env, "blockcat", "get", s.addr, "vol", "--devmem", "emulate")
		if r.code != 0 || !strings.Contains(r.stdout, "over devmem-emulated") || !strings.Contains(r.stdout, "server sent with devmem-emulated") {
			t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
		}
	})
	if !strings.Contains(s.log.String(), "transport=devmem-emulated") {
		t.Errorf("blockd log does not name the emulated transport:\n%s", s.log.String())
	}
}

func TestDoctor(t *testing.T) {
	var rep struct {
		Passed bool
		Checks []struct {
			Scope, Name string
			OK          bool
			Fix         string
		}
	}
	r := runCmd(t, nil, "blockcat", "doctor", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("doctor output: %v\n%s", err, r.stdout)
	}
	checks := rep.Checks
	found := map[string]bool{}
	failed := false
	for _, c := range checks {
		found[c.Scope+"/"+c.Name] = c.OK
		failed = failed || !c.OK
	}
	if !found["netdev/family"] || !found["kernel/devmem-rx"] {
		t.Fatalf("the kernel's devmem support not found: %s", r.stdout)
	}
	// Exit status says whether everything passed.
	if failed != (r.code != 0) || rep.Passed == failed {
		t.Fatalf("exit %d with failed=%v", r.code, failed)
	}
}
