package cli

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// DefaultPort is blockd's port: what blockd serve listens on by default, and
// what an address without a port means.
const DefaultPort = "7070"

// ServerEnv names the environment variable with the server blockcat talks
// to when a command's SERVER argument is left out.
const ServerEnv = "BLOCKXFER_SERVER"

// DataEnv names the environment variable with blockd's default --data.
const DataEnv = "BLOCKXFER_DATA"

// ErrNoDataDir is the usage error of a blockd command given no --data.
var ErrNoDataDir = errors.New("--data is required (or set $" + DataEnv + ")")

// AddrHelp explains server addresses in usage texts.
const AddrHelp = "SERVER is HOST[:PORT], HOST a name or an IP address (an IPv6 address in\n" +
	"brackets when a port follows: [::1]:7070); the port defaults to " + DefaultPort + ".\n" +
	"SERVER may be left out when $" + ServerEnv + " is set."

// ServerAddr returns the address s names, with the default port when it has
// none: "host" is "host:7070", "[::1]" and "::1" are "[::1]:7070", and
// "host:9000", "[::1]:9000" and ":9000" (this machine) are kept as they are.
// It refuses an empty address, a URL, an empty or non-numeric port, and an
// IPv6 address that is not in brackets but is followed by something that is
// not part of it.
func ServerAddr(s string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("bad address %q: %s", s, why)
	}
	switch {
	case s == "":
		return "", errors.New("empty address: want HOST[:PORT]")
	case strings.Contains(s, "://"):
		return bad("want HOST[:PORT], not a URL")
	case strings.ContainsAny(s, " \t\n/"):
		return bad("want HOST[:PORT]")
	}
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return bad("no ] after the IPv6 address")
		}
		host, rest := s[1:end], s[end+1:]
		if host == "" || strings.ContainsAny(host, "[]") {
			return bad("want [IPV6ADDR] or [IPV6ADDR]:PORT")
		}
		switch {
		case rest == "":
			return net.JoinHostPort(host, DefaultPort), nil
		case rest[0] != ':':
			return bad("want [IPV6ADDR] or [IPV6ADDR]:PORT")
		}
		if err := checkPort(rest[1:]); err != nil {
			return bad(err.Error())
		}
		return s, nil
	}
	if strings.Count(s, ":") > 1 {
		if a, err := netip.ParseAddr(s); err == nil && a.Is6() {
			return net.JoinHostPort(s, DefaultPort), nil
		}
		return bad("put an IPv6 address in brackets when a port follows, as in [::1]:" + DefaultPort)
	}
	host, port, hasPort := strings.Cut(s, ":")
	if !hasPort {
		return net.JoinHostPort(host, DefaultPort), nil
	}
	if err := checkPort(port); err != nil {
		return bad(err.Error())
	}
	return s, nil
}

// checkPort checks a port number.
func checkPort(p string) error {
	if p == "" {
		return errors.New("empty port (leave out the colon for port " + DefaultPort + ")")
	}
	if _, err := strconv.ParseUint(p, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", p)
	}
	return nil
}

// AddrList applies ServerAddr to each address of a comma-separated list
// such as --peers, dropping empty items, and returns the list joined with
// commas.
func AddrList(s string) (string, error) {
	addrs := SplitList(s)
	for i, a := range addrs {
		var err error
		if addrs[i], err = ServerAddr(a); err != nil {
			return "", err
		}
	}
	return strings.Join(addrs, ","), nil
}

// ParseServer is Parse for a command whose first positional argument is
// SERVER; want counts it. SERVER may be left out when $BLOCKXFER_SERVER is
// set: with one positional argument fewer than want, the variable gives the
// server and the arguments given are the ones after SERVER. SERVER gets the
// default port (ServerAddr). -h explains all this (AddrHelp) after the
// command's own paragraphs.
func ParseServer(fs *flag.FlagSet, args []string, want int, usage string) ([]string, error) {
	usage = addAbout(usage, AddrHelp)
	pos, err := ParseRange(fs, args, want-1, want, usage)
	if err != nil {
		return nil, err
	}
	from := "SERVER"
	if len(pos) == want-1 {
		env := os.Getenv(ServerEnv)
		if env == "" {
			return nil, fmt.Errorf("usage: %s (SERVER may be left out when $%s is set)", Synopsis(fs, usage), ServerEnv)
		}
		pos, from = append([]string{env}, pos...), "$"+ServerEnv
	}
	if pos[0], err = ServerAddr(pos[0]); err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	return pos, nil
}

// DataDirFlag defines blockd's --data on fs, storing into p, with
// $BLOCKXFER_DATA as its default; what describes the directory, such as
// "data directory holding catalog.db and volumes/". The command still
// refuses an empty --data (ErrNoDataDir).
func DataDirFlag(fs *flag.FlagSet, p *string, what string) {
	fs.StringVar(p, "data", os.Getenv(DataEnv), what+" (required; default $"+DataEnv+")")
}
