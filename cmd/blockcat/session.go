package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/transport/choose"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// connsFlag is --data-conns: 1 to blockproto.MaxDataConns, checked as it
// is parsed, so that a bad value is a usage error (exit 2) and the number
// reported is the number used.
type connsFlag int

// String implements flag.Value.
func (n *connsFlag) String() string { return strconv.Itoa(int(*n)) }

// Set implements flag.Value.
func (n *connsFlag) Set(v string) error {
	i, err := strconv.Atoi(v)
	if err != nil || i < 1 || i > blockproto.MaxDataConns {
		return fmt.Errorf("want a whole number of data connections from 1 to %d", blockproto.MaxDataConns)
	}
	*n = connsFlag(i)
	return nil
}

// devmemFlag is --devmem: a mode choose.ParseMode accepts, and whether the
// command line gave it (then a fallback to TCP is a warning; by default it
// is logged at info level, and the summary says it anyway).
type devmemFlag struct {
	mode string
	set  bool
}

// String implements flag.Value.
func (d *devmemFlag) String() string { return d.mode }

// Set implements flag.Value.
func (d *devmemFlag) Set(v string) error {
	if _, err := choose.ParseMode(v); err != nil {
		return errors.New("want auto, off, require or emulate")
	}
	d.mode, d.set = v, true
	return nil
}

// pathLogger returns the logger of choose.Client: log, but with the
// fallback to TCP, a warning there, logged at info level unless --devmem
// was given (the result reports the fallback in any case).
func (c *common) pathLogger(log *slog.Logger) *slog.Logger {
	if c.devmem.set {
		return log
	}
	return slog.New(demoteWarnings{log.Handler()})
}

// demoteWarnings logs warnings at info level.
type demoteWarnings struct{ slog.Handler }

// Handle implements slog.Handler.
func (h demoteWarnings) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		r.Level = slog.LevelInfo
		if !h.Handler.Enabled(ctx, r.Level) {
			return nil
		}
	}
	return h.Handler.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h demoteWarnings) WithAttrs(as []slog.Attr) slog.Handler {
	return demoteWarnings{h.Handler.WithAttrs(as)}
}

// WithGroup implements slog.Handler.
func (h demoteWarnings) WithGroup(name string) slog.Handler {
	return demoteWarnings{h.Handler.WithGroup(name)}
}

// dialControl opens a session for a command that moves no payload (ls,
// upload): host memory, TCP, one data connection. It starts no provider
// plugin and probes no devmem, so --provider and --devmem cannot make it
// fail. The caller closes the conn.
func (c *common) dialControl(ctx context.Context, server string, stderr io.Writer) (*conn, error) {
	key, log, err := c.credentials(stderr)
	if err != nil {
		return nil, err
	}
	p := hostmem.New()
	path := &choose.ClientPath{Transport: &tcp.Transport{}}
	s, err := engine.Dial(ctx, server, engine.Config{Key: key, Provider: p, Transport: path.Transport,
		DataConns: 1, Name: "blockcat", Logger: log})
	if err != nil {
		p.Close()
		return nil, c.explainDial(server, err)
	}
	return &conn{Session: s, p: p, path: path}, nil
}

// explainDial says what to do about a session that could not be opened:
// for a key the server refused, which key file was used and where the
// right one is.
func (c *common) explainDial(server string, err error) error {
	if !errors.Is(err, engine.ErrAuth) {
		return err
	}
	file, from := c.keyFile, "--key-file"
	if file == "" {
		file, from = os.Getenv(cli.KeyEnv), "$"+cli.KeyEnv
	}
	return &explained{err: err, msg: fmt.Sprintf("authentication failed: the blockd at %s does not hold the key in %s (from %s); "+
		"pass the key file that blockd uses (its --key-file, by default DATA/blockd.key) with --key-file or $%s",
		server, file, from, cli.KeyEnv)}
}

// explained is err told in other words: msg replaces its message, and it
// still matches what err matches.
type explained struct {
	err error
	msg string
}

func (e *explained) Error() string { return e.msg }
func (e *explained) Unwrap() error { return e.err }

// noVolume explains a stat of volume on server that failed: for a volume
// the server does not have, it names the closest ones it has and how to
// list them all. Other errors are returned as they are.
func noVolume(ctx context.Context, s *conn, server, volume string, err error) error {
	var pe *blockproto.Error
	if !errors.As(err, &pe) || pe.Code != blockproto.CodeNotFound || !strings.Contains(pe.Message, catalog.ErrNotFound.Error()) {
		return err // such as an invalid name, which the server's message explains
	}
	msg := fmt.Sprintf("no volume %q on %s", volume, server)
	vols, lerr := s.Volumes(ctx)
	if lerr != nil {
		return fmt.Errorf("%s (blockcat ls %s lists them)", msg, server)
	}
	if len(vols) == 0 {
		return fmt.Errorf("%s: it has no volumes ('blockcat upload %s NAME FILE' adds one)", msg, server)
	}
	names := make([]string, len(vols))
	for i, v := range vols {
		names[i] = v.Name
	}
	if near := closest(volume, names, 3); len(near) > 0 {
		return fmt.Errorf("%s; did you mean %s? (blockcat ls %s lists them)", msg, orList(near), server)
	}
	return fmt.Errorf("%s (blockcat ls %s lists them)", msg, server)
}
