package cli

import (
	"flag"
	"io"
	"strings"

	"github.com/blockxfer/blockxfer/cmd/internal/doctor"
	"github.com/blockxfer/blockxfer/internal/buildinfo"
)

// Version runs `PROG version [--json]` (and PROG --version): it prints the
// module version, the VCS revision (+dirty when the tree had changes), the
// commit and build times when known, and the Go version.
func Version(prog string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(prog+" version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := Parse(fs, args, 0, "[--json]"); err != nil {
		return UsageErr(err)
	}
	info := buildinfo.Read(prog)
	if *asJSON {
		return info.WriteJSON(stdout)
	}
	return info.Write(stdout)
}

// BuildInfo describes the running binary, named prog, for log lines,
// doctor and metrics.
func BuildInfo(prog string) buildinfo.Info { return buildinfo.Read(prog) }

// versionInfo is the first line of doctor's report: the binary's version,
// for bug reports. prog is "blockd doctor" or "blockcat doctor".
func versionInfo(prog string) doctor.Check {
	name, _, _ := strings.Cut(prog, " ")
	return doctor.Check{Scope: "build", Name: "version", OK: true, Kind: doctor.KindInfo, Detail: BuildInfo(name).String()}
}
