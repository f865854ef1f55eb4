package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/cmd/internal/selftest"
	"github.com/blockxfer/blockxfer/transport/choose"
)

// errSelftestFailed is returned when a check of the selftest failed: the
// exit status is then 1.
var errSelftestFailed = errors.New("selftest failed")

// selftestCmd runs `blockcat selftest SERVER`: the devmem hardware self-test
// against the blockd at SERVER (package selftest; docs/devmem.md).
func selftestCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("blockcat selftest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.dataConns, c.devmem.mode = 4, "auto"
	fs.StringVar(&c.keyFile, "key-file", "", "pre-shared key file (default $"+cli.KeyEnv+")")
	fs.Var(&c.dataConns, "data-conns", "data connections of each session, 1 to 64")
	fs.DurationVar(&c.timeout, "timeout", 0, "give up after this long, such as 5m (0: no limit; each check stops after a minute)")
	fs.StringVar(&c.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	fs.StringVar(&c.provider, "provider", "host", "memory the rx checks fetch into: host, a plugin NAME, or a plugin PATH")
	fs.StringVar(&c.pluginDir, "plugin-dir", "", cli.PluginDirHelp)
	fs.Var(&c.devmem, "devmem", "`MODE`: auto (the NIC that routes to SERVER, else the software NIC, skipping\n"+
		"what only a NIC can answer), require (the NIC, or the rx checks fail), or emulate (the software NIC)")
	volume := fs.String("volume", selftest.DefaultVolume, "`NAME` of the pattern volume the selftest uploads (replaced on every run) and reads")
	var size cli.SizeFlag = 16 << 20
	fs.Var(&size, "size", "size of the pattern volume, at least 1MiB")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	pos, err := cli.ParseServer(fs, args, 1, "SERVER [--devmem auto|require|emulate] [--provider P] [--json]")
	if err != nil {
		return cli.UsageErr(err)
	}
	mode, err := choose.ParseMode(c.devmem.mode)
	if err != nil || mode == choose.Off {
		return cli.CmdUsageErr(fs, errors.New("--devmem must be auto, require or emulate: the selftest tests devmem"))
	}
	if size < 1<<20 {
		return cli.CmdUsageErr(fs, errors.New("--size must be at least 1MiB"))
	}
	key, log, err := c.credentials(stderr)
	if err != nil {
		return err
	}
	ctx, cancel := c.context(ctx)
	defer cancel()
	p, err := cli.OpenProvider(ctx, c.provider, c.pluginDir, c.logLevel, stderr)
	if err != nil {
		return err
	}
	defer p.Close()
	o := selftest.Options{Server: pos[0], Key: key, Provider: p, Mode: mode, Volume: *volume, Size: int64(size),
		DataConns: int(c.dataConns), Logger: log}
	if !*asJSON {
		fmt.Fprintf(stdout, "blockcat selftest %s (--devmem %s, provider %s, pattern volume %s of %s)\n",
			pos[0], mode, p.Name(), *volume, cli.FormatBytes(float64(size)))
		o.Progress = func(ch selftest.Check) { selftest.PrintCheck(stdout, ch) }
	}
	rep := selftest.Run(ctx, o)
	if *asJSON {
		if err := cli.WriteJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		selftest.PrintSummary(stdout, rep)
	}
	if err := stopCause(ctx, ctx.Err()); err != nil {
		return err
	}
	if !rep.Passed {
		return fmt.Errorf("%w: %d of %d checks failed", errSelftestFailed, rep.FailedChecks, len(rep.Checks))
	}
	return nil
}
