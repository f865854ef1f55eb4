// Package buildinfo describes the running binary: the module version, the
// VCS revision it was built from (and whether the tree had uncommitted
// changes), when it was built and by which Go toolchain. It reads what the
// go command records (runtime/debug.ReadBuildInfo) and what the linker may
// set with -X (see Version and BuildTime).
//
// It imports only the standard library, so that provider plugins can print
// their version without linking anything else.
package buildinfo

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// These may be set at link time, as scripts/install.sh does:
//
//	go build -ldflags "-X github.com/blockxfer/blockxfer/internal/buildinfo.buildTime=2026-01-02T03:04:05Z"
//
// version overrides the module version the go command records (a release
// script may stamp v1.2.3); buildTime is the build's time, which the go
// command does not record.
var (
	version   string
	buildTime string
)

// Info describes a binary.
type Info struct {
	// Program is the binary's name, such as "blockd".
	Program string `json:"program"`
	// Version is the module version: a tag such as v1.2.3, a pseudo-version
	// built from the commit (v0.0.0-20260102030405-abcdef123456, with
	// +dirty when the tree had changes), or "devel" when the build recorded
	// none.
	Version string `json:"version"`
	// Revision is the VCS revision the binary was built from, "" if
	// unknown.
	Revision string `json:"revision,omitempty"`
	// Modified says the working tree had uncommitted changes.
	Modified bool `json:"modified,omitempty"`
	// CommitTime is the revision's commit time (RFC 3339), "" if unknown.
	CommitTime string `json:"commit_time,omitempty"`
	// BuildTime is when the binary was built (RFC 3339), "" unless set at
	// link time.
	BuildTime string `json:"build_time,omitempty"`
	// GoVersion is the Go toolchain that built the binary.
	GoVersion string `json:"go_version"`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform"`
}

// Read describes the running binary, named program.
func Read(program string) Info {
	bi, _ := debug.ReadBuildInfo() // nil without build information
	i := FromBuildInfo(program, bi)
	if version != "" {
		i.Version = version
	}
	i.BuildTime = buildTime
	return i
}

// FromBuildInfo describes a binary named program from its build
// information, which may be nil.
func FromBuildInfo(program string, bi *debug.BuildInfo) Info {
	i := Info{Program: program, Version: "devel", GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		return i
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		i.Version = v
	}
	if bi.GoVersion != "" {
		i.GoVersion = bi.GoVersion
	}
	var goos, goarch string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Revision = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		case "vcs.time":
			i.CommitTime = s.Value
		case "GOOS":
			goos = s.Value
		case "GOARCH":
			goarch = s.Value
		}
	}
	if goos != "" && goarch != "" {
		i.Platform = goos + "/" + goarch
	}
	return i
}

// Rev returns the revision as Write prints it: in full, with "+dirty" when
// the tree had changes, or "unknown".
func (i Info) Rev() string {
	if i.Revision == "" {
		return "unknown"
	}
	if i.Modified {
		return i.Revision + "+dirty"
	}
	return i.Revision
}

// ShortRev returns the revision's first 12 hex digits, with "+dirty" when
// the tree had changes, or "unknown".
func (i Info) ShortRev() string {
	r := i.Revision
	if r == "" {
		return "unknown"
	}
	if len(r) > 12 {
		r = r[:12]
	}
	if i.Modified {
		r += "+dirty"
	}
	return r
}

// String describes the binary on one line, as log lines and doctor show
// it: "blockd v0.0.0-20260102030405-abcdef123456 (revision abcdef123456,
// go1.26.0 linux/amd64)".
func (i Info) String() string {
	s := fmt.Sprintf("%s %s (revision %s", i.Program, i.Version, i.ShortRev())
	if i.BuildTime != "" {
		s += ", built " + i.BuildTime
	}
	return s + ", " + i.GoVersion + " " + i.Platform + ")"
}

// Write prints the description that --version prints: the program and
// version, then one "key value" line for each of revision, committed (if
// known), built (if known) and go.
func (i Info) Write(w io.Writer) error {
	s := fmt.Sprintf("%s version %s\nrevision   %s\n", i.Program, i.Version, i.Rev())
	if i.CommitTime != "" {
		s += "committed  " + i.CommitTime + "\n"
	}
	if i.BuildTime != "" {
		s += "built      " + i.BuildTime + "\n"
	}
	s += "go         " + i.GoVersion + " " + i.Platform + "\n"
	_, err := io.WriteString(w, s)
	return err
}

// WriteJSON prints the description as one JSON object.
func (i Info) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(i)
}

// VersionRequested reports whether a program's arguments (os.Args[1:]) ask
// for its version with --version or -version. Provider plugins check this
// before providers.Serve, so that running one by hand with --version prints
// the version instead of the plugin handshake's refusal.
func VersionRequested(args []string) bool {
	for _, a := range args {
		if a == "--version" || a == "-version" {
			return true
		}
	}
	return false
}
