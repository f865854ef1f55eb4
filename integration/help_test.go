package integration

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// helpEnv clears the variable that changes a default -h shows.
var helpEnv = []string{"BLOCKXFER_DATA="}

var (
	// bareByteDefault matches a default shown as a plain number.
	bareByteDefault = regexp.MustCompile(`\(default (\d+)\)`)
	// commandWord matches a word of a command's name, not an argument.
	commandWord = regexp.MustCompile(`^[a-z][a-z-]*$`)
)

// listedCommands returns the command words of every synopsis that `PROG
// help` lists ("volume create" for "  blockd volume create NAME ..."), and
// the words of each command with subcommands ("volume").
func listedCommands(t *testing.T, prog, usage string) [][]string {
	t.Helper()
	var out [][]string
	seen := map[string]bool{}
	add := func(words []string) {
		if k := strings.Join(words, " "); !seen[k] {
			seen[k] = true
			out = append(out, words)
		}
	}
	for _, l := range strings.Split(usage, "\n") {
		rest, ok := strings.CutPrefix(l, "  "+prog+" ")
		if !ok {
			continue
		}
		var words []string
		for _, w := range strings.Fields(rest) {
			if !commandWord.MatchString(w) {
				break
			}
			words = append(words, w)
		}
		for i := 1; i < len(words); i++ {
			add(slices.Clone(words[:i])) // blockd volume
		}
		add(words)
	}
	if len(out) < 8 {
		t.Fatalf("%s help lists only %q", prog, out)
	}
	return out
}

// checkHelpText checks the help of a command: its first line is the
// synopsis, "usage: PROG WORDS ...", and no default is a bare byte count
// (a number above 1024; sizes show as 64MiB).
func checkHelpText(t *testing.T, what, words, help string) (first string) {
	t.Helper()
	first, _, _ = strings.Cut(help, "\n")
	if first != "usage: "+words && !strings.HasPrefix(first, "usage: "+words+" ") {
		t.Errorf("%s: first line %q, want the synopsis \"usage: %s ...\"\n%s", what, first, words, help)
	}
	for _, m := range bareByteDefault.FindAllStringSubmatch(help, -1) {
		if n, err := strconv.ParseInt(m[1], 10, 64); err == nil && n > 1024 {
			t.Errorf("%s shows %s: a byte count, not a size such as 64MiB", what, m[0])
		}
	}
	return first
}

// TestEveryCommandHelp runs, as processes, -h and `help COMMAND` for every
// command the usage of each binary lists, `help TOPIC` for every topic and
// `man`: each exits 0, help goes to stdout, a command's help begins with
// its synopsis and shows sizes as sizes.
func TestEveryCommandHelp(t *testing.T) {
	for _, prog := range []string{"blockd", "blockcat"} {
		r := runCmd(t, helpEnv, prog, "help")
		if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, prog+" ") {
			t.Fatalf("%s help: exit %d\n%s%s", prog, r.code, r.stdout, r.stderr)
		}
		usage := r.stdout
		for _, args := range [][]string{{"-h"}, {"--help"}} {
			if r := runCmd(t, helpEnv, prog, args...); r.code != 0 || r.stdout != usage {
				t.Errorf("%s %s: exit %d, not the usage help prints\n%s", prog, args[0], r.code, r.stdout+r.stderr)
			}
		}
		if r := runCmd(t, helpEnv, prog); r.code != 2 || r.stderr != usage {
			t.Errorf("%s without a command: exit %d, want 2 and the usage on stderr\n%s", prog, r.code, r.stdout+r.stderr)
		}
		for _, words := range listedCommands(t, prog, usage) {
			name := prog + " " + strings.Join(words, " ")
			r := runCmd(t, helpEnv, prog, append(words, "-h")...)
			if r.code != 0 {
				t.Errorf("%s -h: exit %d\n%s", name, r.code, r.stderr)
				continue
			}
			first := checkHelpText(t, name+" -h", name, r.stdout+r.stderr)
			h := runCmd(t, helpEnv, prog, append([]string{"help"}, words...)...)
			if h.code != 0 || h.stderr != "" {
				t.Errorf("%s help %s: exit %d\n%s", prog, strings.Join(words, " "), h.code, h.stderr)
				continue
			}
			if f := checkHelpText(t, prog+" help "+strings.Join(words, " "), name, h.stdout); f != first {
				t.Errorf("%s help %s begins %q, -h %q", prog, strings.Join(words, " "), f, first)
			}
		}

		_, topics, ok := strings.Cut(usage, "\nHelp topics")
		if !ok {
			t.Fatalf("%s help lists no topics:\n%s", prog, usage)
		}
		topics, _, _ = strings.Cut(topics, "\n\n")
		var names []string
		for _, m := range regexp.MustCompile(`(?m)^  ([a-z-]+)  `).FindAllStringSubmatch(topics, -1) {
			names = append(names, m[1])
		}
		for _, want := range []string{"devmem", "verify", "environment", "exit-status"} {
			if !slices.Contains(names, want) {
				t.Errorf("%s help lists topics %q, without %s", prog, names, want)
			}
		}
		for _, topic := range names {
			r := runCmd(t, helpEnv, prog, "help", topic)
			if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, topic+": ") {
				t.Errorf("%s help %s: exit %d\n%s%s", prog, topic, r.code, r.stdout, r.stderr)
			}
		}
		if r := runCmd(t, helpEnv, prog, "help", "no-such-topic"); r.code != 2 || !strings.Contains(r.stderr, "devmem") {
			t.Errorf("%s help no-such-topic: exit %d, want 2 and the topics\n%s", prog, r.code, r.stderr)
		}
		if r := runCmd(t, helpEnv, prog, "man"); r.code != 0 || !strings.Contains(r.stdout, "\n.TH "+strings.ToUpper(prog)+" 1 ") {
			t.Errorf("%s man: exit %d\n%s", prog, r.code, r.stderr)
		}
	}
}
