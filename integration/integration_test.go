// Package integration runs the real blockd and blockcat binaries as
// processes and checks what a user sees: bytes, exit codes, messages.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bin holds the binaries built once for the whole package.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "blockxfer-integration")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	builds := [][2]string{ // -o target, package
		{dir + "/", "../cmd/..."},
		{filepath.Join(dir, "blockxfer-provider-example"), "../providers/example"},
		{filepath.Join(dir, "blockxfer-provider-udmabuf"), "../providers/udmabuf"},
		{filepath.Join(dir, "blockxfer-provider-gpu"), "../providers/gpu"},
	}
	for _, b := range builds {
		build := exec.Command("go", "build", "-o", b[0], b[1])
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", b[1]+":", err)
			os.Exit(1)
		}
	}
	bin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one finished command.
type result struct {
	code           int
	stdout, stderr string
}

func runCmd(t *testing.T, env []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, name), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return r
}

func mustRun(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	r := runCmd(t, env, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: exit %d\n%s", name, strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// server is a blockd process serving a data directory.
type server struct {
	addr, data string
	env        []string // BLOCKXFER_KEY_FILE for clients
	cmd        *exec.Cmd
	log        *syncBuffer
	exited     chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newData makes a data directory with a key and the given random volumes.
func newData(t *testing.T, vols map[string]string) (dir string, env []string) {
	t.Helper()
	dir = t.TempDir()
	key := filepath.Join(dir, "blockd.key")
	mustRun(t, nil, "blockd", "keygen", "-o", key)
	for name, size := range vols {
		mustRun(t, nil, "blockd", "volume", "create", name, "--size", size, "--fill", "random", "--data", dir)
	}
	return dir, []string{"BLOCKXFER_KEY_FILE=" + key}
}

func (s *server) volumeBytes(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.data, "volumes", name+".vol"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestServeAndFetch(t *testing.T) {
	data, env := newData(t, map[string]string{"big": "24MiB", "small": "100KiB"})
	s := startServer(t, data, env)
	want := s.volumeBytes(t, "big")

	t.Run("ls", func(t *testing.T) {
		var ls struct {
			Server  string
			Volumes []struct {
				Name string
				Size uint64 `json:"size_bytes"`
			}
		}
		if err := json.Unmarshal([]byte(mustRun(t, env, "blockcat", "ls", s.addr, "--json")), &ls); err != nil {
			t.Fatal(err)
		}
		vols := ls.Volumes
		if ls.Server != s.addr || len(vols) != 2 || vols[0].Name != "big" || vols[0].Size != 24<<20 || vols[1].Name != "small" {
			t.Fatalf("ls: %+v", vols)
		}
	})

	t.Run("whole volume", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		var res struct {
			Bytes     int64 `json:"fetched_bytes"`
			Transport string
			Verified  bool
			Extents   []struct {
				Length   int64 `json:"length_bytes"`
				Verified bool
			}
		}
		js := mustRun(t, env, "blockcat", "get", s.addr, "big", "--verify", "--json", "-o", out)
		if err := json.Unmarshal([]byte(js), &res); err != nil {
			t.Fatal(err)
		}
		var listed int64
		for _, e := range res.Extents {
			if e.Verified {
				listed += e.Length
			}
		}
		if res.Bytes != int64(len(want)) || res.Transport != "tcp" || !res.Verified || listed != res.Bytes {
			t.Fatalf("result (its verified extents should cover the volume): %s", js)
		}
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, want) {
			t.Fatal("fetched file differs from the volume")
		}
	})

	t.Run("stdout", func(t *testing.T) {
		small := s.volumeBytes(t, "small")
		if got := mustRun(t, env, "blockcat", "get", s.addr, "small", "-o", "-"); got != string(small) {
			t.Fatal("stdout differs from the volume")
		}
	})

	t.Run("random ranges", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 7))
		for range 6 {
			off := rng.Int64N(int64(len(want)))
			n := 1 + rng.Int64N(int64(len(want))-off)
			out := filepath.Join(t.TempDir(), "out")
			mustRun(t, env, "blockcat", "get", s.addr, "big", "--offset", fmt.Sprint(off), "--length", fmt.Sprint(n),
				"--window", "1MiB", "--verify", "-o", out)
			got, _ := os.ReadFile(out)
			if !bytes.Equal(got, want[off:off+n]) {
				t.Fatalf("range [%d,+%d) differs", off, n)
			}
		}
	})

	t.Run("concurrent clients", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan string, 6)
		for i := range 6 {
			wg.Go(func() {
				out := filepath.Join(t.TempDir(), fmt.Sprint(i))
				r := runCmd(t, env, "blockcat", "get", s.addr, "big", "--verify", "-o", out)
				if r.code != 0 {
					errs <- r.stderr
					return
				}
				if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
					errs <- "bytes differ"
				}
			})
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	})

	t.Run("bench", func(t *testing.T) {
		var res struct {
			Volume string
			Sizes  []struct {
				Size     int64 `json:"size_bytes"`
				Requests int
				P50      float64 `json:"p50_seconds"`
				P99      float64 `json:"p99_seconds"`
				Inline   int     `json:"inline_requests"`
			}
		}
		js := mustRun(t, env, "blockcat", "bench", s.addr, "big", "--sizes", "64KiB,1MiB", "--duration", "300ms", "--json")
		if err := json.Unmarshal([]byte(js), &res); err != nil {
			t.Fatal(err)
		}
		rows := res.Sizes
		if res.Volume != "big" || len(rows) != 2 || rows[0].Size != 64<<10 || rows[0].Requests == 0 || rows[1].P50 <= 0 || rows[1].P99 < rows[1].P50 {
			t.Fatalf("bench: %s", js)
		}
		// A 1 MiB read never comes inline; a 64 KiB one does when it is
		// the session's only read, as most are even at bench's depth 8 (blockd
		// serves one lone read after another).
		if rows[0].Inline == 0 || rows[0].Inline > rows[0].Requests || rows[1].Inline != 0 {
			t.Fatalf("bench: inline requests %d of %d at 64 KiB and %d at 1 MiB, want some and none: %s", rows[0].Inline, rows[0].Requests, rows[1].Inline, js)
		}
	})
}

func TestFetchThroughPluginProvider(t *testing.T) {
	data, env := newData(t, map[string]string{"vol": "5MiB"})
	s := startServer(t, data, env)
	want := s.volumeBytes(t, "vol")
	out := filepath.Join(t.TempDir(), "out")
	var res struct {
		Provider string
		Bytes    int64 `json:"fetched_bytes"`
		Verified bool
	}
	js := mustRun(t, env, "blockcat", "get", s.addr, "vol", "--provider", "example", "--verify", "--json",
		"--window", "2MiB", "-o", out)
	if err := json.Unmarshal([]byte(js), &res); err != nil {
		t.Fatal(err)
	}
	if res.Provider != "example" || res.Bytes != int64(len(want)) || !res.Verified {
		t.Fatalf("result %s", js)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Fatal("bytes fetched through the plugin differ from the volume")
	}
	// A provider that cannot run here says why.
	r := runCmd(t, env, "blockcat", "get", s.addr, "vol", "--provider", "nonesuch")
	if r.code == 0 || !strings.Contains(r.stderr, "blockxfer-provider-nonesuch") {
		t.Fatalf("unknown provider: exit %d, %q", r.code, r.stderr)
	}
}

func TestProvidersList(t *testing.T) {
	var res struct {
		Providers []struct {
			Name         string
			Unusable     *string `json:"unusable_reason"`
			Capabilities struct{ Kind string }
		}
	}
	js := mustRun(t, nil, "blockcat", "providers", "--json")
	if err := json.Unmarshal([]byte(js), &res); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, i := range res.Providers {
		got[i.Name] = ""
		if i.Unusable != nil {
			got[i.Name] = *i.Unusable
		}
	}
	if _, ok := got["host"]; !ok || got["host"] != "" || got["example"] != "" {
		t.Fatalf("providers: %s", js)
	}
	for name, reason := range map[string]string{"udmabuf": "udmabuf", "gpu": "libcuda"} {
		why, ok := got[name]
		if !ok {
			t.Errorf("provider %s not listed: %s", name, js)
			continue
		}
		// On a machine with the device the plugin is usable; here it says why not.
		if why != "" && !strings.Contains(why, reason) {
			t.Errorf("provider %s unusable for an unexplained reason: %q", name, why)
		}
	}
}

func TestMetrics(t *testing.T) {
	data, env := newData(t, map[string]string{"vol": "2MiB"})
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := ml.Addr().String()
	ml.Close()
	s := startServer(t, data, env, "--metrics", metricsAddr)
	// Each get is one read (--window 2MiB), as the counts below assume.
	mustRun(t, env, "blockcat", "get", s.addr, "vol", "--window", "2MiB")
	if r := runCmd(t, env, "blockcat", "get", s.addr, "vol", "--offset", "1MiB", "--length", "2MiB", "--window", "2MiB"); r.code == 0 {
		t.Fatal("a read past the end succeeded")
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`blockd_sent_bytes_total{transport="tcp"} 2.097152e+06`,
		`blockd_reads_total{outcome="done",transport="tcp"} 1`,
		`blockd_read_duration_seconds_count{transport="tcp"} 2`,
		`blockd_reads_total{outcome="out-of-range",transport="tcp"} 1`,
		`blockd_sessions`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}

func TestErrorsLeaveServerUp(t *testing.T) {
	data, env := newData(t, map[string]string{"vol": "1MiB"})
	s := startServer(t, data, env)

	wrongKey := filepath.Join(t.TempDir(), "wrong.key")
	mustRun(t, nil, "blockd", "keygen", "-o", wrongKey)
	cases := []struct {
		name string
		env  []string
		args []string
		msg  string
	}{
		{"wrong key", []string{"BLOCKXFER_KEY_FILE=" + wrongKey}, []string{"get", s.addr, "vol"}, "authentication failed"},
		{"no key", []string{"BLOCKXFER_KEY_FILE="}, []string{"get", s.addr, "vol"}, "no key"},
		{"past the end", env, []string{"get", s.addr, "vol", "--offset", "1MiB", "--length", "1"}, "past the end"},
		{"range past the end", env, []string{"get", s.addr, "vol", "--offset", "1000", "--length", "1MiB"}, "past the end"},
		{"unknown volume", env, []string{"get", s.addr, "nope"}, `no volume "nope" on ` + s.addr},
		{"escaping name", env, []string{"get", s.addr, "../blockd.key"}, "invalid volume name"},
		{"deadline", env, []string{"get", s.addr, "vol", "--timeout", "1ns"}, "deadline exceeded"},
		{"bad flag", env, []string{"get", s.addr}, "usage"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runCmd(t, tc.env, "blockcat", tc.args...)
			if r.code == 0 || !strings.Contains(r.stderr, tc.msg) {
				t.Fatalf("exit %d, stderr %q; want failure mentioning %q", r.code, r.stderr, tc.msg)
			}
		})
	}
	// Garbage on the port gets the connection closed, with no reply: a
	// peer that is not blockxfer is not answered.
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("\x00\x01garbage that is not blockxfer\r\n"))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	reply, err := io.ReadAll(c) // EOF, or a reset if the server left bytes unread
	c.Close()
	if ne, ok := err.(net.Error); (ok && ne.Timeout()) || len(reply) != 0 {
		t.Fatalf("garbage got reply %q (%v); want the connection closed without one", reply, err)
	}
	want := s.volumeBytes(t, "vol")
	out := filepath.Join(t.TempDir(), "out")
	mustRun(t, env, "blockcat", "get", s.addr, "vol", "--verify", "-o", out)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Fatal("bytes differ after the bad clients")
	}
}

func TestSIGTERMStopsCleanly(t *testing.T) {
	data, env := newData(t, map[string]string{"vol": "4MiB"})
	s := startServer(t, data, env)
	mustRun(t, env, "blockcat", "get", s.addr, "vol", "--verify")
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.exited:
		s.exited <- err
		if err != nil {
			t.Fatalf("blockd exited with %v after SIGTERM\n%s", err, s.log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("blockd did not stop after SIGTERM")
	}
	if !strings.Contains(s.log.String(), "stopped") {
		t.Fatalf("no stop message in the log:\n%s", s.log.String())
	}
	// The catalog lock is released and the catalog intact.
	if out := mustRun(t, nil, "blockd", "volume", "inspect", "vol", "--verify", "--data", data); !strings.Contains(out, "all 1 extents match") {
		t.Fatalf("inspect after stop: %s", out)
	}
}

// TestUploadWhileServing adds and replaces a volume on a running blockd,
// whose catalog the server itself holds locked.
func TestUploadWhileServing(t *testing.T) {
	data, env := newData(t, map[string]string{"vol": "64KiB"})
	s := startServer(t, data, env)
	src := filepath.Join(t.TempDir(), "src")
	payload := make([]byte, 3<<20+777)
	rand.NewChaCha8([32]byte{3}).Read(payload)
	os.WriteFile(src, payload, 0o644)
	if out := mustRun(t, env, "blockcat", "upload", s.addr, "new", src, "--extent-size", "1MiB"); !strings.Contains(out, "generation") {
		t.Fatalf("upload: %s", out)
	}
	out := filepath.Join(t.TempDir(), "out")
	mustRun(t, env, "blockcat", "get", s.addr, "new", "--verify", "-o", out)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, payload) {
		t.Fatal("fetched bytes differ from the uploaded file")
	}
	if r := runCmd(t, env, "blockcat", "upload", s.addr, "new", src); r.code == 0 || !strings.Contains(r.stderr, "exist") {
		t.Fatalf("second upload without --replace: exit %d, %q", r.code, r.stderr)
	}
	payload[12345] ^= 0xff
	os.WriteFile(src, payload, 0o644)
	mustRun(t, env, "blockcat", "upload", s.addr, "new", src, "--replace")
	mustRun(t, env, "blockcat", "get", s.addr, "new", "--verify", "-o", out)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, payload) {
		t.Fatal("fetched bytes differ from the replacement")
	}
}

func TestVolumeCommands(t *testing.T) {
	data := t.TempDir()
	src := filepath.Join(t.TempDir(), "src")
	payload := bytes.Repeat([]byte("blockxfer"), 100000)
	os.WriteFile(src, payload, 0o644)
	mustRun(t, nil, "blockd", "volume", "import", "copied", src, "--data", data)
	mustRun(t, nil, "blockd", "volume", "import", "linked", src, "--link", "--data", data)
	list := mustRun(t, nil, "blockd", "volume", "list", "--data", data)
	if !strings.Contains(list, "copied") || !strings.Contains(list, "linked") {
		t.Fatalf("list: %s", list)
	}
	if r := runCmd(t, nil, "blockd", "volume", "create", "../evil", "--size", "4KiB", "--data", data); r.code == 0 {
		t.Fatal("created a volume named ../evil")
	}
	mustRun(t, nil, "blockd", "volume", "rm", "linked", "--data", data)
	if _, err := os.Stat(src); err != nil {
		t.Fatalf("removing a linked volume removed its source: %v", err)
	}
	var v struct {
		Volume struct {
			Size int64 `json:"size_bytes"`
		}
		Verified   bool
		BadExtents []int `json:"bad_extents"`
	}
	json.Unmarshal([]byte(mustRun(t, nil, "blockd", "volume", "inspect", "copied", "--verify", "--json", "--data", data)), &v)
	if v.Volume.Size != int64(len(payload)) || !v.Verified || v.BadExtents == nil || len(v.BadExtents) != 0 {
		t.Fatalf("inspect: %+v", v)
	}
}
