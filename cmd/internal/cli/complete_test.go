package cli

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// fakeCommands is a small program: a command with flags of two kinds, one
// that picks one of two flag sets, and one with subcommands.
func fakeCommands() []Command {
	fetch := func(args []string) error {
		fs := flag.NewFlagSet("prog fetch", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Bool("json", false, "print JSON")
		fs.String("o", "", "write to `FILE` [or -]\nsecond line")
		fs.Duration("timeout", 0, "give up after: this long")
		_, err := ParseServer(fs, args, 2, "SERVER VOLUME")
		return UsageErr(err)
	}
	striped := func(args []string) error {
		fs := flag.NewFlagSet("prog fetch", flag.ContinueOnError)
		fs.String("manifest", "", "manifest file")
		fs.Bool("json", false, "print JSON")
		_, err := ParseRange(fs, args, 0, 1, "--manifest FILE")
		return UsageErr(err)
	}
	create := func(args []string) error {
		fs := flag.NewFlagSet("prog vol create", flag.ContinueOnError)
		var dir string
		DataDirFlag(fs, &dir, "data directory")
		fs.String("size", "", "size")
		_, err := Parse(fs, args, 1, "NAME")
		return err
	}
	return []Command{
		{Name: "fetch", Summary: "fetch: a volume's bytes", Runs: []func([]string) error{fetch, striped}},
		{Name: "vol", Summary: "manage volumes", Sub: []Command{
			{Name: "create", Summary: "create one", Runs: []func([]string) error{create}},
		}},
	}
}

func TestDescribeFlags(t *testing.T) {
	fs, err := DescribeFlags(fakeCommands()[0].Runs[0])
	if err != nil {
		t.Fatal(err)
	}
	if fs.Name() != "prog fetch" || fs.Lookup("timeout") == nil || fs.Parsed() {
		t.Errorf("described %s, parsed %v", fs.Name(), fs.Parsed())
	}
	if _, err := DescribeFlags(func([]string) error { return errors.New("did something") }); err == nil {
		t.Error("a command that does not parse was described")
	}
}

func TestBashCompletion(t *testing.T) {
	var b bytes.Buffer
	if err := WriteCompletion(&b, "bash", "prog", fakeCommands()); err != nil {
		t.Fatal(err)
	}
	script := b.String()
	for _, want := range []string{
		`"fetch")` + "\n" + `        flags="--json --manifest -o --timeout"` + "\n" + `        valueflags="manifest o timeout"`,
		`"vol")` + "\n" + `        flags=""` + "\n" + `        words="create"`,
		`"vol create")` + "\n" + `        flags="--data --size"`,
		`"version")` + "\n" + `        flags="--json"`,
		`"completion")` + "\n" + `        flags=""` + "\n" + `        words="bash zsh"`,
		"complete -o default -F _prog prog\n",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("script lacks\n%s\n---\n%s", want, script)
		}
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash:", err)
	}
	for _, tc := range []struct {
		words []string // typed; the last is completed
		want  string
	}{
		{[]string{""}, "completion fetch help man version vol"},
		{[]string{"--v"}, "--version"},
		{[]string{"fetch", "-"}, "--json --manifest --timeout -o"},
		{[]string{"fetch", "--json", "srv", "--t"}, "--timeout"},
		{[]string{"fetch", "--timeout", ""}, ""}, // a value: file names (complete -o default)
		{[]string{"fetch", "--timeout=", ""}, ""},
		{[]string{"vol", ""}, "create"},
		{[]string{"vol", "create", "--"}, "--data --size"},
		{[]string{"vol", "create", "--data", "d", "--s"}, "--size"},
		{[]string{"completion", "z"}, "zsh"},
		{[]string{"version", "-"}, "--json"},
	} {
		var sh strings.Builder
		sh.WriteString(script + "COMP_WORDS=(prog")
		for _, w := range tc.words {
			sh.WriteString(" " + ShellQuote(w))
		}
		sh.WriteString(")\nCOMP_CWORD=" + string(rune('0'+len(tc.words))) + "\n_prog\necho \"${COMPREPLY[*]}\"\n")
		cmd := exec.Command("bash", "--norc", "--noprofile")
		cmd.Stdin = strings.NewReader(sh.String())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		got := strings.Fields(string(out))
		if strings.Join(sortStrings(got), " ") != tc.want {
			t.Errorf("prog %s<TAB> offers %q, want %q", strings.Join(tc.words, " "), got, tc.want)
		}
	}
}

func sortStrings(s []string) []string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

func TestZshCompletion(t *testing.T) {
	var b bytes.Buffer
	if err := WriteCompletion(&b, "zsh", "prog", fakeCommands()); err != nil {
		t.Fatal(err)
	}
	script := b.String()
	for _, want := range []string{
		"#compdef prog\n",
		"compdef _prog prog\n",
		`'fetch:fetch: a volume'\''s bytes'`,
		`'(- *)--version[print the version]'`,
		"(fetch) _prog_fetch ;;",
		"(vol) _prog_vol ;;",
		"(create) _prog_vol_create ;;",
		`'--json[print JSON]'`,
		`'-o=[write to FILE \[or -\]]:o:_files'`, // first line only, brackets escaped
		`'--timeout=[give up after: this long]:timeout:_files'`,
		`'--manifest=[manifest file]:manifest:_files'`,
		`'--data=[data directory (required; default $BLOCKXFER_DATA)]:data:_files'`,
		`'*: :(bash zsh)'`,
		"_prog_version() {\n  _arguments -S \\\n    '--json[print JSON]'",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("script lacks %s\n---\n%s", want, script)
		}
	}
	if _, err := exec.LookPath("zsh"); err != nil {
		t.Skip("no zsh:", err)
	}
	cmd := exec.Command("zsh", "-n")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("zsh -n: %v\n%s", err, out)
	}
}

func TestCompletionCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if err := Completion("prog", fakeCommands(), []string{"bash"}, &out, &errb); err != nil || !strings.Contains(out.String(), "_prog()") {
		t.Errorf("completion bash: %v\n%s", err, errb.String())
	}
	for _, args := range [][]string{{}, {"fish"}, {"bash", "zsh"}} {
		err := Completion("prog", fakeCommands(), args, io.Discard, io.Discard)
		if ExitCode("prog", err, io.Discard) != 2 {
			t.Errorf("completion %q: %v, want a usage error", args, err)
		}
	}
	errb.Reset()
	if err := Completion("prog", nil, []string{"-h"}, io.Discard, &errb); !errors.Is(err, flag.ErrHelp) || !strings.Contains(errb.String(), "source <(prog completion bash)") {
		t.Errorf("completion -h: %v\n%s", err, errb.String())
	}
}
