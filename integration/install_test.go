package integration

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// versionRE matches what --version prints for the binary named in the
// first group.
var versionRE = regexp.MustCompile(`^(\S+) version (\S+)\nrevision   (\S+)\n(?:committed  \S+\n)?(?:built      (\S+)\n)?go         (go\S+) (\S+)\n$`)

// checkVersion checks --version's output for the binary prog.
func checkVersion(t *testing.T, prog, out string) (m []string) {
	t.Helper()
	m = versionRE.FindStringSubmatch(out)
	switch {
	case m == nil:
		t.Errorf("%s: version output not as expected:\n%s", prog, out)
	case m[1] != prog:
		t.Errorf("%s: version output names %q", prog, m[1])
	case m[5] != runtime.Version():
		t.Errorf("%s: built with %s, this test with %s", prog, m[5], runtime.Version())
	}
	return m
}

// TestVersions: blockd --version, blockcat version and every plugin's
// --version print the version lines and exit 0; a plugin run by hand with
// --version starts no handshake.
func TestVersions(t *testing.T) {
	checkVersion(t, "blockd", mustRun(t, nil, "blockd", "--version"))
	checkVersion(t, "blockd", mustRun(t, nil, "blockd", "version"))
	checkVersion(t, "blockcat", mustRun(t, nil, "blockcat", "version"))
	checkVersion(t, "blockcat", mustRun(t, nil, "blockcat", "--version"))
	for _, p := range []string{"example", "udmabuf", "gpu"} {
		name := "blockxfer-provider-" + p
		r := runCmd(t, nil, name, "--version")
		if r.code != 0 || r.stderr != "" {
			t.Errorf("%s --version: exit %d\n%s", name, r.code, r.stderr)
		}
		checkVersion(t, name, r.stdout)
	}
	// Without --version, run by hand, a plugin still refuses (exit 1).
	if r := runCmd(t, nil, "blockxfer-provider-example"); r.code != 1 || !strings.Contains(r.stderr, "not run directly") {
		t.Errorf("plugin run by hand: exit %d\n%s", r.code, r.stderr)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, nil, "blockd", "version", "--json")), &v); err != nil || v["program"] != "blockd" {
		t.Errorf("blockd version --json: %v %v", v, err)
	}
}

// TestServeVersion: blockd serve logs its version as it starts and exports
// blockd_build_info; blockcat takes the server from $BLOCKXFER_SERVER.
func TestServeVersion(t *testing.T) {
	data, env := newData(t, map[string]string{"vol": "1MiB"})
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := ml.Addr().String()
	ml.Close()
	s := startServer(t, data, env, "--metrics", metricsAddr)
	m := checkVersion(t, "blockd", mustRun(t, nil, "blockd", "--version"))
	if m == nil {
		return
	}
	if line := regexp.MustCompile(`(?m)^.*msg=serving .*$`).FindString(s.log.String()); !strings.Contains(line, "version="+m[2]) {
		t.Errorf("serving log line without version=%s: %q", m[2], line)
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `blockd_build_info{goversion="` + m[5] + `",revision="`
	if !strings.Contains(string(body), want) || !regexp.MustCompile(`(?m)^blockd_build_info\{[^}]*version="`+regexp.QuoteMeta(m[2])+`"\} 1$`).Match(body) {
		t.Errorf("metrics lack blockd_build_info for version %s:\n%s", m[2], grepLines(string(body), "build_info"))
	}

	env = append(env, "BLOCKXFER_SERVER="+s.addr)
	if out := mustRun(t, env, "blockcat", "ls"); !strings.Contains(out, "vol") {
		t.Errorf("blockcat ls with $BLOCKXFER_SERVER:\n%s", out)
	}
	if out := mustRun(t, env, "blockcat", "get", "vol", "--json"); !strings.Contains(out, `"volume": "vol"`) {
		t.Errorf("blockcat get vol with $BLOCKXFER_SERVER:\n%s", out)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestInstallScript: scripts/install.sh PREFIX installs working binaries;
// the installed blockcat finds the installed plugins in
// PREFIX/lib/blockxfer/plugins with no --plugin-dir or environment.
func TestInstallScript(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: install.sh builds every binary")
	}
	if _, err := exec.LookPath("install"); err != nil {
		t.Skip("no install(1):", err)
	}
	prefix := filepath.Join(t.TempDir(), "usr")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "../scripts/install.sh", prefix)
	cmd.Env = append(withoutEnv("BLOCKXFER_PLUGIN_DIR"), "SOURCE_DATE_EPOCH=1767225600")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("install.sh %s: %v\n%s", prefix, err, out)
	}
	t.Logf("install.sh took %v", time.Since(start).Round(time.Millisecond))

	run := func(path string, args ...string) string {
		t.Helper()
		cmd := exec.Command(path, args...)
		cmd.Env = withoutEnv("BLOCKXFER_PLUGIN_DIR")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %s: %v", path, strings.Join(args, " "), err)
		}
		return string(out)
	}
	m := checkVersion(t, "blockd", run(filepath.Join(prefix, "bin", "blockd"), "--version"))
	if m != nil && m[4] != "2026-01-01T00:00:00Z" {
		t.Errorf("installed blockd's build time %q, want SOURCE_DATE_EPOCH's", m[4])
	}
	checkVersion(t, "blockcat", run(filepath.Join(prefix, "bin", "blockcat"), "version"))
	pluginDir := filepath.Join(prefix, "lib", "blockxfer", "plugins")
	checkVersion(t, "blockxfer-provider-udmabuf", run(filepath.Join(pluginDir, "blockxfer-provider-udmabuf"), "--version"))

	var res struct { // docs/json.md
		Providers []struct {
			Name, Path string
			Unusable   string `json:"unusable_reason"`
		}
	}
	if err := json.Unmarshal([]byte(run(filepath.Join(prefix, "bin", "blockcat"), "providers", "--json")), &res); err != nil {
		t.Fatal(err)
	}
	infos := res.Providers
	found := map[string]string{}
	for _, i := range infos {
		found[i.Name] = i.Path
		if i.Name == "example" && i.Unusable != "" {
			t.Errorf("installed example provider unusable: %s", i.Unusable)
		}
	}
	for _, p := range []string{"example", "udmabuf", "gpu"} {
		if want := filepath.Join(pluginDir, "blockxfer-provider-"+p); found[p] != want {
			t.Errorf("installed blockcat providers: %s at %q, want %s (all: %v)", p, found[p], want, infos)
		}
	}

	for _, f := range []string{"share/bash-completion/completions/blockcat", "share/bash-completion/completions/blockd",
		"share/zsh/site-functions/_blockcat", "share/zsh/site-functions/_blockd"} {
		if b, err := os.ReadFile(filepath.Join(prefix, f)); err != nil || !strings.Contains(string(b), "--key-file") {
			t.Errorf("%s: %v", f, err)
		}
	}
	for _, prog := range []string{"blockd", "blockcat"} {
		b, err := os.ReadFile(filepath.Join(prefix, "share", "man", "man1", prog+".1"))
		if want := run(filepath.Join(prefix, "bin", prog), "man"); err != nil || string(b) != want {
			t.Errorf("installed man page of %s is not what '%s man' prints: %v", prog, prog, err)
		}
	}
	unit, err := os.ReadFile(filepath.Join(prefix, "lib", "systemd", "system", "blockd.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nExecStart="+filepath.Join(prefix, "bin", "blockd")+" serve --data /var/lib/blockxfer ") {
		t.Errorf("installed unit does not run %s/bin/blockd:\n%s", prefix, grepLines(string(unit), "Exec"))
	}
	agent, err := os.ReadFile(filepath.Join(prefix, "lib", "systemd", "system", "blockcat-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(agent), "\nExecStart="+filepath.Join(prefix, "bin", "blockcat")+" agent --socket ") {
		t.Errorf("installed agent unit does not run %s/bin/blockcat:\n%s", prefix, grepLines(string(agent), "Exec"))
	}
}

// withoutEnv returns the environment without the variable name.
func withoutEnv(name string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, name+"=") {
			env = append(env, kv)
		}
	}
	return env
}
