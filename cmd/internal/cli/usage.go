package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// FlagError is a mistake on a command's command line found while parsing
// it: a flag that does not exist, a flag without its value, a value that
// does not parse, or the wrong number of arguments. Its message is one
// line; ExitCode prints it once, followed by a hint to run the command
// with -h (never the whole usage).
type FlagError struct {
	Cmd string // the command, such as "blockcat get"
	Err error
}

// Error returns the one-line message.
func (e *FlagError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *FlagError) Unwrap() error { return e.Err }

// CmdUsageErr marks err as a command-line mistake of the command fs
// parses, like UsageErr, and has ExitCode follow it with a hint to run
// that command with -h.
func CmdUsageErr(fs *flag.FlagSet, err error) error {
	if err == nil {
		return nil
	}
	return UsageErr(&FlagError{Cmd: fs.Name(), Err: err})
}

// parseFlags runs fs.Parse without letting the flag package print
// anything: a mistake comes back as one *FlagError (the flag package
// would print it, then the whole usage, and the command print it again),
// and -h prints the command's help (WriteHelp with usage, hidden flags left
// out) and returns flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string, usage string) error {
	out, fsUsage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = fsUsage
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		PrintUsage(fs, usage)
		return err
	}
	return &FlagError{Cmd: fs.Name(), Err: explainFlagError(fs, err)}
}

// PrintUsage prints fs's help as -h does, to fs's output: WriteHelp's
// text for usage (see Parse). A Usage function set on fs is not used: the
// text belongs in usage, where help and the man page find it too.
func PrintUsage(fs *flag.FlagSet, usage string) {
	WriteHelp(fs.Output(), fs, usage)
}

// helpRequested reports whether args ask for help (-h, -help or --help)
// anywhere before a "--", so that -h wins over every other mistake on the
// command line: it skips the values of the flags of fs that take one, so
// that "-o -h" names a file.
func helpRequested(fs *flag.FlagSet, args []string) bool {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return false
		}
		if len(a) < 2 || a[0] != '-' {
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		if (name == "h" || name == "help") && !hasValue && fs.Lookup(name) == nil {
			return true
		}
		if f := fs.Lookup(name); f != nil && !hasValue && !isBool(f) {
			i++ // its value
		}
	}
	return false
}

// isBool reports whether f is a boolean flag, which takes no value.
func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// isHidden reports whether f is a flag -h does not list (Hidden, Alias).
func isHidden(f *flag.Flag) bool {
	_, hidden := f.Value.(*hiddenValue)
	return hidden
}

// hiddenValue is a flag that -h does not list.
type hiddenValue struct{ flag.Value }

// String implements flag.Value; the zero hiddenValue, which -h makes to
// tell a default from the zero value, is "".
func (h *hiddenValue) String() string {
	if h.Value == nil {
		return ""
	}
	return h.Value.String()
}

// IsBoolFlag passes on the wrapped value's, so that a hidden boolean flag
// still needs no value.
func (h *hiddenValue) IsBoolFlag() bool {
	b, ok := h.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// Get passes on the wrapped value's, when it has one.
func (h *hiddenValue) Get() any {
	if g, ok := h.Value.(flag.Getter); ok {
		return g.Get()
	}
	return h.Value.String()
}

// Alias defines the flag name on fs as another name of the flag target
// (already defined): setting either sets the same value. -h does not list
// the alias, so target stays the documented name.
func Alias(fs *flag.FlagSet, name, target string) {
	t := fs.Lookup(target)
	fs.Var(&hiddenValue{t.Value}, name, "same as -"+target)
}

// Hidden defines a flag that is accepted and not listed by -h.
func Hidden(fs *flag.FlagSet, v flag.Value, name, usage string) {
	fs.Var(&hiddenValue{v}, name, usage)
}

// invalidValue matches the flag package's message for a value that did
// not parse.
var invalidValue = regexp.MustCompile(`^invalid (?:boolean )?value ("(?:[^"\\]|\\.)*") for (?:flag )?-([^:]+): (.*)$`)

// explainFlagError rewrites the flag package's message into one that
// names the flag as it is written (--name) and says what value it wants.
func explainFlagError(fs *flag.FlagSet, err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return fmt.Errorf("unknown flag %s", Dashed(name))
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Errorf("%s needs a value", Dashed(name))
	}
	if m := invalidValue.FindStringSubmatch(msg); m != nil {
		val, uerr := strconv.Unquote(m[1])
		if uerr != nil {
			val = m[1]
		}
		return fmt.Errorf("invalid value %s for %s: %s", m[1], Dashed(m[2]), wantValue(fs.Lookup(m[2]), val, m[3]))
	}
	if name, ok := strings.CutPrefix(msg, "invalid boolean flag "); ok {
		name, _, _ = strings.Cut(name, ":")
		return fmt.Errorf("invalid value for %s: want true or false", Dashed(name))
	}
	return err
}

// wantValue says what value flag f wants, given the value val that did not
// parse and the reason its Set gave.
func wantValue(f *flag.Flag, val, reason string) string {
	if f == nil {
		return reason
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return reason
	}
	switch g.Get().(type) {
	case time.Duration:
		if _, err := strconv.ParseFloat(val, 64); err == nil {
			return fmt.Sprintf("a duration needs a unit, e.g. %ss", val)
		}
		return "want a duration such as 500ms, 30s, 5m or 1h30m"
	case bool:
		return "want true or false"
	case int, int64:
		if reason == "value out of range" {
			return "out of range"
		}
		return "want a whole number"
	case uint, uint64:
		if reason == "value out of range" {
			return "out of range"
		}
		return "want a whole number, 0 or more"
	case float64:
		return "want a number"
	}
	return reason
}

// Dashed writes a flag's name as it is typed: --name, or -o for a
// one-letter name.
func Dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// Plural returns "1 thing" or "N things": n with noun, plural unless n
// is 1.
func Plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
