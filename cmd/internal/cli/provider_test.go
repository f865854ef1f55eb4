package cli

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDefaultPluginDir: the binary's own directory when it holds a plugin
// (a build tree), else PREFIX/lib/blockxfer/plugins beside PREFIX/bin (as
// scripts/install.sh installs), else the binary's directory.
func TestDefaultPluginDir(t *testing.T) {
	prefix := t.TempDir()
	bin := filepath.Join(prefix, "bin")
	lib := filepath.Join(prefix, "lib", "blockxfer", "plugins")
	for _, d := range []string{bin, lib} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	plugin := func(dir string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "blockxfer-provider-x"), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got := defaultPluginDir(bin); got != bin {
		t.Errorf("no plugins anywhere: %s, want %s", got, bin)
	}
	plugin(lib)
	if got := defaultPluginDir(bin); got != filepath.Join(bin, PluginLibDir) {
		t.Errorf("plugins in lib: %s, want %s", got, lib)
	}
	plugin(bin)
	if got := defaultPluginDir(bin); got != bin {
		t.Errorf("plugins beside the binary too: %s, want %s", got, bin)
	}

	t.Setenv(PluginDirEnv, "/from/env")
	if got := PluginDir(""); got != "/from/env" {
		t.Errorf("with $%s: %s", PluginDirEnv, got)
	}
	if got := PluginDir("/flag"); got != "/flag" {
		t.Errorf("with --plugin-dir: %s", got)
	}
}
