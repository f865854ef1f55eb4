package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestUsageErrorsOneLine: a bad flag or value is one line naming the flag
// and what it wants, then where help is, and exit status 2; never the
// whole usage, never the message twice.
func TestUsageErrorsOneLine(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		prog string
		args []string
		want string // the first line, after "PROG: "
	}{
		{"blockcat", []string{"get", "127.0.0.1:1", "v", "--timeout", "5"}, `invalid value "5" for --timeout: a duration needs a unit, e.g. 5s`},
		{"blockcat", []string{"get", "127.0.0.1:1", "v", "--data-conns", "0"}, `invalid value "0" for --data-conns: want a whole number of data connections from 1 to 64`},
		{"blockcat", []string{"get", "127.0.0.1:1", "v", "--data-conns", "-3"}, `invalid value "-3" for --data-conns: want a whole number of data connections from 1 to 64`},
		{"blockcat", []string{"get", "127.0.0.1:1", "v", "--depth", "x"}, `invalid value "x" for --depth: want a whole number`},
		{"blockcat", []string{"get", "127.0.0.1:1", "v", "--offset", "1Q"}, `invalid value "1Q" for --offset: want a byte count such as 4096, 64KiB or 1GiB`},
		{"blockcat", []string{"get", "127.0.0.1:1", "v", "--timeout"}, `--timeout needs a value`},
		{"blockcat", []string{"bench", "127.0.0.1:1", "v", "--depth", "0"}, `--depth and --duration must be positive`},
		{"blockcat", []string{"ls", "127.0.0.1:1", "--data-conns", "2"}, `unknown flag --data-conns`},
		{"blockcat", []string{"upload", "127.0.0.1:1", "v", "f", "--data-conns", "2"}, `unknown flag --data-conns`},
		{"blockd", []string{"serve", "--data", dir, "--idle-timeout", "5"}, `invalid value "5" for --idle-timeout: a duration needs a unit, e.g. 5s`},
		{"blockd", []string{"volume", "list", "--data", dir, "--bogus"}, `unknown flag --bogus`},
	} {
		r := runCmd(t, nil, tc.prog, tc.args...)
		cmd := tc.prog + " " + tc.args[0]
		if tc.args[0] == "volume" {
			cmd += " list"
		}
		want := fmt.Sprintf("%s: %s\nrun '%s -h' for help\n", tc.prog, tc.want, cmd)
		if r.code != 2 || r.stderr != want {
			t.Errorf("%s %q: exit %d, stderr\n%s\nwant exit 2 and\n%s", tc.prog, tc.args, r.code, r.stderr, want)
		}
	}

	// -h lists the documented names only: --depth, not its alias
	// --concurrency; ls and upload take no --data-conns and list no
	// --provider or --devmem.
	help := func(args ...string) string {
		r := runCmd(t, nil, "blockcat", args...)
		if r.code != 0 {
			t.Fatalf("blockcat %q: exit %d\n%s", args, r.code, r.stderr)
		}
		return r.stdout + r.stderr
	}
	if h := help("bench", "-h"); !strings.Contains(h, "-depth") || strings.Contains(h, "concurrency") {
		t.Errorf("bench -h:\n%s", h)
	}
	for _, cmd := range []string{"ls", "upload"} {
		if h := help(cmd, "-h"); strings.Contains(h, "-data-conns") || strings.Contains(h, "-provider") ||
			strings.Contains(h, "-devmem") || strings.Contains(h, "memory to fetch into") {
			t.Errorf("%s -h:\n%s", cmd, h)
		}
	}
}

// TestClientErrorsNameTheFix: the errors a user meets first say what to do.
func TestClientErrorsNameTheFix(t *testing.T) {
	data, env := newData(t, map[string]string{"weights": "1MiB", "tokenizer": "8KiB"})
	s := startServer(t, data, env)

	// A misspelt volume gets the closest names the server has.
	for _, cmd := range []string{"get", "bench"} {
		r := runCmd(t, env, "blockcat", cmd, s.addr, "weigths")
		want := fmt.Sprintf("blockcat: no volume \"weigths\" on %s; did you mean \"weights\"? (blockcat ls %s lists them)\n", s.addr, s.addr)
		if r.code != 1 || r.stderr != want {
			t.Errorf("%s weigths: exit %d, stderr %q, want %q", cmd, r.code, r.stderr, want)
		}
	}
	// An upload over an existing volume names --replace.
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, []byte("new contents"), 0o600)
	// Its generation depends on the order the volumes were created in.
	var ls struct {
		Volumes []struct {
			Name       string `json:"name"`
			Generation uint64 `json:"generation"`
		} `json:"volumes"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, env, "blockcat", "ls", s.addr, "--json")), &ls); err != nil {
		t.Fatal(err)
	}
	var gen uint64
	for _, v := range ls.Volumes {
		if v.Name == "weights" {
			gen = v.Generation
		}
	}
	r := runCmd(t, env, "blockcat", "upload", s.addr, "weights", file)
	if want := fmt.Sprintf("blockcat: volume \"weights\" already exists on %s (1.0 MiB, generation %d): pass --replace", s.addr, gen); gen == 0 || r.code != 1 || !strings.HasPrefix(r.stderr, want) {
		t.Errorf("upload over weights: exit %d, stderr %q, want %q...", r.code, r.stderr, want)
	}
	// A key that is not the server's: which file, and where the right one is.
	wrong := filepath.Join(t.TempDir(), "wrong.key")
	mustRun(t, nil, "blockd", "keygen", "-o", wrong)
	r = runCmd(t, []string{"BLOCKXFER_KEY_FILE=" + wrong}, "blockcat", "ls", s.addr)
	for _, want := range []string{"authentication failed", "the key in " + wrong + " (from $BLOCKXFER_KEY_FILE)",
		"DATA/blockd.key", "--key-file or $BLOCKXFER_KEY_FILE"} {
		if r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("wrong key: exit %d, stderr %q lacks %q", r.code, r.stderr, want)
		}
	}
	// blockd serve without a key says how to make one.
	empty := t.TempDir()
	r = runCmd(t, []string{"BLOCKXFER_KEY_FILE="}, "blockd", "serve", "--data", empty, "--listen", "127.0.0.1:0")
	if want := "blockd keygen -o " + filepath.Join(empty, "blockd.key"); r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Errorf("serve without a key: exit %d, stderr %q lacks %q", r.code, r.stderr, want)
	}

	// Something that is not blockd, such as an HTTP server, is named so,
	// with what it answered, at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 512))
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n"))
			c.Close()
		}
	}()
	start := time.Now()
	r = runCmd(t, env, "blockcat", "ls", l.Addr().String())
	want := fmt.Sprintf("blockcat: %s does not speak the blockxfer protocol (it answered \"HTTP/1.1 400 Bad Request\" ...)", l.Addr())
	if r.code != 1 || !strings.HasPrefix(r.stderr, want) || time.Since(start) > 5*time.Second {
		t.Errorf("ls of an HTTP server: exit %d after %v, stderr %q, want %q...", r.code, time.Since(start), r.stderr, want)
	}
}

// TestQuietFallback: the fallback to TCP is in the summary, not a warning,
// unless --devmem was given; commands that move no payload open no
// provider and probe no devmem.
func TestQuietFallback(t *testing.T) {
	data, env := newData(t, map[string]string{"weights": "1MiB"})
	s := startServer(t, data, env)
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, []byte("contents"), 0o600)
	for _, args := range [][]string{
		{"ls", s.addr},
		{"ls", s.addr, "--devmem", "require"},
		{"ls", s.addr, "--provider", "udmabuf"},
		{"ls", s.addr, "--provider", "nonesuch", "--plugin-dir", t.TempDir()},
		{"upload", s.addr, "new", file, "--devmem", "require", "--provider", "nonesuch"},
	} {
		if r := runCmd(t, env, "blockcat", args...); r.code != 0 || r.stderr != "" {
			t.Errorf("%q: exit %d, stderr %q; want 0 and nothing", args, r.code, r.stderr)
		}
	}
	r := runCmd(t, env, "blockcat", "get", s.addr, "weights", "--data-conns", "1")
	if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "(1 data connection, server sent with tcp), fallback: ") {
		t.Errorf("get: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runCmd(t, env, "blockcat", "get", s.addr, "weights", "--devmem", "auto")
	if r.code != 0 || !strings.Contains(r.stderr, `level=WARN msg="devmem unavailable, using tcp"`) {
		t.Errorf("get --devmem auto: exit %d, stderr %q; want the fallback warned", r.code, r.stderr)
	}
	// --concurrency, bench's old name of --depth, still works.
	var res struct{ Depth int }
	json.Unmarshal([]byte(mustRun(t, env, "blockcat", "bench", s.addr, "weights", "--sizes", "4KiB", "--duration", "50ms",
		"--concurrency", "3", "--json")), &res)
	if res.Depth != 3 {
		t.Errorf("bench --concurrency 3: depth %d", res.Depth)
	}
}

// TestBenchPrintsEachSize: bench prints a size's line as soon as that
// size is done, not all at the end.
func TestBenchPrintsEachSize(t *testing.T) {
	data, env := newData(t, map[string]string{"weights": "1MiB"})
	s := startServer(t, data, env)
	cmd := exec.Command(filepath.Join(bin, "blockcat"), "bench", s.addr, "weights", "--sizes", "4KiB,64KiB", "--duration", "1500ms")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var first time.Time
	sc := bufio.NewScanner(out)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if strings.HasPrefix(strings.TrimSpace(sc.Text()), "4.0 KiB") {
			first = time.Now()
		}
	}
	if err := cmd.Wait(); err != nil || first.IsZero() {
		t.Fatalf("bench: %v\n%s", err, strings.Join(lines, "\n"))
	}
	if d := time.Since(first); d < time.Second {
		t.Errorf("the 4 KiB line came %v before bench ended, want about 1.5s:\n%s", d, strings.Join(lines, "\n"))
	}
}

// openPTY opens a pseudo-terminal; the command under test gets tty.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// onTerminal runs blockcat with stdout or stderr (which) on a terminal and
// returns the exit status, what the terminal received and what the other
// stream did.
func onTerminal(t *testing.T, env []string, which string, args ...string) (code int, term, other string) {
	t.Helper()
	m, tty := openPTY(t)
	cmd := exec.Command(filepath.Join(bin, "blockcat"), args...)
	cmd.Env = append(os.Environ(), env...)
	var rest bytes.Buffer
	cmd.Stdout, cmd.Stderr = &rest, &rest
	if which == "stdout" {
		cmd.Stdout = tty
	} else {
		cmd.Stderr = tty
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(m) // EIO once the command's end of it is closed
		got <- b
	}()
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		return code, string(b), rest.String()
	case <-time.After(10 * time.Second):
		t.Fatal("the terminal was not closed")
	}
	return 0, "", ""
}

// TestTerminal: -o - to a terminal is refused unless --force; the
// progress bar shows bytes done of the total and the rate in IEC units and
// an ETA, and is erased before the summary or an error.
func TestTerminal(t *testing.T) {
	data, env := newData(t, map[string]string{"weights": "8MiB", "tiny": "4KiB"})
	s := startServer(t, data, env)

	code, term, other := onTerminal(t, env, "stdout", "get", s.addr, "tiny", "-o", "-")
	if code != 2 || term != "" || !strings.Contains(other, "pass --force") {
		t.Errorf("-o - to a terminal: exit %d, terminal %q, stderr %q", code, term, other)
	}
	if code, term, other = onTerminal(t, env, "stdout", "get", s.addr, "tiny", "-o", "-", "--force"); code != 0 || len(term) < 4096 {
		t.Errorf("-o - --force to a terminal: exit %d, %d bytes, stderr %q", code, len(term), other)
	}

	code, term, other = onTerminal(t, env, "stderr", "get", s.addr, "weights", "--rate", "4MiB", "-o", filepath.Join(t.TempDir(), "w"))
	for _, want := range []string{"\rget weights ", " MiB / 8.0 MiB, ", " MiB/s, ETA "} {
		if code != 0 || !strings.Contains(term, want) {
			t.Errorf("progress: exit %d, the terminal lacks %q:\n%q", code, want, term)
		}
	}
	if !strings.HasSuffix(term, "\r\x1b[K") || !strings.HasPrefix(other, "fetched 8.0 MiB") {
		t.Errorf("the bar was not erased before the summary: terminal %q, stdout %q", term, other)
	}
	code, term, _ = onTerminal(t, env, "stderr", "get", s.addr, "weights", "--rate", "2MiB", "--timeout", "1500ms")
	if i := strings.Index(term, "blockcat: "); code != 1 || !strings.Contains(term, " MiB / 8.0 MiB, ") || i < 4 || term[i-4:i] != "\r\x1b[K" {
		t.Errorf("error after progress: exit %d, the error is not on an erased line:\n%q", code, term)
	}
}
