package cli

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// describeArg, as a command's only argument, makes Parse and ParseRange
// return the command's flag set unparsed (a *describedError) instead of
// parsing it: DescribeFlags runs commands with it. It holds a NUL byte,
// which no command-line argument can hold, so no command line reaches this.
const describeArg = "\x00describe-flags"

// describedError carries a command's flag set out of Parse.
type describedError struct {
	fs    *flag.FlagSet
	usage string
}

func (e *describedError) Error() string { return "described the flags of " + e.fs.Name() }

// DescribeFlags returns the flag set of the command that run runs (run
// calls the command with args, as the program's dispatch does). It runs
// the command with an argument that makes Parse hand back the flag set
// unparsed instead of parsing; the command must parse its arguments with
// Parse, ParseRange or ParseServer before it does anything else, and return
// their error, as every command does.
func DescribeFlags(run func(args []string) error) (*flag.FlagSet, error) {
	fs, _, err := describe(run)
	return fs, err
}

// Command is one command of a program, as its completion scripts know it.
type Command struct {
	// Name is the word that runs the command.
	Name string
	// Summary says in a few words what the command does.
	Summary string
	// Runs run the command with the given arguments. The scripts complete
	// the flags of the flag set each parses (DescribeFlags), so they offer
	// exactly the flags the command takes; a command that picks one of
	// several flag sets (blockcat get: of a volume, or of a striped volume)
	// has a Run for each, and the scripts offer every flag of them all.
	Runs []func(args []string) error
	// Words are the words to offer as positional arguments, such as
	// "bash" and "zsh"; without them, file names are offered.
	Words []string
	// Sub are the subcommands of a command such as blockd volume, which
	// has no Runs of its own.
	Sub []Command
}

// compFlag is a flag as the scripts complete it.
type compFlag struct {
	name  string // without dashes
	value bool   // takes a value (not a boolean flag)
	usage string // the first line of its usage
}

// dashed returns the flag as completion offers it: -o, --key-file.
func (f compFlag) dashed() string {
	if len(f.name) == 1 {
		return "-" + f.name
	}
	return "--" + f.name
}

// compNode is a command with its flags resolved.
type compNode struct {
	path    []string // command words after the program's name
	summary string
	flags   []compFlag
	words   []string
	sub     []*compNode
}

// resolve builds the completion tree of cmds under path.
func resolve(path []string, cmds []Command) ([]*compNode, error) {
	var out []*compNode
	for _, c := range cmds {
		n := &compNode{path: append(slices.Clip(path), c.Name), summary: c.Summary, words: c.Words}
		seen := map[string]bool{}
		for _, run := range c.Runs {
			fs, err := DescribeFlags(run)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", strings.Join(n.path, " "), err)
			}
			fs.VisitAll(func(f *flag.Flag) {
				if seen[f.Name] {
					return
				}
				seen[f.Name] = true
				_, usage := flag.UnquoteUsage(f)
				usage, _, _ = strings.Cut(usage, "\n")
				bf, isBool := f.Value.(interface{ IsBoolFlag() bool })
				n.flags = append(n.flags, compFlag{name: f.Name, value: !isBool || !bf.IsBoolFlag(), usage: usage})
			})
		}
		slices.SortFunc(n.flags, func(a, b compFlag) int { return strings.Compare(a.name, b.name) })
		var err error
		if n.sub, err = resolve(n.path, c.Sub); err != nil {
			return nil, err
		}
		for _, s := range n.sub {
			n.words = append(n.words, s.path[len(s.path)-1])
		}
		out = append(out, n)
	}
	return out, nil
}

// Completion runs `PROG completion bash|zsh`: it prints the completion
// script for the shell, completing cmds (the program's commands, without
// version, completion and help, which it adds) and each one's flags.
func Completion(prog string, cmds []Command, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(prog+" completion", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pos, err := Parse(fs, args, 1, fmt.Sprintf(`bash|zsh

Prints a script that completes %[1]s's commands and their flags.
  bash: source <(%[1]s completion bash), or save it as
        /usr/share/bash-completion/completions/%[1]s
  zsh:  source <(%[1]s completion zsh) after compinit, or save it as _%[1]s
        in a directory of $fpath`, prog))
	if err != nil {
		return UsageErr(err)
	}
	return WriteCompletion(stdout, pos[0], prog, cmds)
}

// WriteCompletion writes the completion script for shell ("bash" or "zsh")
// of the program prog with the commands cmds, to which it adds the
// Builtins; help completes the names of the commands.
func WriteCompletion(w io.Writer, shell, prog string, cmds []Command) error {
	all := append(slices.Clip(cmds), Builtins(prog)...)
	for i := range all {
		if all[i].Name == "help" {
			for _, c := range all {
				all[i].Words = append(all[i].Words, c.Name)
			}
		}
	}
	nodes, err := resolve(nil, all)
	if err != nil {
		return err
	}
	root := &compNode{sub: nodes}
	for _, n := range nodes {
		root.words = append(root.words, n.path[0])
	}
	root.flags = []compFlag{{name: "help", usage: "print usage"}, {name: "version", usage: "print the version"}}
	var b strings.Builder
	switch shell {
	case "bash":
		writeBash(&b, prog, root)
	case "zsh":
		writeZsh(&b, prog, root)
	default:
		return UsageErr(fmt.Errorf("completion: unknown shell %q: want bash or zsh", shell))
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// ident turns a name into a shell function name's part.
func ident(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// walk calls f for n and every node below it, parents first.
func walk(n *compNode, f func(*compNode)) {
	f(n)
	for _, s := range n.sub {
		walk(s, f)
	}
}

// writeBash writes the bash script: it finds the command among the words
// before the cursor, then offers that command's flags after a dash, its
// subcommands or words for a positional argument, and file names (complete
// -o default) for a flag's value and other arguments.
func writeBash(b *strings.Builder, prog string, root *compNode) {
	fn := "_" + ident(prog)
	var paths []string
	walk(root, func(n *compNode) {
		if len(n.path) > 0 {
			paths = append(paths, `"`+strings.Join(n.path, " ")+`"`)
		}
	})
	fmt.Fprintf(b, `# bash completion for %[1]s, generated from its flag sets by '%[1]s completion bash'.
# Load it with: source <(%[1]s completion bash)
# or install it: %[1]s completion bash > /usr/share/bash-completion/completions/%[1]s

%[2]s() {
    local cur prev cmd="" i w name
    COMPREPLY=()
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev=""
    if (( COMP_CWORD > 1 )); then prev="${COMP_WORDS[COMP_CWORD-1]}"; fi
    # The command is the words before the cursor that name one.
    for (( i = 1; i < COMP_CWORD; i++ )); do
        w="${COMP_WORDS[i]}"
        case "${cmd:+$cmd }$w" in
        %[3]s) cmd="${cmd:+$cmd }$w" ;;
        esac
    done
    local flags="" valueflags="" words=""
    case "$cmd" in
`, prog, fn, strings.Join(paths, "|"))
	walk(root, func(n *compNode) {
		var flags, values []string
		for _, f := range n.flags {
			flags = append(flags, f.dashed())
			if f.value {
				values = append(values, f.name)
			}
		}
		fmt.Fprintf(b, "    %q)\n", strings.Join(n.path, " "))
		fmt.Fprintf(b, "        flags=%q\n", strings.Join(flags, " "))
		if len(values) > 0 {
			fmt.Fprintf(b, "        valueflags=%q\n", strings.Join(values, " "))
		}
		if len(n.words) > 0 {
			fmt.Fprintf(b, "        words=%q\n", strings.Join(n.words, " "))
		}
		b.WriteString("        ;;\n")
	})
	fmt.Fprintf(b, `    esac
    # A flag's value: file names.
    if [[ "$prev" == -* && "$prev" != *=* ]]; then
        name="${prev#-}"; name="${name#-}"
        if [[ " $valueflags " == *" $name "* ]]; then
            return 0
        fi
    fi
    if [[ "$cur" == -* ]]; then
        if [[ "$cur" != *=* ]]; then
            COMPREPLY=( $(compgen -W "$flags" -- "$cur") )
        fi
        return 0
    fi
    if [[ -n "$words" ]]; then
        COMPREPLY=( $(compgen -W "$words" -- "$cur") )
    fi
    return 0
}

complete -o default -F %[2]s %[1]s
`, prog, fn)
}

// zshQuote quotes s as one word in single quotes.
func zshQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// zshDesc escapes s for an _arguments description in brackets, or a
// _describe item after its colon.
func zshDesc(s string) string {
	return strings.NewReplacer(`\`, `\\`, `[`, `\[`, `]`, `\]`).Replace(s)
}

// writeZsh writes the zsh script: one function per command, with an
// _arguments spec for each flag of a command that has no subcommands, and a
// menu of the subcommands of one that has.
func writeZsh(b *strings.Builder, prog string, root *compNode) {
	fn := "_" + ident(prog)
	fmt.Fprintf(b, `#compdef %[1]s
# zsh completion for %[1]s, generated from its flag sets by '%[1]s completion zsh'.
# Load it with: source <(%[1]s completion zsh)   (after compinit)
# or install it as _%[1]s in a directory of $fpath:
#   %[1]s completion zsh > "${fpath[1]}/_%[1]s"
compdef %[2]s %[1]s
`, prog, fn)
	walk(root, func(n *compNode) {
		name := fn
		for _, p := range n.path {
			name += "_" + ident(p)
		}
		fmt.Fprintf(b, "\n%s() {\n", name)
		if len(n.sub) > 0 {
			b.WriteString("  local curcontext=\"$curcontext\" state line\n  typeset -A opt_args\n  local -a cmds\n  _arguments -C \\\n")
			for _, f := range n.flags {
				fmt.Fprintf(b, "    %s \\\n", zshQuote("(- *)"+f.dashed()+"["+zshDesc(f.usage)+"]"))
			}
			b.WriteString("    '1: :->cmd' \\\n    '*:: :->arg'\n  case $state in\n  (cmd)\n    cmds=(\n")
			for _, s := range n.sub {
				fmt.Fprintf(b, "      %s\n", zshQuote(s.path[len(s.path)-1]+":"+zshDesc(s.summary)))
			}
			fmt.Fprintf(b, "    )\n    _describe -t commands %s cmds\n    ;;\n  (arg)\n    case $words[1] in\n",
				zshQuote(strings.Join(append([]string{prog}, n.path...), " ")+" command"))
			for _, s := range n.sub {
				last := s.path[len(s.path)-1]
				fmt.Fprintf(b, "    (%s) %s_%s ;;\n", last, name, ident(last))
			}
			b.WriteString("    esac\n    ;;\n  esac\n}\n")
			return
		}
		b.WriteString("  _arguments -S")
		for _, f := range n.flags {
			spec := f.dashed() + "[" + zshDesc(f.usage) + "]"
			if f.value {
				spec = f.dashed() + "=[" + zshDesc(f.usage) + "]:" + f.name + ":_files"
			}
			fmt.Fprintf(b, " \\\n    %s", zshQuote(spec))
		}
		if len(n.words) > 0 {
			fmt.Fprintf(b, " \\\n    %s", zshQuote("*: :("+strings.Join(n.words, " ")+")"))
		} else {
			b.WriteString(" \\\n    '*: :_files'")
		}
		b.WriteString("\n}\n")
	})
	fmt.Fprintf(b, `
# Autoloaded from $fpath, the file's body runs as %[1]s: complete now.
if [[ "$funcstack[1]" == %[1]s ]]; then
  %[1]s "$@"
fi
`, fn)
}
