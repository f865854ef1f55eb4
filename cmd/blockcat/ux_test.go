package main

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/cmd/internal/clitest"
)

// TestVersion: --version and version print the version, revision and Go
// version; version takes only --json.
func TestVersion(t *testing.T) { clitest.CheckVersion(t, "blockcat", runBlockcat) }

// TestCompletion: the scripts complete every flag of every command, read
// from the commands' own flag sets.
func TestCompletion(t *testing.T) {
	clitest.CheckCompletion(t, "blockcat", commands())
	for _, shell := range []string{"bash", "zsh"} {
		code, stdout, stderr := runBlockcat(t, "completion", shell)
		if code != 0 || !strings.Contains(stdout, "_blockcat") {
			t.Errorf("completion %s: exit %d\n%s", shell, code, stderr)
		}
	}
	if code, _, _ := runBlockcat(t, "completion", "fish"); code != 2 {
		t.Errorf("completion fish: exit %d, want 2", code)
	}
}

// TestCompletionCoversSource: every flag that blockcat's source defines
// is completed, so a command missing from commands() shows here too.
func TestCompletionCoversSource(t *testing.T) {
	script := clitest.Script(t, "bash", "blockcat", commands())
	names := clitest.SourceFlags(t, ".")
	if len(names) < 20 {
		t.Fatalf("found only %d flags in the source: %q", len(names), names)
	}
	for _, name := range names {
		d := "--" + name
		if len(name) == 1 {
			d = "-" + name
		}
		if !regexp.MustCompile(`flags="[^"]*` + regexp.QuoteMeta(d) + `[ "]`).MatchString(script) {
			t.Errorf("flag %s is not completed", d)
		}
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
// commands.
func TestCommandsMatchUsage(t *testing.T) {
	var inUsage []string
	for _, m := range regexp.MustCompile(`(?m)^  blockcat ([a-z]+)`).FindAllStringSubmatch(usageText(t), -1) {
		inUsage = append(inUsage, m[1])
	}
	slices.Sort(inUsage)
	inUsage = slices.Compact(inUsage)
	listed := []string{"completion", "help", "man", "version"}
	for _, c := range commands() {
		listed = append(listed, c.Name)
	}
	slices.Sort(listed)
	if !slices.Equal(inUsage, listed) {
		t.Errorf("usage lists %q, commands() and the built-ins %q", inUsage, listed)
	}
	for _, name := range listed {
		if code, _, stderr := runBlockcat(t, name, "-h"); code != 0 {
			t.Errorf("%s -h: exit %d\n%s", name, code, stderr)
		}
	}
}

// TestServerFromEnv: with $BLOCKXFER_SERVER set, SERVER may be left out;
// an address without a port gets 7070.
func TestServerFromEnv(t *testing.T) {
	t.Setenv(cli.ServerEnv, "")
	f, err := parseGetFlags([]string{"myhost", "weights", "--json"}, nil)
	if err != nil || f.server != "myhost:7070" || f.volume != "weights" {
		t.Fatalf("get myhost weights: %+v, %v", f, err)
	}
	if _, err := parseGetFlags([]string{"weights"}, nil); err == nil || !strings.Contains(err.Error(), cli.ServerEnv) {
		t.Errorf("get weights without $%s: %v", cli.ServerEnv, err)
	}
	for _, args := range [][]string{{"ls"}, {"get", "weights"}, {"bench", "weights"}, {"upload", "name", "file"}, {"get", "h:x", "v"}, {"ls", "[::1"}} {
		if code, _, stderr := runBlockcat(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2\n%s", args, code, stderr)
		}
	}

	t.Setenv(cli.ServerEnv, "[2001:db8::1]")
	f, err = parseGetFlags([]string{"weights", "--offset", "4KiB"}, nil)
	if err != nil || f.server != "[2001:db8::1]:7070" || f.volume != "weights" || f.offset != 4096 {
		t.Errorf("get weights with $%s: %+v, %v", cli.ServerEnv, f, err)
	}
	f, err = parseGetFlags([]string{"other:9000", "weights"}, nil)
	if err != nil || f.server != "other:9000" || f.volume != "weights" {
		t.Errorf("get other:9000 weights with $%s: %+v, %v", cli.ServerEnv, f, err)
	}

	_, stdout, _ := runBlockcat(t, "-h")
	for _, want := range []string{cli.ServerEnv, "defaults\nto 7070", "version", "completion bash|zsh"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("blockcat -h does not mention %q", want)
		}
	}
}

// TestPeersDefaultPort: put's --peers get the default port.
func TestPeersDefaultPort(t *testing.T) {
	f, err := parsePutFlags([]string{"file", "--name", "v", "--ec", "2+1", "--manifest", "m", "--peers", "a,b:9000,[::1]"}, nil)
	if err != nil || f.peers != "a:7070,b:9000,[::1]:7070" {
		t.Fatalf("--peers: %+v, %v", f, err)
	}
	if _, err := parsePutFlags([]string{"file", "--name", "v", "--ec", "2+1", "--manifest", "m", "--peers", "a,b:x"}, nil); err == nil {
		t.Error("--peers a,b:x accepted")
	}
}
