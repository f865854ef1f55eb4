package integration

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/blockxfer/blockxfer/"

// layer places a package of the module in the layering of
// docs/architecture.md: 0 contracts, 1 libraries (engine, ec, catalog,
// blockproto, transports, providers), 2 the binaries and their helpers.
// A package may import packages of its own layer or below, never above,
// and a contract package imports only contract packages.
func layer(pkg string) int {
	switch {
	case strings.HasPrefix(pkg, "cmd/"):
		return 2
	case pkg == "providers/memory" || pkg == "transport" || strings.HasPrefix(pkg, "internal/"):
		return 0
	}
	return 1
}

type listedPackage struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// goList runs go list -json over patterns and decodes the stream.
func goList(t *testing.T, args ...string) []listedPackage {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p listedPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestImportLayers checks that no import runs back up the layers: commands
// on top; engine, ec, the transports and the providers below them; the
// contract packages at the bottom.
func TestImportLayers(t *testing.T) {
	pkgs := goList(t, "./...")
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages", len(pkgs))
	}
	for _, p := range pkgs {
		from := strings.TrimPrefix(p.ImportPath, module)
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			to := strings.TrimPrefix(imp, module)
			if layer(to) > layer(from) {
				t.Errorf("%s (layer %d) imports %s (layer %d)", from, layer(from), to, layer(to))
			}
		}
	}
}

// TestPluginsStayLight checks that provider plugins link only the contracts
// and the plugin machinery: no engine, catalog, wire protocol, bbolt or
// Prometheus, neither in their dependency graph nor in their symbols.
func TestPluginsStayLight(t *testing.T) {
	banned := []string{
		module + "engine", module + "catalog", module + "blockproto", module + "ec",
		"go.etcd.io/bbolt", "github.com/prometheus/",
	}
	for _, p := range goList(t, "-deps=false", "./providers/udmabuf", "./providers/gpu", "./providers/example") {
		cmd := exec.Command("go", "list", "-f", "{{join .Deps \"\\n\"}}", p.ImportPath)
		cmd.Dir = ".."
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, dep := range strings.Split(string(out), "\n") {
			for _, b := range banned {
				if strings.HasPrefix(dep, b) {
					t.Errorf("%s depends on %s", p.ImportPath, dep)
				}
			}
		}
	}
	for _, name := range []string{"udmabuf", "gpu", "example"} {
		exe := filepath.Join(bin, "blockxfer-provider-"+name)
		out, err := exec.Command("go", "tool", "nm", exe).Output()
		if err != nil {
			t.Fatalf("go tool nm %s: %v", exe, err)
		}
		for _, sym := range []string{"go.etcd.io/bbolt.", "github.com/prometheus/"} {
			if bytes.Contains(out, []byte(sym)) {
				t.Errorf("%s holds %s symbols", exe, sym)
			}
		}
	}
}
