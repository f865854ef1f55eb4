package providers

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Plugin executables built once for the package by TestMain.
var (
	examplePath string // blockxfer-provider-example (providers/example)
	testPath    string // blockxfer-provider-test (providers/internal/testplugin)
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if os.Getenv("PROVIDERS_TEST_HOST") == "1" {
		return helperHost()
	}
	flag.Parse()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		// A fuzzing worker runs only the fuzz function, which needs no
		// plugin: building them in every worker would starve the fuzzer.
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "providers-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// One go build for both plugins: with -o naming a directory, each
	// binary is named after its package directory.
	cmd := exec.Command("go", "build", "-o", dir+"/", "./example", "./internal/testplugin")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building test plugins:", err)
		return 1
	}
	examplePath = filepath.Join(dir, ExecutablePrefix+"example")
	testPath = filepath.Join(dir, ExecutablePrefix+"test")
	if err := os.Rename(filepath.Join(dir, "example"), examplePath); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := os.Rename(filepath.Join(dir, "testplugin"), testPath); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// helperHost is the host process of TestPluginDiesWithHost (this test
// binary, re-executed): it loads a plugin, prints the plugin's pid and waits
// to be killed.
func helperHost() int {
	p, err := Load(context.Background(), os.Getenv("PROVIDERS_TEST_PLUGIN"), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper host:", err)
		return 1
	}
	fmt.Println(p.Pid())
	select {}
}

// testLogger sends host and plugin logs to the test log until the test's
// cleanups have run.
func testLogger(tb testing.TB) hclog.Logger {
	w := &testWriter{tb: tb}
	tb.Cleanup(func() { // registered first, so it runs after Plugin.Close
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return hclog.New(&hclog.LoggerOptions{Name: "host", Level: hclog.Warn, Output: w})
}

type testWriter struct {
	tb   testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.tb.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// load starts the plugin at path and closes it at cleanup.
func load(tb testing.TB, path string, opts *LoadOptions) *Plugin {
	tb.Helper()
	if opts == nil {
		opts = &LoadOptions{}
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(tb)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := Load(ctx, path, opts)
	if err != nil {
		tb.Fatalf("Load(%s): %v", path, err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}
