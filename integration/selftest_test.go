package integration

import (
	"encoding/json"
	"strings"
	"testing"
)

// selftestReport is the part of `blockcat selftest --json` the tests read.
type selftestReport struct {
	Server         string  `json:"server"`
	ServerName     *string `json:"server_name"`
	Volume         string  `json:"volume"`
	Transport      *string `json:"transport"`
	FallbackReason *string `json:"fallback_reason"`
	ServerSend     *string `json:"server_transport"`
	Passed         bool    `json:"passed"`
	Failed         int     `json:"failed_checks"`
	Checks         []struct {
		Name          string
		Exercises     string
		Status        string
		Transport     *string
		Detail        string
		Errno         *string
		VerifiedBytes int64 `json:"verified_bytes"`
		LinearBytes   int64 `json:"linear_bytes"`
	}
}

func runSelftest(t *testing.T, env []string, args ...string) (result, selftestReport) {
	t.Helper()
	r := runCmd(t, env, "blockcat", append([]string{"selftest"}, args...)...)
	var rep selftestReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("selftest %v: exit %d, output not JSON: %v\n%s\n%s", args, r.code, err, r.stdout, r.stderr)
	}
	return r, rep
}

// statuses maps each check to its status, checking that every check says
// what it exercised and every skip why.
func (rep selftestReport) statuses(t *testing.T) map[string]string {
	t.Helper()
	st := map[string]string{}
	for _, c := range rep.Checks {
		st[c.Name] = c.Status
		if c.Exercises == "" || (c.Status != "pass" && c.Detail == "") {
			t.Errorf("%s: %s without saying what it exercised or why: %+v", c.Name, c.Status, c)
		}
	}
	return st
}

// TestSelftest runs `blockcat selftest` against a real blockd over
// loopback: with no devmem NIC the rx checks run over the software NIC and
// the hardware parts are skipped with their reason.
func TestSelftest(t *testing.T) {
	data, env := newData(t, nil)
	emu := startServer(t, data, env, "--devmem", "emulate")

	t.Run("emulated server", func(t *testing.T) {
		r, rep := runSelftest(t, env, emu.addr, "--json", "--size", "4MiB")
		if r.code != 0 || !rep.Passed || rep.Failed != 0 {
			t.Fatalf("exit %d, report %s\nstderr %s", r.code, r.stdout, r.stderr)
		}
		if rep.Transport == nil || *rep.Transport != "devmem-emulated" || rep.FallbackReason == nil ||
			!strings.HasPrefix(*rep.FallbackReason, "loopback:") || rep.ServerSend == nil || *rep.ServerSend != "devmem-emulated" ||
			rep.ServerName == nil || rep.Volume != "blockxfer-selftest" {
			t.Fatalf("report %s", r.stdout)
		}
		st := rep.statuses(t)
		for _, name := range []string{"connect", "pattern-volume", "rx-pattern", "tx-pattern", "tx-small-chunks",
			"rx-hds-sizes", "rx-unsplit-packets", "rx-token-exhaustion", "rx-binding-loss"} {
			if st[name] != "pass" {
				t.Errorf("%s: %q, want pass", name, st[name])
			}
		}
		for _, name := range []string{"rx-bind", "tx-bind"} {
			if st[name] != "skip" {
				t.Errorf("%s: %q, want skip (hardware only)", name, st[name])
			}
		}
		for _, c := range rep.Checks {
			switch c.Name {
			case "rx-pattern":
				if c.VerifiedBytes != 4<<20 || c.Transport == nil || *c.Transport != "devmem-emulated" {
					t.Errorf("rx-pattern: %+v", c)
				}
			case "rx-unsplit-packets":
				// Packets that failed header split: read on, counted.
				if c.LinearBytes == 0 || c.VerifiedBytes != 4<<20 {
					t.Errorf("rx-unsplit-packets: %+v", c)
				}
			}
		}
		// The pattern volume stays on the server, for the next run to
		// replace.
		if ls := mustRun(t, env, "blockcat", "ls", emu.addr); !strings.Contains(ls, "blockxfer-selftest") {
			t.Errorf("ls after the selftest:\n%s", ls)
		}
	})

	t.Run("text", func(t *testing.T) {
		r := runCmd(t, env, "blockcat", "selftest", emu.addr, "--size", "1MiB", "--devmem", "emulate")
		if r.code != 0 {
			t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		for _, want := range []string{"PASS rx-pattern (devmem-emulated", "SKIP rx-bind", "--devmem emulate: the NIC was not tried",
			"exercised: devmem RX of the whole pattern volume", "PASS rx-binding-loss", ": 9 passed, 0 failed, 2 skipped"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, r.stdout)
			}
		}
	})

	t.Run("require on loopback", func(t *testing.T) {
		r, rep := runSelftest(t, env, emu.addr, "--json", "--size", "1MiB", "--devmem", "require")
		st := rep.statuses(t)
		if r.code != 1 || rep.Passed || rep.Failed != 1 || st["rx-bind"] != "fail" || st["rx-pattern"] != "skip" ||
			st["tx-pattern"] != "pass" || !strings.Contains(r.stderr, "selftest failed: 1 of 11 checks failed") {
			t.Fatalf("exit %d, report %s\nstderr %s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("server sending with tcp", func(t *testing.T) {
		data, env := newData(t, nil)
		plain := startServer(t, data, env, "--devmem", "off")
		r, rep := runSelftest(t, env, plain.addr, "--json", "--size", "1MiB")
		st := rep.statuses(t)
		if r.code != 0 || *rep.ServerSend != "tcp" || st["tx-pattern"] != "skip" || st["tx-small-chunks"] != "skip" || st["rx-pattern"] != "pass" {
			t.Fatalf("exit %d, report %s", r.code, r.stdout)
		}
		for _, c := range rep.Checks {
			if c.Name == "tx-pattern" && !strings.Contains(c.Detail, "blockd sends with tcp") {
				t.Errorf("tx-pattern skipped for %q", c.Detail)
			}
		}
	})

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{{emu.addr, "--devmem", "off"}, {emu.addr, "--size", "4KiB"}} {
			if r := runCmd(t, env, "blockcat", append([]string{"selftest"}, args...)...); r.code != 2 {
				t.Errorf("selftest %v: exit %d, want 2\n%s", args, r.code, r.stderr)
			}
		}
	})
}
