package buildinfo

import (
	"bytes"
	"encoding/json"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func testBuildInfo(modified string) *debug.BuildInfo {
	return &debug.BuildInfo{
		GoVersion: "go1.26.0",
		Main:      debug.Module{Path: "github.com/blockxfer/blockxfer", Version: "v0.0.0-20260102030405-0123456789ab+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "GOOS", Value: "linux"}, {Key: "GOARCH", Value: "arm64"},
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
			{Key: "vcs.time", Value: "2026-01-02T03:04:05Z"},
			{Key: "vcs.modified", Value: modified},
		},
	}
}

func TestFromBuildInfo(t *testing.T) {
	i := FromBuildInfo("blockd", testBuildInfo("true"))
	i.BuildTime = "2026-01-03T00:00:00Z"
	var b bytes.Buffer
	if err := i.Write(&b); err != nil {
		t.Fatal(err)
	}
	want := "blockd version v0.0.0-20260102030405-0123456789ab+dirty\n" +
		"revision   0123456789abcdef0123456789abcdef01234567+dirty\n" +
		"committed  2026-01-02T03:04:05Z\n" +
		"built      2026-01-03T00:00:00Z\n" +
		"go         go1.26.0 linux/arm64\n"
	if b.String() != want {
		t.Errorf("Write:\n%s\nwant:\n%s", b.String(), want)
	}
	if got, want := i.String(), "blockd v0.0.0-20260102030405-0123456789ab+dirty (revision 0123456789ab+dirty, built 2026-01-03T00:00:00Z, go1.26.0 linux/arm64)"; got != want {
		t.Errorf("String: %q, want %q", got, want)
	}
	b.Reset()
	if err := i.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Info
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || back != i {
		t.Errorf("WriteJSON round trip: %+v, %v; want %+v", back, err, i)
	}

	clean := FromBuildInfo("blockcat", testBuildInfo("false"))
	if clean.Rev() != "0123456789abcdef0123456789abcdef01234567" || clean.ShortRev() != "0123456789ab" {
		t.Errorf("clean tree: Rev %q, ShortRev %q", clean.Rev(), clean.ShortRev())
	}
}

// TestNoBuildInfo: without recorded information (go run of a file, a
// build without VCS stamping) the fields say so instead of being blank.
func TestNoBuildInfo(t *testing.T) {
	for _, bi := range []*debug.BuildInfo{nil, {Main: debug.Module{Version: "(devel)"}}} {
		i := FromBuildInfo("blockcat", bi)
		if i.Version != "devel" || i.Rev() != "unknown" || i.ShortRev() != "unknown" || i.GoVersion != runtime.Version() {
			t.Errorf("%+v: got %+v", bi, i)
		}
		var b bytes.Buffer
		i.Write(&b)
		if strings.Contains(b.String(), "committed") || strings.Contains(b.String(), "built") {
			t.Errorf("unknown times printed:\n%s", b.String())
		}
	}
}

// TestReadLinkerOverrides: -X version and buildTime win over what the go
// command recorded.
func TestReadLinkerOverrides(t *testing.T) {
	defer func(v, bt string) { version, buildTime = v, bt }(version, buildTime)
	version, buildTime = "v9.9.9", "2026-02-03T04:05:06Z"
	i := Read("blockd")
	if i.Version != "v9.9.9" || i.BuildTime != "2026-02-03T04:05:06Z" || i.Program != "blockd" {
		t.Errorf("Read: %+v", i)
	}
}

func TestVersionRequested(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"--version"}, true},
		{[]string{"-version"}, true},
		{[]string{"-device", "1", "--version"}, true},
		{[]string{"-device", "1"}, false},
		{[]string{"version"}, false},
		{[]string{"--versions"}, false},
	} {
		if got := VersionRequested(tc.args); got != tc.want {
			t.Errorf("VersionRequested(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}
