package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// One source for every help text: a command's synopsis and the paragraphs
// about it are the usage string it passes to Parse, its flags are its flag
// set, and the program's overview, commands and topics are its Program.
// -h, `PROG help [COMMAND|TOPIC]`, the usage printed for a mistake and
// `PROG man` (docs/man/PROG.1) all print from them.

// Program describes one binary for its usage, `help` and its man page.
type Program struct {
	// Name is the binary's name, such as "blockcat".
	Name string
	// Title says in a few words what the program is, for the man page's
	// NAME section: "blockcat - Title".
	Title string
	// Intro is the usage's first paragraph.
	Intro string
	// Commands are the program's commands; Builtins (version, completion,
	// help, man) are added.
	Commands []Command
	// Notes are paragraphs printed after the list of commands: what the
	// commands share, such as how a server address is written.
	Notes string
	// Topics are the texts `PROG help TOPIC` prints, also sections of the
	// man page.
	Topics []Topic
	// SeeAlso lists related pages for the man page, such as "blockd(1)".
	SeeAlso string
}

// Topic is a text `PROG help NAME` prints.
type Topic struct {
	Name    string // such as "devmem"
	Summary string // a few words, for the list of topics
	Text    string // paragraphs, lines of at most 76 columns
}

// splitUsage splits a command's usage (see Parse) into its synopsis and the
// paragraphs about the command.
func splitUsage(usage string) (synopsis, about string) {
	synopsis, about, _ = strings.Cut(usage, "\n\n")
	return strings.TrimSpace(synopsis), strings.Trim(about, "\n")
}

// addAbout returns usage with the paragraphs more added after its own.
func addAbout(usage, more string) string {
	syn, about := splitUsage(usage)
	if about != "" {
		about += "\n\n"
	}
	return syn + "\n\n" + about + more
}

// Synopsis returns the command line of fs's command, as usage (see Parse)
// gives it: "blockcat ls SERVER [--json]".
func Synopsis(fs *flag.FlagSet, usage string) string {
	syn, _ := splitUsage(usage)
	if syn == "" {
		return fs.Name()
	}
	return fs.Name() + " " + syn
}

// WriteHelp writes what -h prints for the command parsing with fs and
// usage (see Parse): "usage: " and the synopsis, the paragraphs about the
// command, and the flags -h lists with their defaults (sizes as 64MiB).
func WriteHelp(w io.Writer, fs *flag.FlagSet, usage string) {
	_, about := splitUsage(usage)
	fmt.Fprintf(w, "usage: %s\n", Synopsis(fs, usage))
	if about != "" {
		fmt.Fprintf(w, "\n%s\n", about)
	}
	if flags := helpFlags(fs); len(flags) > 0 {
		fmt.Fprint(w, "\nFlags:\n")
		for _, f := range flags {
			fmt.Fprintf(w, "  %s\n", f.head())
			for _, l := range f.lines() {
				fmt.Fprintf(w, "        %s\n", l)
			}
		}
	}
}

// helpFlag is a flag as help lists it.
type helpFlag struct {
	name  string // without dashes
	arg   string // what its value is, such as "FILE", "duration" or "size"; "" for a boolean flag
	usage string // its usage, backquotes removed
	def   string // its default as help shows it, or "" when it is the zero value
}

// head is the flag's first line: "--timeout duration".
func (f helpFlag) head() string {
	if f.arg == "" {
		return Dashed(f.name)
	}
	return Dashed(f.name) + " " + f.arg
}

// lines are its usage, with the default appended.
func (f helpFlag) lines() []string {
	u := f.usage
	if f.def != "" {
		u += " (default " + f.def + ")"
	}
	return strings.Split(u, "\n")
}

// helpFlags returns the flags of fs that -h lists, sorted by name.
func helpFlags(fs *flag.FlagSet) []helpFlag {
	var out []helpFlag
	fs.VisitAll(func(f *flag.Flag) {
		if isHidden(f) {
			return
		}
		arg, usage := flag.UnquoteUsage(f)
		if arg == "value" && !strings.Contains(f.Usage, "`") {
			switch {
			case isSize(f):
				arg = "size"
			case isInt(f.DefValue):
				arg = "int"
			}
		}
		h := helpFlag{name: f.Name, arg: arg, usage: usage}
		if !isZeroDefault(f) {
			h.def = f.DefValue
			if reflect.TypeOf(f.Value).String() == "*flag.stringValue" {
				h.def = strconv.Quote(f.DefValue)
			}
		}
		out = append(out, h)
	})
	return out
}

// isSize reports whether f holds a byte count (a SizeFlag).
func isSize(f *flag.Flag) bool {
	_, ok := f.Value.(*SizeFlag)
	return ok
}

// isInt reports whether s is a whole number.
func isInt(s string) bool {
	_, err := strconv.ParseInt(s, 10, 64)
	return err == nil
}

// isZeroDefault reports whether f's default is its type's zero value, which
// help does not show (as the flag package's PrintDefaults does not).
func isZeroDefault(f *flag.Flag) (zero bool) {
	switch f.DefValue {
	case "", "0", "false", "0s":
		return true
	}
	t := reflect.TypeOf(f.Value)
	if t.Kind() != reflect.Pointer {
		return false
	}
	defer func() {
		if recover() != nil {
			zero = false
		}
	}()
	v, ok := reflect.New(t.Elem()).Interface().(flag.Value)
	return ok && v.String() == f.DefValue
}

// describe returns the flag set and usage of the command that run runs (see
// DescribeFlags).
func describe(run func([]string) error) (*flag.FlagSet, string, error) {
	err := run([]string{describeArg})
	var d *describedError
	if !errors.As(err, &d) {
		return nil, "", fmt.Errorf("command did not describe its flags (it returned %v)", err)
	}
	return d.fs, d.usage, nil
}

// cmdDoc is one form of a command (one of its Runs) described.
type cmdDoc struct {
	fs    *flag.FlagSet
	usage string
}

// docs describes every form of c.
func (c Command) docs() ([]cmdDoc, error) {
	var out []cmdDoc
	for _, run := range c.Runs {
		fs, usage, err := describe(run)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Name, err)
		}
		out = append(out, cmdDoc{fs: fs, usage: usage})
	}
	return out, nil
}

// all returns the program's commands with the built-in ones.
func (p *Program) all() []Command {
	return append(slices.Clip(p.Commands), Builtins(p.Name)...)
}

// Builtins returns the commands every program has besides its own:
// version, completion, help and man.
func Builtins(prog string) []Command {
	bare := &Program{Name: prog}
	return []Command{
		{Name: "version", Summary: "print the version, revision and Go version",
			Runs: []func([]string) error{func(args []string) error { return Version(prog, args, io.Discard, io.Discard) }}},
		{Name: "completion", Summary: "print a bash or zsh completion script", Words: []string{"bash", "zsh"},
			Runs: []func([]string) error{func(args []string) error { return Completion(prog, nil, args, io.Discard, io.Discard) }}},
		{Name: "help", Summary: "print this usage, a command's synopsis and flags, or a topic",
			Runs: []func([]string) error{func(args []string) error { return Help(bare, args, io.Discard, io.Discard) }}},
		{Name: "man", Summary: "print the manual page (roff, for man -l -)",
			Runs: []func([]string) error{func(args []string) error { return Man(bare, args, io.Discard, io.Discard) }}},
	}
}

// find returns the command of cmds named name.
func find(cmds []Command, name string) (Command, bool) {
	for _, c := range cmds {
		if c.Name == name {
			return c, true
		}
	}
	return Command{}, false
}

// Find returns the command of p named by path, such as ["volume", "create"].
func (p *Program) Find(path ...string) (Command, bool) {
	cmds := p.all()
	var c Command
	for _, name := range path {
		var ok bool
		if c, ok = find(cmds, name); !ok {
			return Command{}, false
		}
		cmds = c.Sub
	}
	return c, len(path) > 0
}

// synopses returns the command lines of c and its subcommands, each with the
// summary of its command.
func synopses(c Command) (lines [][2]string, err error) {
	if len(c.Sub) > 0 {
		for _, s := range c.Sub {
			l, err := synopses(s)
			if err != nil {
				return nil, fmt.Errorf("%s %w", c.Name, err)
			}
			lines = append(lines, l...)
		}
		return lines, nil
	}
	docs, err := c.docs()
	if err != nil {
		return nil, err
	}
	for _, d := range docs {
		lines = append(lines, [2]string{Synopsis(d.fs, d.usage), c.Summary})
	}
	return lines, nil
}

// writeCommandList writes the synopses of cmds, each command's summary
// under its last synopsis.
func writeCommandList(w io.Writer, cmds []Command) error {
	for _, c := range cmds {
		lines, err := synopses(c)
		if err != nil {
			return err
		}
		for i, l := range lines {
			fmt.Fprintf(w, "  %s\n", l[0])
			if i == len(lines)-1 || lines[i+1][1] != l[1] {
				fmt.Fprintf(w, "      %s\n", l[1])
			}
		}
	}
	return nil
}

// WriteUsage writes the program's usage: the introduction, every command's
// synopsis and summary, the notes and the topics.
func (p *Program) WriteUsage(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nUsage:\n", strings.TrimSpace(p.Intro))
	if err := writeCommandList(&b, p.all()); err != nil {
		return err
	}
	if n := strings.Trim(p.Notes, "\n"); n != "" {
		fmt.Fprintf(&b, "\n%s\n", n)
	}
	if len(p.Topics) > 0 {
		fmt.Fprintf(&b, "\nHelp topics ('%s help TOPIC'):\n", p.Name)
		for _, t := range p.Topics {
			fmt.Fprintf(&b, "  %-13s %s\n", t.Name, t.Summary)
		}
	}
	fmt.Fprintf(&b, "\nRun '%[1]s help COMMAND' or '%[1]s COMMAND -h' for a command's flags;\n'%[1]s man' prints the manual page.\n", p.Name)
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteGroupHelp writes the help of a command with subcommands, such as
// blockd volume: its summary and its subcommands' synopses.
func (p *Program) WriteGroupHelp(w io.Writer, c Command) error {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: %s %s COMMAND [flags] [arguments]\n\n%s %s: %s.\n\nCommands:\n", p.Name, c.Name, p.Name, c.Name, c.Summary)
	if err := writeCommandList(&b, c.Sub); err != nil {
		return err
	}
	fmt.Fprintf(&b, "\nRun '%[1]s %[2]s COMMAND -h' or '%[1]s help %[2]s COMMAND' for a command's flags.\n", p.Name, c.Name)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeCommandHelp writes the help of a command without subcommands: for
// each of its forms (blockcat get has two) what -h prints, with the
// command's summary after the synopsis.
func writeCommandHelp(w io.Writer, c Command) error {
	docs, err := c.docs()
	if err != nil {
		return err
	}
	for i, d := range docs {
		if i > 0 {
			fmt.Fprintln(w)
		}
		syn, about := splitUsage(d.usage)
		if i == 0 && c.Summary != "" {
			about = strings.TrimSpace(capitalize(c.Summary)+".\n\n"+about) + "\n"
		}
		WriteHelp(w, d.fs, syn+"\n\n"+about)
	}
	return nil
}

// capitalize returns s with its first letter upper case.
func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// Help runs `PROG help [COMMAND [SUBCOMMAND] | TOPIC]`: without arguments
// it prints the program's usage; with a command, the command's synopsis,
// summary and flags (its subcommands, for a command that has them); with a
// topic, the topic's text. Everything goes to stdout.
func Help(p *Program, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(p.Name+" help", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pos, err := ParseRange(fs, args, 0, 2, "[COMMAND [SUBCOMMAND] | TOPIC]\n\n"+
		"Prints the usage of "+p.Name+", the synopsis and flags of a command, or a help topic.")
	if err != nil {
		return UsageErr(err)
	}
	if len(pos) == 0 {
		return p.WriteUsage(stdout)
	}
	if c, ok := p.Find(pos...); ok {
		if len(c.Sub) > 0 {
			return p.WriteGroupHelp(stdout, c)
		}
		return writeCommandHelp(stdout, c)
	}
	if len(pos) == 1 {
		for _, t := range p.Topics {
			if t.Name == pos[0] {
				_, err := fmt.Fprintf(stdout, "%s: %s\n\n%s\n", t.Name, t.Summary, strings.Trim(t.Text, "\n"))
				return err
			}
		}
	}
	var names, topics []string
	for _, c := range p.all() {
		names = append(names, c.Name)
	}
	for _, t := range p.Topics {
		topics = append(topics, t.Name)
	}
	if c, ok := p.Find(pos[0]); ok && len(c.Sub) > 0 {
		var subs []string
		for _, s := range c.Sub {
			subs = append(subs, s.Name)
		}
		return UsageErr(fmt.Errorf("help: no command %s %s: want one of %s", pos[0], pos[1], strings.Join(subs, ", ")))
	}
	return UsageErr(fmt.Errorf("help: no command or topic %q: want a command (%s) or a topic (%s)",
		strings.Join(pos, " "), strings.Join(names, ", "), strings.Join(topics, ", ")))
}
