package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPerReadPath runs blockd and blockcat under --devmem emulate: one get
// whose requests are 1 MiB, 1 MiB and 4 KiB goes over the software NIC's
// devmem for the first two and over the session's plain connection for the
// small one, and --json, the summary and both logs say so; the bytes are
// exact.
func TestPerReadPath(t *testing.T) {
	data, env := newData(t, map[string]string{"vol": "12MiB"})
	s := startServer(t, data, env, "--devmem", "emulate", "--log-level", "debug")
	want := s.volumeBytes(t, "vol")
	const length = 2<<20 + 4<<10
	args := []string{"get", s.addr, "vol", "--devmem", "emulate", "--offset", "1MiB", "--length", "2101248", "--window", "1MiB", "--verify"}

	out := filepath.Join(t.TempDir(), "out")
	js := mustRun(t, env, "blockcat", append(args, "--json", "-o", out)...)
	var r struct {
		Transport string
		Requests  int
		Paths     []struct {
			Transport      string
			Reason         *string
			SmallReadBytes *int64 `json:"small_read_bytes"`
			Reads          int
			Bytes          int64
		}
		Extents []struct {
			Offset    int64 `json:"offset_bytes"`
			Length    int64 `json:"length_bytes"`
			DataConn  int   `json:"data_connection"`
			Transport string
		}
	}
	if err := json.Unmarshal([]byte(js), &r); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want[1<<20:1<<20+length]) {
		t.Fatal("bytes differ")
	}
	if r.Transport != "devmem-emulated" || r.Requests != 3 || len(r.Paths) != 2 {
		t.Fatalf("result %s", js)
	}
	dm, small := r.Paths[0], r.Paths[1] // in the order the requests ended
	if dm.Transport == "tcp" {
		dm, small = small, dm
	}
	if dm.Transport != "devmem-emulated" || dm.Reason != nil || dm.SmallReadBytes != nil || dm.Reads != 2 || dm.Bytes != 2<<20 {
		t.Fatalf("devmem path %+v in %s", dm, js)
	}
	if small.Transport != "tcp" || small.Reason == nil || *small.Reason != "small-read" ||
		small.SmallReadBytes == nil || *small.SmallReadBytes != 64<<10 || small.Reads != 1 || small.Bytes != 4<<10 {
		t.Fatalf("small path %+v in %s", small, js)
	}
	for _, x := range r.Extents {
		if wantTr := map[bool]string{true: "tcp", false: "devmem-emulated"}[x.Length == 4<<10]; x.Transport != wantTr {
			t.Fatalf("extent %+v went over %s, want %s", x, x.Transport, wantTr)
		}
	}

	res := runCmd(t, env, "blockcat", append(args, "--log-level", "debug")...)
	if res.code != 0 || !strings.Contains(res.stdout, "devmem-emulated 2 reads") || !strings.Contains(res.stdout, "tcp 1 read (small-read < 64KiB)") {
		t.Fatalf("exit %d stdout %q stderr %q", res.code, res.stdout, res.stderr)
	}
	if !strings.Contains(res.stderr, "read path") || !strings.Contains(res.stderr, "reason=\"small-read: 4096 bytes") {
		t.Fatalf("blockcat's debug log does not name the small read's path:\n%s", res.stderr)
	}
	if log := s.log.String(); !strings.Contains(log, "path=plain reason=small-read") || !strings.Contains(log, "path=devmem-emulated reason=\"\"") {
		t.Fatalf("blockd's debug log does not name the paths:\n%s", log)
	}
}
