package main

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/cmd/internal/clitest"
)

// TestVersion: --version and version print the version, revision and Go
// version; version takes only --json.
func TestVersion(t *testing.T) { clitest.CheckVersion(t, "blockd", runBlockd) }

// TestBuildInfoMetric: blockd_build_info{version,revision,goversion} 1.
func TestBuildInfoMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	registerBuildInfo(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "blockd_build_info" || len(mfs[0].Metric) != 1 {
		t.Fatalf("gathered %v", mfs)
	}
	m := mfs[0].Metric[0]
	labels := map[string]string{}
	for _, l := range m.Label {
		labels[l.GetName()] = l.GetValue()
	}
	if m.GetGauge().GetValue() != 1 || labels["version"] != buildInfo.Version || labels["revision"] != buildInfo.Rev() ||
		labels["goversion"] != buildInfo.GoVersion || len(labels) != 3 {
		t.Errorf("blockd_build_info %v = %v", labels, m.GetGauge().GetValue())
	}
}

// TestCompletion: the scripts complete every flag of every command and
// subcommand, read from their own flag sets.
func TestCompletion(t *testing.T) {
	clitest.CheckCompletion(t, "blockd", commands())
	script := clitest.Script(t, "bash", "blockd", commands())
	for _, name := range clitest.SourceFlags(t, ".") {
		d := "--" + name
		if len(name) == 1 {
			d = "-" + name
		}
		if !regexp.MustCompile(`flags="[^"]*` + regexp.QuoteMeta(d) + `[ "]`).MatchString(script) {
			t.Errorf("flag %s is not completed", d)
		}
	}
	got := clitest.BashComplete(t, script, "blockd", [][]string{{"volume", ""}, {"catalog", ""}})
	if want := []string{"create", "import", "inspect", "list", "rm"}; !slices.Equal(got[0], want) {
		t.Errorf("blockd volume <TAB>: %q, want %q", got[0], want)
	}
	if want := []string{"backup", "check", "migrate", "recover"}; !slices.Equal(got[1], want) {
		t.Errorf("blockd catalog <TAB>: %q, want %q", got[1], want)
	}
}

// usageText returns the usage -h prints.
func usageText(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	if err := program().WriteUsage(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestCommandsMatchUsage: commands() and the usage text list the same
// commands and subcommands.
func TestCommandsMatchUsage(t *testing.T) {
	var inUsage []string
	for _, m := range regexp.MustCompile(`(?m)^  blockd ([a-z]+)(?: (create|import|list|inspect|rm|check|recover|migrate|backup)\b)?`).FindAllStringSubmatch(usageText(t), -1) {
		inUsage = append(inUsage, strings.TrimSpace(m[1]+" "+m[2]))
	}
	slices.Sort(inUsage)
	inUsage = slices.Compact(inUsage)
	listed := []string{"completion", "help", "man", "version"}
	for _, c := range commands() {
		if len(c.Sub) == 0 {
			listed = append(listed, c.Name)
		}
		for _, s := range c.Sub {
			listed = append(listed, c.Name+" "+s.Name)
		}
	}
	slices.Sort(listed)
	if !slices.Equal(inUsage, listed) {
		t.Errorf("usage lists %q,\ncommands() and the built-ins %q", inUsage, listed)
	}
}

// TestDataFromEnv: $BLOCKXFER_DATA is --data's default.
func TestDataFromEnv(t *testing.T) {
	t.Setenv(cli.DataEnv, "")
	if code, _, stderr := runBlockd(t, "volume", "list"); code != 2 || !strings.Contains(stderr, "$"+cli.DataEnv) {
		t.Errorf("volume list without --data: exit %d\n%s", code, stderr)
	}
	dir := t.TempDir()
	t.Setenv(cli.DataEnv, dir)
	if code, _, stderr := runBlockd(t, "volume", "create", "v1", "--size", "4KiB"); code != 0 {
		t.Fatalf("volume create with $%s: exit %d\n%s", cli.DataEnv, code, stderr)
	}
	if code, stdout, stderr := runBlockd(t, "volume", "list", "--data", dir); code != 0 || !strings.Contains(stdout, "v1") {
		t.Errorf("volume list --data: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := runBlockd(t, "catalog", "check"); code != 0 {
		t.Errorf("catalog check with $%s: exit %d\n%s%s", cli.DataEnv, code, stdout, stderr)
	}
	c, err := parseServeFlags(nil, nil)
	if err != nil || c.dataDir != dir {
		t.Errorf("serve with $%s: %+v, %v", cli.DataEnv, c, err)
	}
	_, stdout, _ := runBlockd(t, "help")
	if !strings.Contains(stdout, cli.DataEnv) {
		t.Errorf("blockd help does not mention $%s", cli.DataEnv)
	}
}

// TestServeDefaultPort: --listen and --advertise without a port get 7070.
func TestServeDefaultPort(t *testing.T) {
	d := t.TempDir()
	for _, tc := range []struct{ listen, want string }{
		{"", "127.0.0.1:7070"}, {"0.0.0.0", "0.0.0.0:7070"}, {"[::1]", "[::1]:7070"}, {"::", "[::]:7070"},
		{"127.0.0.1:0", "127.0.0.1:0"}, {":9000", ":9000"},
	} {
		args := []string{"--data", d}
		if tc.listen != "" {
			args = append(args, "--listen", tc.listen)
		}
		c, err := parseServeFlags(args, nil)
		if err != nil || c.listen != tc.want {
			t.Errorf("--listen %q: %+v, %v; want %s", tc.listen, c, err, tc.want)
		}
	}
	c, err := parseServeFlags([]string{"--data", d, "--etcd", "192.0.2.1:2379", "--advertise", "node1"}, nil)
	if err != nil || c.cluster.advertise != "node1:7070" {
		t.Errorf("--advertise node1: %+v, %v", c, err)
	}
	for _, args := range [][]string{{"--listen", "host:"}, {"--listen", "a:b:c"}, {"--etcd", "192.0.2.1:2379", "--advertise", "[::1"}} {
		if code, _, stderr := runBlockd(t, append([]string{"serve", "--data", d}, args...)...); code != 2 {
			t.Errorf("serve %q: exit %d, want 2\n%s", args, code, stderr)
		}
	}
}

// TestScrubSpareDefaultPort: --spare addresses get the default port.
func TestScrubSpareDefaultPort(t *testing.T) {
	f, err := parseScrubFlags([]string{"--manifest", "m", "--spare", "a, b:9000"}, nil)
	if err != nil || !slices.Equal(f.spares, []string{"a:7070", "b:9000"}) {
		t.Errorf("--spare a,b:9000: %+v, %v", f, err)
	}
	if code, _, _ := runBlockd(t, "scrub", "--manifest", "m", "--spare", "a:"); code != 2 {
		t.Errorf("--spare a: exit %d, want 2", code)
	}
}
