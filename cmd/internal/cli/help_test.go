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

func TestFormatSize(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0"}, {1000, "1000"}, {1024, "1KiB"}, {4096, "4KiB"}, {64 << 20, "64MiB"}, {256 << 20, "256MiB"},
		{3 << 30, "3GiB"}, {1 << 40, "1TiB"}, {1<<20 + 1, "1048577"}, {1536, "1536"},
	} {
		if got := FormatSize(tc.n); got != tc.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tc.n, got, tc.want)
		}
		if n, err := ParseSize(FormatSize(tc.n)); err != nil || n != tc.n {
			t.Errorf("ParseSize(FormatSize(%d)) = %d, %v", tc.n, n, err)
		}
	}
}

// helpFlagSet is a command with flags of every kind help shows.
func helpFlagSet(out io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("prog get", flag.ContinueOnError)
	fs.SetOutput(out)
	window := SizeFlag(64 << 20)
	fs.Var(&window, "window", "bytes per request")
	var length SizeFlag
	fs.Var(&length, "length", "bytes to fetch")
	fs.Duration("timeout", 0, "give up after this long")
	fs.Int("depth", 4, "requests in flight")
	fs.String("log-level", "warn", "log level")
	o := fs.String("o", "", "write to `FILE`,\nor - for stdout")
	fs.Bool("json", false, "print JSON")
	Alias(fs, "concurrency", "depth")
	return fs, o
}

// TestHelpText: -h prints the synopsis first, the paragraphs about the
// command, then the flags with -- and their defaults, sizes as sizes and
// hidden flags left out.
func TestHelpText(t *testing.T) {
	var out bytes.Buffer
	fs, _ := helpFlagSet(&out)
	if _, err := Parse(fs, []string{"-h"}, 1, "VOLUME [--json]\n\nFetches VOLUME."); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	want := `usage: prog get VOLUME [--json]

Fetches VOLUME.

Flags:
  --depth int
        requests in flight (default 4)
  --json
        print JSON
  --length size
        bytes to fetch
  --log-level string
        log level (default "warn")
  -o FILE
        write to FILE,
        or - for stdout
  --timeout duration
        give up after this long
  --window size
        bytes per request (default 64MiB)
`
	if out.String() != want {
		t.Errorf("-h printed\n%s\nwant\n%s", out.String(), want)
	}
}

// TestHelpWins: -h anywhere before "--" prints the help, whatever else is
// wrong on the command line; a flag's value "-h" is a value.
func TestHelpWins(t *testing.T) {
	for _, tc := range []struct {
		args []string
		help bool
	}{
		{[]string{"--bogus", "-h"}, true},
		{[]string{"--timeout", "5", "--help"}, true},
		{[]string{"a", "b", "c", "-help"}, true},
		{[]string{"-o", "-h", "vol"}, false},
		{[]string{"vol", "--", "-h"}, false},
	} {
		var out bytes.Buffer
		fs, o := helpFlagSet(&out)
		_, err := Parse(fs, tc.args, 1, "VOLUME")
		if got := errors.Is(err, flag.ErrHelp); got != tc.help || got != strings.HasPrefix(out.String(), "usage: prog get VOLUME\n") {
			t.Errorf("%q: %v, printed %q", tc.args, err, out.String())
		}
		if !tc.help && tc.args[0] == "-o" && *o != "-h" {
			t.Errorf("%q: -o %q", tc.args, *o)
		}
	}
}

// fakeProgram is a program with a command, a group and a topic.
func fakeProgram() *Program {
	return &Program{
		Name: "prog", Title: "do things", Intro: "prog does things.", Commands: fakeCommands(),
		Notes:   "Notes: -x means\n  an example line\n.dot at the start",
		Topics:  []Topic{{Name: "things", Summary: "what things are", Text: "Things are\nthings."}},
		SeeAlso: "other(1)",
	}
}

func TestHelp(t *testing.T) {
	p := fakeProgram()
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := Help(p, args, &out, io.Discard)
		return out.String(), err
	}
	usage, err := run()
	for _, want := range []string{"prog does things.\n\nUsage:\n  prog fetch SERVER VOLUME\n  prog fetch --manifest FILE\n      fetch: a volume's bytes\n",
		"  prog vol create NAME\n      create one\n", "  prog man\n", "Notes: -x", "\n  things        what things are\n"} {
		if err != nil || !strings.Contains(usage, want) {
			t.Errorf("help: %v, lacks %q:\n%s", err, want, usage)
		}
	}
	if out, err := run("fetch"); err != nil || !strings.HasPrefix(out, "usage: prog fetch SERVER VOLUME\n\nFetch: a volume's bytes.\n") ||
		!strings.Contains(out, "\nusage: prog fetch --manifest FILE\n") || !strings.Contains(out, "  --manifest string\n") {
		t.Errorf("help fetch: %v\n%s", err, out)
	}
	if out, err := run("vol"); err != nil || !strings.Contains(out, "usage: prog vol COMMAND") || !strings.Contains(out, "  prog vol create NAME\n") {
		t.Errorf("help vol: %v\n%s", err, out)
	}
	if out, err := run("vol", "create"); err != nil || !strings.HasPrefix(out, "usage: prog vol create NAME\n\nCreate one.\n") {
		t.Errorf("help vol create: %v\n%s", err, out)
	}
	if out, err := run("things"); err != nil || out != "things: what things are\n\nThings are\nthings.\n" {
		t.Errorf("help things: %v\n%q", err, out)
	}
	for _, args := range [][]string{{"nope"}, {"vol", "nope"}, {"fetch", "x"}, {"a", "b", "c"}} {
		if _, err := run(args...); !errors.Is(err, ErrUsage) {
			t.Errorf("help %q: %v, want a usage error", args, err)
		}
	}
}

func TestMan(t *testing.T) {
	var b bytes.Buffer
	if err := Man(fakeProgram(), nil, &b, io.Discard); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{
		".TH PROG 1 ", ".SH NAME\nprog \\- do things\n", "prog vol create NAME\n", ".SS \"prog fetch SERVER VOLUME\"\n",
		".TP\n\\fB\\-\\-timeout\\fR \\fIduration\\fR\ngive up after: this long\n", "\\-x means\n.nf\n.RS 2\nan example line\n.RE\n.fi\n\\&.dot",
		".SH \"THINGS\"\n.PP\nThings are\nthings.\n", ".SH \"SEE ALSO\"\n.PP\nother(1)\n",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("man page lacks %q:\n%s", want, page)
		}
	}
	if _, err := exec.LookPath("groff"); err == nil {
		cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin = &b
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("groff: %v\n%s", err, out)
		}
	}
	if err := Man(fakeProgram(), []string{"extra"}, io.Discard, io.Discard); !errors.Is(err, ErrUsage) {
		t.Errorf("man extra: %v", err)
	}
}
