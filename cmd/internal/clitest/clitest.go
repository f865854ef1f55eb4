// Package clitest holds checks that blockd's and blockcat's tests share.
// Only tests import it.
package clitest

import (
	"bytes"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
)

// Leaf is a command that takes flags, with every flag its flag sets define.
type Leaf struct {
	Path  []string // command words after the program's name
	Flags []string // as completion offers them: -o, --key-file
}

// Leaves returns the commands of cmds (and their subcommands) that take
// flags, with their flags, read from the commands' own flag sets.
func Leaves(t *testing.T, cmds []cli.Command) []Leaf {
	t.Helper()
	var out []Leaf
	var visit func(path []string, cmds []cli.Command)
	visit = func(path []string, cmds []cli.Command) {
		for _, c := range cmds {
			p := append(slices.Clip(path), c.Name)
			if len(c.Runs) > 0 {
				l := Leaf{Path: p}
				for _, run := range c.Runs {
					fs, err := cli.DescribeFlags(run)
					if err != nil {
						t.Fatalf("%s: %v", strings.Join(p, " "), err)
					}
					fs.VisitAll(func(f *flag.Flag) {
						d := "--" + f.Name
						if len(f.Name) == 1 {
							d = "-" + f.Name
						}
						if !slices.Contains(l.Flags, d) {
							l.Flags = append(l.Flags, d)
						}
					})
				}
				slices.Sort(l.Flags)
				out = append(out, l)
			}
			visit(p, c.Sub)
		}
	}
	visit(nil, cmds)
	return out
}

// Script returns the completion script of prog for shell.
func Script(t *testing.T, shell, prog string, cmds []cli.Command) string {
	t.Helper()
	var b bytes.Buffer
	if err := cli.WriteCompletion(&b, shell, prog, cmds); err != nil {
		t.Fatalf("%s completion %s: %v", prog, shell, err)
	}
	return b.String()
}

// BashComplete runs prog's bash completion for each command line in lines
// (the words typed, the last being the one completed) and returns what it
// offers for each. It skips the test without bash.
func BashComplete(t *testing.T, script, prog string, lines [][]string) [][]string {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash:", err)
	}
	var sh strings.Builder
	sh.WriteString(script)
	for _, words := range lines {
		sh.WriteString("COMP_WORDS=(")
		for _, w := range append([]string{prog}, words...) {
			sh.WriteString(cli.ShellQuote(w) + " ")
		}
		sh.WriteString(")\nCOMP_CWORD=" + strconv.Itoa(len(words)) + "\n_" + prog + "\nprintf '%s ' \"${COMPREPLY[@]}\"\necho\n")
	}
	cmd := exec.Command("bash", "--norc", "--noprofile")
	cmd.Stdin = strings.NewReader(sh.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("bash: %v\n%s", err, stderr.String())
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(got) != len(lines) {
		t.Fatalf("bash printed %d lines for %d command lines:\n%s", len(got), len(lines), out)
	}
	res := make([][]string, len(got))
	for i, g := range got {
		res[i] = strings.Fields(g)
		slices.Sort(res[i])
	}
	return res
}

// CheckCompletion checks prog's completion scripts against its commands:
// bash offers exactly each command's flags after "--" (and its
// subcommands after a command that has them), and zsh's function for each
// command lists each of its flags and parses (when zsh is installed).
func CheckCompletion(t *testing.T, prog string, cmds []cli.Command) {
	t.Helper()
	leaves := Leaves(t, cmds)
	if len(leaves) < len(cmds) {
		t.Fatalf("%d commands with flags, fewer than the %d commands", len(leaves), len(cmds))
	}

	t.Run("bash", func(t *testing.T) {
		script := Script(t, "bash", prog, cmds)
		var lines [][]string
		for _, l := range leaves {
			lines = append(lines, append(slices.Clip(l.Path), "-"))
		}
		var names []string
		for _, c := range cmds {
			names = append(names, c.Name)
		}
		lines = append(lines, []string{""}, []string{"completion", ""})
		got := BashComplete(t, script, prog, lines)
		for i, l := range leaves {
			if !slices.Equal(got[i], l.Flags) {
				t.Errorf("%s %s -<TAB> offers %q, want the flags %q", prog, strings.Join(l.Path, " "), got[i], l.Flags)
			}
		}
		top := got[len(leaves)]
		for _, n := range append(names, "version", "completion", "help") {
			if !slices.Contains(top, n) {
				t.Errorf("%s <TAB> offers %q, without %s", prog, top, n)
			}
		}
		if sh := got[len(leaves)+1]; !slices.Equal(sh, []string{"bash", "zsh"}) {
			t.Errorf("%s completion <TAB> offers %q", prog, sh)
		}
	})

	t.Run("zsh", func(t *testing.T) {
		script := Script(t, "zsh", prog, cmds)
		for _, l := range leaves {
			fn := "_" + prog + "_" + strings.Join(l.Path, "_") + "() {\n"
			i := strings.Index(script, fn)
			if i < 0 {
				t.Errorf("zsh script has no %s", strings.TrimSpace(fn))
				continue
			}
			body, _, _ := strings.Cut(script[i:], "\n}\n")
			for _, f := range l.Flags {
				if !strings.Contains(body, "'"+f+"[") && !strings.Contains(body, "'"+f+"=[") {
					t.Errorf("zsh %s does not complete %s", strings.TrimSpace(fn), f)
				}
			}
		}
		if _, err := exec.LookPath("zsh"); err != nil {
			t.Log("no zsh to check the script's syntax:", err)
			return
		}
		path := filepath.Join(t.TempDir(), "_"+prog)
		if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("zsh", "-n", path).CombinedOutput(); err != nil {
			t.Errorf("zsh -n: %v\n%s", err, out)
		}
	})
}

// SourceFlags returns the names of the flags that the Go files of the
// package in dir (not its tests) define with a literal name, such as
// fs.Bool("json", ...) or fs.StringVar(&v, "key-file", ...): a check
// independent of the command list that every flag in the source is
// completed somewhere.
func SourceFlags(t *testing.T, dir string) []string {
	t.Helper()
	nameArg := map[string]int{
		"Bool": 0, "String": 0, "Int": 0, "Int64": 0, "Uint": 0, "Uint64": 0, "Float64": 0, "Duration": 0,
		"Func": 0, "BoolFunc": 0,
		"BoolVar": 1, "StringVar": 1, "IntVar": 1, "Int64Var": 1, "UintVar": 1, "Uint64Var": 1,
		"Float64Var": 1, "DurationVar": 1, "Var": 1, "TextVar": 1,
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	fset := token.NewFileSet()
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			i, ok := nameArg[sel.Sel.Name]
			if !ok || len(call.Args) < i+2 {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == "flag" {
				return true // the flag package's own functions: the command line of no subcommand
			}
			lit, ok := call.Args[i].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			if s, err := strconv.Unquote(lit.Value); err == nil {
				names = append(names, s)
			}
			return true
		})
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// updateMan makes CheckManPage write the man page instead of comparing it:
// go test ./cmd/blockd ./cmd/blockcat -run TestManPage -update-man
var updateMan = flag.Bool("update-man", false, "write docs/man/PROG.1 from the program's text instead of checking it")

// CheckManPage checks that the man page at path (docs/man/PROG.1) is what
// p.WriteMan writes now, so that it cannot drift from -h and help; with
// -update-man it writes the file instead. The environment variables that
// change flag defaults are cleared first. With groff installed, it checks
// that groff formats the page without a warning.
func CheckManPage(t *testing.T, p func() *cli.Program, path string) {
	t.Helper()
	for _, v := range []string{cli.DataEnv, cli.ServerEnv, cli.KeyEnv, cli.PluginDirEnv} {
		t.Setenv(v, "")
	}
	var b bytes.Buffer
	if err := p().WriteMan(&b); err != nil {
		t.Fatal(err)
	}
	if *updateMan {
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	old, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(old, b.Bytes()) {
		t.Errorf("%s is not what '%s man' prints (%v): run\n\tgo test ./cmd/%s -run TestManPage -update-man\n%s",
			path, p().Name, err, p().Name, firstDiff(string(old), b.String()))
	}
	if _, err := exec.LookPath("groff"); err != nil {
		t.Log("no groff to check the page:", err)
		return
	}
	cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = bytes.NewReader(b.Bytes())
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("groff -man -ww: %v\n%s", err, out)
	}
}

// firstDiff describes the first line where a and b differ.
func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d:\n\tfile: %q\n\tnow:  %q", i+1, x, y)
		}
	}
	return ""
}

// Runner runs one command line of a program in process and returns its
// exit status, stdout and stderr.
type Runner func(t *testing.T, args ...string) (code int, stdout, stderr string)

// byteDefault matches a default that help shows as a bare number.
var byteDefault = regexp.MustCompile(`\(default (\d+)\)`)

// CheckCommandHelp checks one command's help as -h (on stderr) or help
// (on stdout) printed it: it begins with "usage: " and the command's words,
// and no default is a bare byte count (a number above 1024: sizes show as
// 64MiB).
func CheckCommandHelp(t *testing.T, what, words, help string) {
	t.Helper()
	first, _, _ := strings.Cut(help, "\n")
	if first != "usage: "+words && !strings.HasPrefix(first, "usage: "+words+" ") {
		t.Errorf("%s: first line %q, want the synopsis \"usage: %s ...\"", what, first, words)
	}
	for _, m := range byteDefault.FindAllStringSubmatch(help, -1) {
		if n, err := strconv.ParseInt(m[1], 10, 64); err == nil && n > 1024 {
			t.Errorf("%s: %s: a byte count; show sizes as cli.FormatSize does (64MiB)", what, m[0])
		}
	}
}

// CheckHelp checks `PROG help`, `PROG -h`, `PROG help COMMAND`,
// `PROG COMMAND -h` and `PROG help TOPIC` for every command and topic of p,
// run by run.
func CheckHelp(t *testing.T, prog string, p *cli.Program, run Runner) {
	t.Helper()
	var usage strings.Builder
	if err := p.WriteUsage(&usage); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		if code, stdout, stderr := run(t, args...); code != 0 || stdout != usage.String() || stderr != "" {
			t.Errorf("%s %q: exit %d, stderr %q; stdout is the usage: %v", prog, args, code, stderr, stdout == usage.String())
		}
	}
	var visit func(path []string, cmds []cli.Command)
	visit = func(path []string, cmds []cli.Command) {
		for _, c := range cmds {
			p := append(slices.Clip(path), c.Name)
			if len(c.Sub) > 0 {
				visit(p, c.Sub)
				continue
			}
			words := prog + " " + strings.Join(p, " ")
			code, stdout, stderr := run(t, append([]string{"help"}, p...)...)
			if code != 0 || stderr != "" {
				t.Errorf("%s help %s: exit %d\n%s", prog, strings.Join(p, " "), code, stderr)
			}
			CheckCommandHelp(t, prog+" help "+strings.Join(p, " "), words, stdout)
			if c.Summary != "" && !strings.Contains(stdout, c.Summary[1:]) {
				t.Errorf("%s help %s does not say what it does (%q):\n%s", prog, strings.Join(p, " "), c.Summary, stdout)
			}
			code, _, stderr = run(t, append(p, "-h")...)
			if code != 0 {
				t.Errorf("%s -h: exit %d\n%s", words, code, stderr)
			}
			CheckCommandHelp(t, words+" -h", words, stderr)
			if !strings.Contains(usage.String(), "\n  "+words) {
				t.Errorf("the usage does not list %s", words)
			}
		}
	}
	visit(nil, append(slices.Clip(p.Commands), cli.Builtins(prog)...))
	for _, topic := range p.Topics {
		code, stdout, stderr := run(t, "help", topic.Name)
		if code != 0 || !strings.HasPrefix(stdout, topic.Name+": ") || len(stdout) < 200 {
			t.Errorf("%s help %s: exit %d\n%s%s", prog, topic.Name, code, stdout, stderr)
		}
		if !strings.Contains(usage.String(), "\n  "+topic.Name+" ") {
			t.Errorf("the usage does not list the topic %s", topic.Name)
		}
	}
	if code, _, stderr := run(t, "help", "no-such-thing"); code != 2 || !strings.Contains(stderr, "no command or topic") {
		t.Errorf("%s help no-such-thing: exit %d\n%s", prog, code, stderr)
	}
}

// CheckVersion checks that --version, -version and version print prog's
// version, revision and Go version, that version --json names prog, and
// that version refuses an argument or a flag it does not take (exit 2).
func CheckVersion(t *testing.T, prog string, run Runner) {
	t.Helper()
	re := regexp.MustCompile(`^` + prog + ` version \S+\nrevision   \S+\n(committed  \S+\n)?(built      \S+\n)?go         go\S+ \S+\n$`)
	for _, args := range [][]string{{"--version"}, {"-version"}, {"version"}} {
		code, stdout, stderr := run(t, args...)
		if code != 0 || !re.MatchString(stdout) {
			t.Errorf("%q: exit %d\n%s%s", args, code, stdout, stderr)
		}
	}
	if code, stdout, _ := run(t, "version", "--json"); code != 0 || !strings.Contains(stdout, `"program": "`+prog+`"`) {
		t.Errorf("version --json: exit %d\n%s", code, stdout)
	}
	for _, bad := range []string{"extra", "--bogus"} {
		if code, _, _ := run(t, "version", bad); code != 2 {
			t.Errorf("version %s: exit %d, want 2", bad, code)
		}
	}
}
