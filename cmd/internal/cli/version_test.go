package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	var b bytes.Buffer
	if err := Version("blockd", nil, &b, io.Discard); err != nil {
		t.Fatal(err)
	}
	// A test binary records no module version or VCS revision.
	re := regexp.MustCompile(`^blockd version \S+\nrevision   \S+\n(committed  \S+\n)?(built      \S+\n)?go         go\S+ \S+/\S+\n$`)
	if !re.MatchString(b.String()) {
		t.Errorf("version:\n%s", b.String())
	}
	b.Reset()
	if err := Version("blockd", []string{"--json"}, &b, io.Discard); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatalf("version --json: %v\n%s", err, b.String())
	}
	if m["program"] != "blockd" || m["version"] == "" || m["go_version"] != runtime.Version() {
		t.Errorf("version --json: %s", b.String())
	}
	for _, args := range [][]string{{"extra"}, {"--bogus"}} {
		if code := ExitCode("blockd", Version("blockd", args, io.Discard, io.Discard), io.Discard); code != 2 {
			t.Errorf("version %q: exit %d, want 2", args, code)
		}
	}
}

// TestDoctorVersion: doctor's report starts with the binary's version,
// in text and in JSON.
func TestDoctorVersion(t *testing.T) {
	var b bytes.Buffer
	Doctor(context.Background(), "blockd doctor", []string{"--plugin-dir", t.TempDir()}, &b, io.Discard)
	first, _, _ := strings.Cut(b.String(), "\n")
	if want := BuildInfo("blockd").String(); first != want {
		t.Errorf("doctor's first line %q, want %q", first, want)
	}
	b.Reset()
	Doctor(context.Background(), "blockcat doctor", []string{"--json", "--plugin-dir", t.TempDir()}, &b, io.Discard)
	var rep struct{ Checks []map[string]any }
	if err := json.Unmarshal(b.Bytes(), &rep); err != nil || len(rep.Checks) == 0 {
		t.Fatalf("doctor --json: %v\n%s", err, b.String())
	}
	cs := rep.Checks
	if cs[0]["scope"] != "build" || cs[0]["kind"] != "info" || !strings.HasPrefix(cs[0]["detail"].(string), "blockcat ") {
		t.Errorf("doctor --json starts with %v", cs[0])
	}
}
