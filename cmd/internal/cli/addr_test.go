package cli

import (
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestServerAddr(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"myhost", "myhost:7070"},
		{"myhost:9000", "myhost:9000"},
		{"10.0.0.1", "10.0.0.1:7070"},
		{"10.0.0.1:7071", "10.0.0.1:7071"},
		{"[::1]", "[::1]:7070"},
		{"[::1]:9000", "[::1]:9000"},
		{"::1", "[::1]:7070"},
		{"2001:db8::7", "[2001:db8::7]:7070"},
		{"fe80::1%eth0", "[fe80::1%eth0]:7070"},
		{"[fe80::1%eth0]:9000", "[fe80::1%eth0]:9000"},
		{":7070", ":7070"},
		{"127.0.0.1:0", "127.0.0.1:0"},
	} {
		got, err := ServerAddr(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ServerAddr(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, why string }{
		{"", "empty address"},
		{"myhost:", "empty port"},
		{"myhost:http", `port "http" is not a number`},
		{"myhost:70000", "not a number from 0 to 65535"},
		{"myhost:-1", "not a number"},
		{"[::1", "no ]"},
		{"[::1]9000", "want [IPV6ADDR]"},
		{"[::1]:", "empty port"},
		{"[]:7070", "want [IPV6ADDR]"},
		{"2001:db8::7:x", "put an IPv6 address in brackets"},
		{"a:b:c", "put an IPv6 address in brackets"},
		{"blockd://myhost:7070", "not a URL"},
		{"my host", "want HOST[:PORT]"},
	} {
		got, err := ServerAddr(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("ServerAddr(%q) = %q, %v; want an error saying %q", tc.in, got, err, tc.why)
		}
	}
}

func TestAddrList(t *testing.T) {
	got, err := AddrList(" a, b:9000 ,[::1],, ")
	if want := "a:7070,b:9000,[::1]:7070"; err != nil || got != want {
		t.Errorf("AddrList = %q, %v; want %q", got, err, want)
	}
	if got, err := AddrList(""); err != nil || got != "" {
		t.Errorf("AddrList(\"\") = %q, %v", got, err)
	}
	if _, err := AddrList("a,b:x"); err == nil || !strings.Contains(err.Error(), `"b:x"`) {
		t.Errorf("AddrList(a,b:x): %v", err)
	}
}

// parseServer runs ParseServer for a command like get SERVER VOLUME.
func parseServer(args ...string) ([]string, error) {
	fs := flag.NewFlagSet("blockcat get", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Bool("json", false, "")
	return ParseServer(fs, args, 2, "SERVER VOLUME [--json]")
}

func TestParseServerEnv(t *testing.T) {
	t.Setenv(ServerEnv, "")
	if pos, err := parseServer("host", "vol", "--json"); err != nil || !slices.Equal(pos, []string{"host:7070", "vol"}) {
		t.Errorf("host vol: %q, %v", pos, err)
	}
	if _, err := parseServer("vol"); err == nil || !strings.Contains(err.Error(), "$"+ServerEnv) {
		t.Errorf("vol without $%s: %v, want the usage naming the variable", ServerEnv, err)
	}
	if _, err := parseServer("host:x", "vol"); err == nil || !strings.HasPrefix(err.Error(), "SERVER: bad address") {
		t.Errorf("bad SERVER: %v", err)
	}

	t.Setenv(ServerEnv, "[::1]")
	// One positional argument fewer than the command takes: it is the
	// VOLUME, and the server comes from the variable.
	if pos, err := parseServer("--json", "vol"); err != nil || !slices.Equal(pos, []string{"[::1]:7070", "vol"}) {
		t.Errorf("vol with $%s: %q, %v", ServerEnv, pos, err)
	}
	// Both given: the argument wins.
	if pos, err := parseServer("other:1", "vol"); err != nil || !slices.Equal(pos, []string{"other:1", "vol"}) {
		t.Errorf("SERVER VOLUME with $%s: %q, %v", ServerEnv, pos, err)
	}
	for _, args := range [][]string{{}, {"a", "b", "c"}} {
		if _, err := parseServer(args...); err == nil || !strings.Contains(err.Error(), "usage: blockcat get SERVER VOLUME") {
			t.Errorf("%q: %v, want the usage", args, err)
		}
	}
	t.Setenv(ServerEnv, "bad:port")
	if _, err := parseServer("vol"); err == nil || !strings.HasPrefix(err.Error(), "$"+ServerEnv+": bad address") {
		t.Errorf("bad $%s: %v", ServerEnv, err)
	}
}

// TestParseServerHelp: -h explains SERVER and the variable.
func TestParseServerHelp(t *testing.T) {
	var b strings.Builder
	fs := flag.NewFlagSet("blockcat ls", flag.ContinueOnError)
	fs.SetOutput(&b)
	fs.Bool("json", false, "print JSON")
	if _, err := ParseServer(fs, []string{"-h"}, 1, "SERVER [--json]"); err != flag.ErrHelp {
		t.Fatalf("-h: %v", err)
	}
	for _, want := range []string{"usage: blockcat ls SERVER [--json]", "port defaults to 7070", "$" + ServerEnv, "-json"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("-h lacks %q:\n%s", want, b.String())
		}
	}
}

func TestDataDirFlag(t *testing.T) {
	for _, env := range []string{"", "/srv/blockxfer"} {
		t.Setenv(DataEnv, env)
		var dir string
		fs := flag.NewFlagSet("blockd volume list", flag.ContinueOnError)
		DataDirFlag(fs, &dir, "data directory")
		if _, err := Parse(fs, nil, 0, ""); err != nil || dir != env {
			t.Errorf("$%s=%q: --data %q, %v", DataEnv, env, dir, err)
		}
		if _, err := Parse(fs, []string{"--data", "/x"}, 0, ""); err != nil || dir != "/x" {
			t.Errorf("$%s=%q: --data /x gives %q, %v", DataEnv, env, dir, err)
		}
		if u := fs.Lookup("data").Usage; !strings.Contains(u, "$"+DataEnv) {
			t.Errorf("--data's usage does not name $%s: %q", DataEnv, u)
		}
	}
}
