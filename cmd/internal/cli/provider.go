package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/blockxfer/blockxfer/providers"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// PluginDirEnv names the environment variable with the plugin directory.
const PluginDirEnv = "BLOCKXFER_PLUGIN_DIR"

// PluginLibDir is where scripts/install.sh puts the plugins, relative to
// the directory it puts blockd and blockcat in: PREFIX/bin and
// PREFIX/lib/blockxfer/plugins.
const PluginLibDir = "../lib/blockxfer/plugins"

// PluginDirHelp describes --plugin-dir's default.
const PluginDirHelp = "`DIR` of the provider plugins (default $" + PluginDirEnv + ")\n" +
	"without it: the binary's own directory or " + PluginLibDir + " beside it,\n" +
	"whichever holds blockxfer-provider-* plugins"

// PluginDir is where plugins are looked for: --plugin-dir, then
// $BLOCKXFER_PLUGIN_DIR, then the directory the running binary is in if it
// holds a plugin, else ../lib/blockxfer/plugins beside it if that does (the
// layout scripts/install.sh makes), else the binary's directory.
func PluginDir(flagged string) string {
	if flagged != "" {
		return flagged
	}
	if d := os.Getenv(PluginDirEnv); d != "" {
		return d
	}
	if exe, err := os.Executable(); err == nil {
		return defaultPluginDir(filepath.Dir(exe))
	}
	return "."
}

// defaultPluginDir returns the plugin directory of a binary in binDir: the
// first of binDir and binDir/../lib/blockxfer/plugins that holds a plugin,
// else binDir.
func defaultPluginDir(binDir string) string {
	for _, d := range []string{binDir, filepath.Join(binDir, PluginLibDir)} {
		if paths, err := providers.Discover(d); err == nil && len(paths) > 0 {
			return d
		}
	}
	return binDir
}

// OpenProvider returns the provider named by --provider: "host" (built in),
// a plugin name looked up as blockxfer-provider-NAME in the plugin
// directory, or a path to a plugin executable.
func OpenProvider(ctx context.Context, name, dir, logLevel string, stderr io.Writer) (memory.Provider, error) {
	if name == "" || name == "host" {
		return hostmem.New(), nil
	}
	path := name
	if !strings.ContainsRune(name, '/') {
		path = filepath.Join(PluginDir(dir), providers.ExecutablePrefix+name)
	}
	p, err := providers.Load(ctx, path, &providers.LoadOptions{Logger: PluginLogger(logLevel, stderr)})
	if err != nil {
		return nil, fmt.Errorf("provider %s: %w", name, err)
	}
	if why := p.Unusable(); why != "" {
		p.Close()
		return nil, fmt.Errorf("provider %s is unusable here: %s", name, why)
	}
	return p, nil
}

// PluginLogger returns the hclog logger plugins' logs go to.
func PluginLogger(level string, w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "plugin", Level: hclog.LevelFromString(level), Output: w})
}
