package cli

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

// TestFlagErrors: a mistake on the command line is one error naming the
// flag as typed and the value it wants; the flag package prints nothing.
func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--timeout", "5"}, `invalid value "5" for --timeout: a duration needs a unit, e.g. 5s`},
		{[]string{"--timeout", "soon"}, `invalid value "soon" for --timeout: want a duration such as 500ms, 30s, 5m or 1h30m`},
		{[]string{"--timeout"}, `--timeout needs a value`},
		{[]string{"--num", "x"}, `invalid value "x" for --num: want a whole number`},
		{[]string{"--num", "99999999999999999999"}, `invalid value "99999999999999999999" for --num: out of range`},
		{[]string{"--count", "-1"}, `invalid value "-1" for --count: want a whole number, 0 or more`},
		{[]string{"--yes=maybe"}, `invalid value "maybe" for --yes: want true or false`},
		{[]string{"--size", "1Q"}, `invalid value "1Q" for --size: want a byte count such as 4096, 64KiB or 1GiB`},
		{[]string{"-o"}, `-o needs a value`},
		{[]string{"--nope"}, `unknown flag --nope`},
		{[]string{"a", "b"}, `usage: prog cmd ARG`},
	} {
		var out bytes.Buffer
		fs := flag.NewFlagSet("prog cmd", flag.ContinueOnError)
		fs.SetOutput(&out)
		fs.Duration("timeout", 0, "")
		fs.Int("num", 0, "")
		fs.Uint64("count", 0, "")
		fs.Bool("yes", false, "")
		fs.String("o", "", "")
		var size SizeFlag
		fs.Var(&size, "size", "")
		_, err := Parse(fs, tc.args, 1, "ARG")
		var fe *FlagError
		if !errors.As(err, &fe) || fe.Cmd != "prog cmd" || err.Error() != tc.want {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
		if out.Len() != 0 {
			t.Errorf("%q: the flag package printed %q", tc.args, out.String())
		}
		var stderr bytes.Buffer
		if code := ExitCode("prog", UsageErr(err), &stderr); code != 2 || stderr.String() != "prog: "+tc.want+"\nrun 'prog cmd -h' for help\n" {
			t.Errorf("%q: exit %d, printed %q", tc.args, code, stderr.String())
		}
	}
}

// TestHelpHidesAliases: -h prints the usage without hidden flags; an alias
// sets the flag it stands for.
func TestHelpHidesAliases(t *testing.T) {
	var out bytes.Buffer
	fs := flag.NewFlagSet("prog cmd", flag.ContinueOnError)
	fs.SetOutput(&out)
	depth := fs.Int("depth", 4, "requests in flight")
	Alias(fs, "concurrency", "depth")
	var ignored string
	fs.StringVar(&ignored, "keep", "", "a flag -h lists")
	Hidden(fs, flagString{&ignored}, "provider", "ignored")
	if _, err := Parse(fs, []string{"-h"}, 0, ""); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	if h := out.String(); !strings.Contains(h, "-depth") || !strings.Contains(h, "-keep") ||
		strings.Contains(h, "concurrency") || strings.Contains(h, "provider") || strings.Contains(h, "panic") {
		t.Errorf("-h printed:\n%s", h)
	}
	if _, err := Parse(fs, []string{"--concurrency", "9", "--provider", "x"}, 0, ""); err != nil || *depth != 9 || ignored != "x" {
		t.Errorf("--concurrency 9: %v, depth %d", err, *depth)
	}
}

type flagString struct{ p *string }

func (f flagString) String() string {
	if f.p == nil {
		return ""
	}
	return *f.p
}
func (f flagString) Set(s string) error { *f.p = s; return nil }

func TestPlural(t *testing.T) {
	if a, b, c := Plural(1, "data connection"), Plural(0, "data connection"), Plural(4, "extent"); a != "1 data connection" ||
		b != "0 data connections" || c != "4 extents" {
		t.Errorf("%q %q %q", a, b, c)
	}
}
