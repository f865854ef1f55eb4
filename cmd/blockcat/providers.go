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

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/providers"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// providerInfo is one row of `blockcat providers`.
type providerInfo struct {
	Name         string
	Version      string
	Path         string
	Capabilities memory.Capabilities
	Unusable     string
}

// providersResult is what `blockcat providers --json` prints
// (docs/json.md).
type providersResult struct {
	PluginDir string         `json:"plugin_dir"`
	Providers []providerJSON `json:"providers"`
}

// providerJSON is one provider in `blockcat providers --json`; a value
// that does not apply (no version, no path, usable) is null.
type providerJSON struct {
	Name           string           `json:"name"`
	Version        *string          `json:"version"`
	Path           *string          `json:"path"` // nil: built in
	Usable         bool             `json:"usable"`
	UnusableReason *string          `json:"unusable_reason"`
	Capabilities   capabilitiesJSON `json:"capabilities"`
}

// capabilitiesJSON is memory.Capabilities as --json prints it.
type capabilitiesJSON struct {
	Kind           string  `json:"kind"`
	Device         *string `json:"device"` // nil: host memory
	DmabufExport   bool    `json:"dmabuf_export"`
	CPUMappable    bool    `json:"cpu_mappable"`
	Gather         bool    `json:"gather"`
	DeviceChecksum bool    `json:"device_checksum"`
	// MaxAllocBytes is the largest single allocation; nil: no limit.
	MaxAllocBytes *int64 `json:"max_alloc_bytes"`
}

// providersJSON converts the rows for --json.
func providersJSON(dir string, infos []providerInfo) providersResult {
	orNil := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	res := providersResult{PluginDir: dir, Providers: []providerJSON{}}
	for _, i := range infos {
		c := i.Capabilities
		j := providerJSON{Name: i.Name, Version: orNil(i.Version), Path: orNil(i.Path), Usable: i.Unusable == "",
			UnusableReason: orNil(i.Unusable), Capabilities: capabilitiesJSON{Kind: string(c.Kind), Device: orNil(c.Device),
				DmabufExport: c.DmabufExport, CPUMappable: c.CPUMappable, Gather: c.Gather, DeviceChecksum: c.DeviceChecksum}}
		if c.MaxAlloc > 0 {
			n := c.MaxAlloc
			j.Capabilities.MaxAllocBytes = &n
		}
		res.Providers = append(res.Providers, j)
	}
	return res
}

func listProviders(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("blockcat providers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("plugin-dir", "", cli.PluginDirHelp)
	asJSON := fs.Bool("json", false, "print JSON")
	logLevel := fs.String("log-level", "warn", "plugin log level")
	if _, err := cli.Parse(fs, args, 0, "[--plugin-dir DIR] [--json]"); err != nil {
		return cli.UsageErr(err)
	}
	host := hostmem.New()
	infos := []providerInfo{{Name: host.Name(), Capabilities: host.Capabilities()}}
	host.Close()
	paths, err := providers.Discover(cli.PluginDir(*dir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, path := range paths {
		info := providerInfo{Name: strings.TrimPrefix(filepath.Base(path), providers.ExecutablePrefix), Path: path}
		p, err := providers.Load(ctx, path, &providers.LoadOptions{Logger: cli.PluginLogger(*logLevel, stderr)})
		if err != nil {
			info.Unusable = err.Error()
		} else {
			info.Name, info.Version, info.Capabilities, info.Unusable = p.Name(), p.Version(), p.Capabilities(), p.Unusable()
			p.Close()
		}
		infos = append(infos, info)
	}
	if *asJSON {
		return cli.WriteJSON(stdout, providersJSON(cli.PluginDir(*dir), infos))
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
