// Package clitest holds checks that blockd's and blockcat's tests share.
// Only tests import it.
package clitest

import (
	"bytes"
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
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
