package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/go-hclog"

	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/internal/cli"
	"github.com/blockxfer/blockxfer/providers"
	"github.com/blockxfer/blockxfer/providers/hostmem"
)

// pluginDirEnv names the environment variable with the plugin directory.
const pluginDirEnv = "BLOCKXFER_PLUGIN_DIR"

// pluginDir is where plugins are looked for: --plugin-dir, then
// $BLOCKXFER_PLUGIN_DIR, then the directory blockcat itself is in.
func pluginDir(flagged string) string {
	if flagged != "" {
		return flagged
	}
	if d := os.Getenv(pluginDirEnv); d != "" {
		return d
	}
	if exe, err := os.Executable(); err == nil {
		return filepath.Dir(exe)
	}
	return "."
}

// openProvider returns the provider named by --provider: "host" (built in),
// a plugin name looked up as blockxfer-provider-NAME in the plugin
// directory, or a path to a plugin executable.
func openProvider(ctx context.Context, name, dir, logLevel string, stderr io.Writer) (engine.Provider, error) {
	if name == "" || name == "host" {
		return hostmem.New(), nil
	}
	path := name
	if !strings.ContainsRune(name, '/') {
		path = filepath.Join(pluginDir(dir), providers.ExecutablePrefix+name)
	}
	p, err := providers.Load(ctx, path, &providers.LoadOptions{Logger: pluginLogger(logLevel, stderr)})
	if err != nil {
		return nil, fmt.Errorf("provider %s: %w", name, err)
	}
	if why := p.Unusable(); why != "" {
		p.Close()
		return nil, fmt.Errorf("provider %s is unusable here: %s", name, why)
	}
	return p, nil
}

func pluginLogger(level string, w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "plugin", Level: hclog.LevelFromString(level), Output: w})
}

// providerInfo is one row of `blockcat providers`.
type providerInfo struct {
	Name         string              `json:"name"`
	Version      string              `json:"version,omitempty"`
	Path         string              `json:"path,omitempty"`
	Capabilities engine.Capabilities `json:"capabilities"`
	Unusable     string              `json:"unusable,omitempty"`
}

func listProviders(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("blockcat providers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("plugin-dir", "", "plugin directory (default $"+pluginDirEnv+" or blockcat's own directory)")
	asJSON := fs.Bool("json", false, "print JSON")
	logLevel := fs.String("log-level", "warn", "plugin log level")
	if _, err := cli.Parse(fs, args, 0, "[--plugin-dir DIR] [--json]"); err != nil {
		return usageErr(err)
	}
	host := hostmem.New()
	infos := []providerInfo{{Name: host.Name(), Capabilities: host.Capabilities()}}
	host.Close()
	paths, err := providers.Discover(pluginDir(*dir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, path := range paths {
		info := providerInfo{Name: strings.TrimPrefix(filepath.Base(path), providers.ExecutablePrefix), Path: path}
		p, err := providers.Load(ctx, path, &providers.LoadOptions{Logger: pluginLogger(*logLevel, stderr)})
		if err != nil {
			info.Unusable = err.Error()
		} else {
			info.Name, info.Version, info.Capabilities, info.Unusable = p.Name(), p.Version(), p.Capabilities(), p.Unusable()
			p.Close()
		}
		infos = append(infos, info)
	}
	if *asJSON {
		return writeJSON(stdout, infos)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tKIND\tDEVICE\tDMABUF\tMAPPABLE\tMAX ALLOC\tSTATUS")
	for _, i := range infos {
		status := "usable"
		if i.Unusable != "" {
			status = "unusable: " + i.Unusable
		}
		maxAlloc := "-"
		if i.Capabilities.MaxAlloc > 0 {
			maxAlloc = cli.FormatBytes(float64(i.Capabilities.MaxAlloc))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%v\t%s\t%s\n", i.Name, orDash(i.Version), i.Capabilities.Kind,
			orDash(i.Capabilities.Device), i.Capabilities.DmabufExport, i.Capabilities.CPUMappable, maxAlloc, status)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
