package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/blockxfer/blockxfer/cmd/internal/doctor"
	"github.com/blockxfer/blockxfer/providers"
)

// ErrChecksFailed is returned by Doctor when a check fails.
var ErrChecksFailed = errors.New("some checks failed")

// Doctor runs the devmem preflight for the command named prog ("blockd
// doctor" or "blockcat doctor") and prints it as text or JSON. An optional
// SERVER argument (HOST[:PORT]) makes it check the interface that routes to
// that server.
func Doctor(ctx context.Context, prog string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(stderr)
	ifaces := fs.String("if", "", "comma-separated interfaces to check (default: the one that routes to SERVER, or every interface that is up)")
	dir := fs.String("plugin-dir", "", PluginDirHelp)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := ParseRange(fs, args, 0, 1, "[--if IFACES] [--plugin-dir DIR] [--json] [SERVER]")
	if err != nil {
		return UsageErr(err)
	}
	o := doctor.Options{PluginDir: PluginDir(*dir),
		LoadOptions: &providers.LoadOptions{Logger: PluginLogger("error", stderr)}}
	if *ifaces != "" {
		o.Interfaces = strings.Split(*ifaces, ",")
	}
	if len(pos) == 1 {
		o.Server = pos[0]
	}
	cs := append([]doctor.Check{versionInfo(prog)}, doctor.Run(ctx, o)...)
	n := 0
	for _, c := range cs {
		if !c.OK {
			n++
		}
	}
	if *asJSON {
		rep := doctorReport{Program: prog, Passed: doctor.Passed(cs), FailedChecks: n, Checks: cs}
		if o.Server != "" {
			rep.Server = &o.Server
		}
		if err := WriteJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		doctor.Print(stdout, cs)
	}
	if !doctor.Passed(cs) {
		return fmt.Errorf("%w: %d of %d (devmem will fall back to tcp until they pass)", ErrChecksFailed, n, len(cs))
	}
	return nil
}

// doctorReport is what `blockd doctor --json` and `blockcat doctor --json`
// print (docs/json.md).
type doctorReport struct {
	Program      string         `json:"program"` // "blockd doctor" or "blockcat doctor"
	Server       *string        `json:"server"`  // SERVER, if given
	Passed       bool           `json:"passed"`
	FailedChecks int            `json:"failed_checks"`
	Checks       []doctor.Check `json:"checks"`
}
