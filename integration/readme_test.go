package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The commands of the user documents' ```sh blocks run here, as written,
// against a real blockd, so that the README and the flags cannot drift:
// each line runs through bash in a work directory, after the rewrites of
// readmeRewrites (only what must differ on a test machine), unless
// readmeSkips names why it cannot run here. `blockd serve` runs in the
// background, as the README implies, until every block has run.

// readmeDocs are the documents whose ```sh blocks run, relative to the
// checkout.
var readmeDocs = []string{"README.md", "docs/*.md"}

// readmeRewrites are what differs on a test machine, applied in order to
// every line; each must apply to some line, so that none outlives the text
// it was written for. In the replacement, {{WORK}} is the work directory
// the commands run in, {{REPO}} the checkout and {{SERVER}} the address of
// the blockd that the README's `blockd serve` started.
var readmeRewrites = []struct{ old, new, why string }{
	{"/srv/blockxfer", "{{WORK}}/srv/blockxfer", "the data directory, under the work directory"},
	{"/path/to/blockd.key", "{{WORK}}/srv/blockxfer/blockd.key", "the key keygen wrote"},
	{"/data/weights.bin", "{{WORK}}/data/weights.bin", "a file to import: the test writes 17 MiB there"},
	{"/backup/", "{{WORK}}/backup/", "a backup directory, made by the test"},
	{`"$HOME/.local"`, "{{WORK}}/home/.local", "an install PREFIX in the work directory"},
	{"DESTDIR=/tmp/stage", "DESTDIR={{WORK}}/stage", "a staging root in the work directory"},
	{"--listen 0.0.0.0:7070", "--listen 127.0.0.1:0", "a free loopback port"},
	{"--metrics 127.0.0.1:9090", "--metrics 127.0.0.1:0", "a free port"},
	{"server:7070", "{{SERVER}}", "the blockd the README started"},
	{"--size 4GiB", "--size 4MiB", "less disk"},
	{"--offset 1GiB --length 64MiB", "--offset 1MiB --length 4MiB", "a range of the 17 MiB volume"},
	{"--duration 5s", "--duration 100ms", "less time per size"},
	{"go build -o bin/", "go build -C {{REPO}} -o {{WORK}}/bin/", "build the checkout into the work directory's bin/"},
	{"./quickstart.sh", "SIZE=16MiB {{REPO}}/quickstart.sh", "the checkout's script, with a smaller volume"},
	{"scripts/install.sh", "{{REPO}}/scripts/install.sh", "the checkout's script"},
}

// readmeSkips are the lines that cannot run on a test machine, matched
// against the line as written; each must match some line, except the
// general ones (anyOf: what changes the machine as root).
var readmeSkips = []struct {
	re    *regexp.Regexp
	why   string
	anyOf bool
}{
	{regexp.MustCompile(`^\./test\.sh\b`), "the whole test suite, this test included", false},
	{regexp.MustCompile(`^scripts/install\.sh\s*(#|$)`), "installs under /usr/local, as root", false},
	{regexp.MustCompile(`/dev/nvme`), "needs a real block device", false},
	{regexp.MustCompile(`--etcd\b`), "needs an etcd cluster", false},
	{regexp.MustCompile(`--provider gpu\b`), "needs a GPU and its driver", false},
	{regexp.MustCompile(`^(sudo|systemctl|useradd|modprobe|ethtool|ip link|ip netns)\b|> */(sys|proc|etc)/`), "changes the machine, as root", true},
}

// clusterSkip is the reason that may leave a whole block unrun.
const clusterSkip = "needs an etcd cluster"

// heavyLine matches the lines that build every binary, skipped with -short.
var heavyLine = regexp.MustCompile(`^(\./quickstart\.sh|(DESTDIR=\S+ )?scripts/install\.sh)\b`)

// serveLine matches a line that starts blockd serve, which runs in the
// background.
var serveLine = regexp.MustCompile(`^bin/blockd serve\b`)

// exportLine matches a line that sets a variable for the lines after it.
var exportLine = regexp.MustCompile(`^export ([A-Za-z_][A-Za-z0-9_]*)=(\S+)\s*(#.*)?$`)

// shLine is one command of a document's ```sh block.
type shLine struct {
	where string // FILE:LINE
	text  string
}

// shBlock is one ```sh block.
type shBlock struct {
	where string
	lines []shLine
}

// readShBlocks returns the ```sh blocks of the document at path (rel is
// its name in messages): their lines, without blank and comment lines,
// with backslash-continued lines joined.
func readShBlocks(t *testing.T, path, rel string) []shBlock {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []shBlock
	var cur *shBlock
	cont := ""
	for i, l := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(l)
		switch {
		case cur == nil && (trimmed == "```sh" || trimmed == "```bash" || trimmed == "```shell"):
			blocks = append(blocks, shBlock{where: fmt.Sprintf("%s:%d", rel, i+1)})
			cur = &blocks[len(blocks)-1]
		case cur == nil:
		case trimmed == "```":
			cur = nil
		case cont != "":
			cont += " " + strings.TrimSuffix(trimmed, `\`)
			if !strings.HasSuffix(trimmed, `\`) {
				cur.lines[len(cur.lines)-1].text, cont = cont, ""
			}
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
		default:
			cur.lines = append(cur.lines, shLine{where: fmt.Sprintf("%s:%d", rel, i+1), text: trimmed})
			if strings.HasSuffix(trimmed, `\`) {
				cont = strings.TrimSuffix(trimmed, `\`)
			}
		}
	}
	return blocks
}

// TestREADMECommands runs every command of the ```sh blocks of README.md
// (and docs/) against a real blockd.
func TestREADMECommands(t *testing.T) {
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []shBlock
	for _, pattern := range readmeDocs {
		files, err := filepath.Glob(filepath.Join(repo, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			rel, _ := filepath.Rel(repo, f)
			blocks = append(blocks, readShBlocks(t, f, rel)...)
		}
	}
	if len(blocks) < 4 {
		t.Fatalf("found only %d ```sh blocks in %q", len(blocks), readmeDocs)
	}

	work := t.TempDir()
	for _, d := range []string{"bin", "data", "backup", "home"} {
		if err := os.MkdirAll(filepath.Join(work, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeRandom(t, filepath.Join(work, "data", "weights.bin"), 17<<20)
	writeRandom(t, filepath.Join(work, "ckpt.bin"), 1<<20+123)

	env := readmeEnv()
	srv := &readmeServer{}
	defer srv.stop(t)
	usedRewrite := make([]bool, len(readmeRewrites))
	usedSkip := make([]bool, len(readmeSkips))
	ran := 0
	for _, b := range blocks {
		blockRan, clusterOnly := 0, true
		for _, l := range b.lines {
			if why, i := skipReason(l.text); i >= 0 {
				usedSkip[i] = true
				clusterOnly = clusterOnly && why == clusterSkip
				t.Logf("%s: skipped (%s): %s", l.where, why, l.text)
				continue
			}
			clusterOnly = false
			line := l.text
			for i, r := range readmeRewrites {
				if strings.Contains(line, r.old) {
					line, usedRewrite[i] = strings.ReplaceAll(line, r.old, r.new), true
				}
			}
			if strings.Contains(line, "{{SERVER}}") && srv.addr == "" {
				t.Errorf("%s: %s\nneeds the blockd that a `blockd serve` line before it starts", l.where, l.text)
				continue
			}
			line = strings.NewReplacer("{{WORK}}", work, "{{REPO}}", repo, "{{SERVER}}", srv.addr).Replace(line)
			if testing.Short() && heavyLine.MatchString(l.text) {
				t.Logf("%s: skipped with -short (builds every binary): %s", l.where, l.text)
				continue
			}
			blockRan++
			if m := exportLine.FindStringSubmatch(line); m != nil {
				env = append(env, m[1]+"="+strings.Trim(m[2], `"'`))
				continue
			}
			if serveLine.MatchString(l.text) {
				srv.start(t, l, line, work, env)
				continue
			}
			start := time.Now()
			out, code, err := runReadmeLine(line, work, env)
			if err != nil || code != 0 {
				t.Errorf("%s: exit %d (%v): %s\nran: %s\n%s", l.where, code, err, l.text, line, lastBytes(out, 4000))
				continue
			}
			t.Logf("%s: ok in %v: %s", l.where, time.Since(start).Round(time.Millisecond), l.text)
		}
		ran += blockRan
		if blockRan == 0 && !clusterOnly && !testing.Short() {
			t.Errorf("the block at %s runs no command: each block but the cluster ones must run here", b.where)
		}
	}
	if ran < 15 {
		t.Errorf("ran only %d commands", ran)
	}
	for i, used := range usedRewrite {
		if !used {
			t.Errorf("rewrite %q -> %q (%s) applies to no line: drop it", readmeRewrites[i].old, readmeRewrites[i].new, readmeRewrites[i].why)
		}
	}
	for i, used := range usedSkip {
		if !used && !readmeSkips[i].anyOf {
			t.Errorf("skip %q (%s) matches no line: drop it", readmeSkips[i].re, readmeSkips[i].why)
		}
	}
}

// skipReason returns why the line cannot run here and the index of its
// entry of readmeSkips, or -1.
func skipReason(line string) (string, int) {
	for i, s := range readmeSkips {
		if s.re.MatchString(line) {
			return s.why, i
		}
	}
	return "", -1
}

// readmeEnv is the environment the lines run in: this one without the
// variables blockxfer reads, which the README sets where it needs them.
func readmeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BLOCKXFER_") {
			env = append(env, kv)
		}
	}
	return env
}

// runReadmeLine runs one line through bash (with pipefail, so that a
// failing command piped into another fails the line) in dir.
func runReadmeLine(line, dir string, env []string) (string, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-c", "set -o pipefail\n"+line)
	cmd.Dir, cmd.Env = dir, env
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode(), nil
	}
	return string(out), 0, err
}

// readmeServer is the blockd the README's serve line started.
type readmeServer struct {
	line   shLine
	addr   string
	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan error
}

// start runs line (blockd serve, rewritten) in the background, with a
// --ready-file added, and waits until it serves.
func (s *readmeServer) start(t *testing.T, l shLine, line, dir string, env []string) {
	t.Helper()
	if s.cmd != nil {
		t.Fatalf("%s: a second blockd serve (the first is from %s)", l.where, s.line.where)
	}
	ready := filepath.Join(dir, "blockd.ready")
	line, _, _ = strings.Cut(line, " #")
	s.line, s.log, s.exited = l, &syncBuffer{}, make(chan error, 1)
	// exec: the process is blockd itself, so that SIGTERM reaches it.
	s.cmd = exec.Command("bash", "--noprofile", "--norc", "-c", "exec "+line+" --ready-file "+ready)
	s.cmd.Dir, s.cmd.Env = dir, env
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.exited <- s.cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(ready)
		if a, ok := strings.CutSuffix(string(b), "\n"); ok {
			s.addr = a
			break
		}
		select {
		case err := <-s.exited:
			s.exited <- err
			t.Fatalf("%s: %s: blockd exited before serving: %v\nran: %s\n%s", l.where, l.text, err, line, s.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s: blockd did not serve within 30s\n%s", l.where, l.text, s.log.String())
		}
	}
	t.Logf("%s: serving on %s: %s", l.where, s.addr, l.text)
}

// stop stops blockd with SIGTERM, as the README says, and checks that it
// exits 0.
func (s *readmeServer) stop(t *testing.T) {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.exited:
		if err != nil {
			t.Errorf("%s: blockd serve after SIGTERM: %v\n%s", s.line.where, err, s.log.String())
		}
	case <-time.After(45 * time.Second):
		s.cmd.Process.Kill()
		t.Errorf("%s: blockd serve did not stop within 45s of SIGTERM\n%s", s.line.where, s.log.String())
	}
	if t.Failed() {
		t.Logf("blockd serve log:\n%s", s.log.String())
	}
}

// writeRandom writes n random bytes to path.
func writeRandom(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	buf := make([]byte, 1<<16)
	for n > 0 {
		k := min(n, len(buf))
		rand.Read(buf[:k])
		w.Write(buf[:k])
		n -= k
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// lastBytes returns the last n bytes of s, marked as cut when longer.
func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
