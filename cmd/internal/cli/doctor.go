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
// doctor" or "blockcat doctor") and prints it as text or JSON.
func Doctor(ctx context.Context, prog string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(stderr)
	ifaces := fs.String("if", "", "comma-separated interfaces to check (default: every interface that is up)")
	dir := fs.String("plugin-dir", "", "plugin directory (default $"+PluginDirEnv+" or the binary's own directory)")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := Parse(fs, args, 0, "[--if IFACES] [--plugin-dir DIR] [--json]"); err != nil {
		return UsageErr(err)
	}
	o := doctor.Options{PluginDir: PluginDir(*dir),
		LoadOptions: &providers.LoadOptions{Logger: PluginLogger("error", stderr)}}
	if *ifaces != "" {
		o.Interfaces = strings.Split(*ifaces, ",")
	}
	cs := doctor.Run(ctx, o)
	if *asJSON {
		if err := WriteJSON(stdout, cs); err != nil {
			return err
		}
	} else {
		doctor.Print(stdout, cs)
	}
	if !doctor.Passed(cs) {
		n := 0
		for _, c := range cs {
			if !c.OK {
				n++
			}
		}
		return fmt.Errorf("%w: %d of %d (devmem will fall back to tcp until they pass)", ErrChecksFailed, n, len(cs))
	}
	return nil
}
