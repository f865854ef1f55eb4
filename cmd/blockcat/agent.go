package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/engine/agent"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport/choose"
)

// defaultAgentSocket is where blockcat agent listens without --socket (the
// systemd unit's RuntimeDirectory).
const defaultAgentSocket = "/run/blockxfer/agent.sock"

// agentFlags are the flags of `blockcat agent`.
type agentFlags struct {
	socket    string
	mode      string
	keyFile   string
	dataConns connsFlag
	devmem    devmemFlag
	verify    bool
	noVerify  bool
	servers   string
	allowUIDs string
	maxConns  int
	logLevel  string
	logFormat string
}

// parseAgentFlags parses and checks the arguments of `blockcat agent`.
func parseAgentFlags(args []string, stderr io.Writer) (*agentFlags, os.FileMode, []uint32, []string, error) {
	f := &agentFlags{dataConns: 4}
	f.devmem.mode = "auto"
	fs := flag.NewFlagSet("blockcat agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.socket, "socket", defaultAgentSocket, "unix socket `PATH` applications connect to")
	fs.StringVar(&f.mode, "socket-mode", "0660", "file mode of the socket, in octal: who may connect is who may use the agent")
	fs.StringVar(&f.keyFile, "key-file", "", "pre-shared key file of the servers (default $"+cli.KeyEnv+")")
	fs.Var(&f.dataConns, "data-conns", "parallel data connections per server session, 1 to 64")
	fs.Var(&f.devmem, "devmem", "`MODE` of devmem receive: auto (fall back to tcp, saying why), off, require, or emulate (software NIC)")
	fs.BoolVar(&f.verify, "verify", false, "require every extent's CRC-32C checked; fail reads whose extents cannot be")
	fs.BoolVar(&f.noVerify, "no-verify", false, noVerifyHelp)
	fs.StringVar(&f.servers, "servers", "", "comma-separated `SERVERS` to open sessions with at start (others on first use)")
	fs.StringVar(&f.allowUIDs, "allow-uid", "", "comma-separated `UIDS` allowed besides root and the agent's own (default: anyone the socket mode lets in)")
	fs.IntVar(&f.maxConns, "max-conns", 256, "applications connected at once")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	usage := "[--socket PATH] [--socket-mode 0660] [--servers LIST] [--allow-uid LIST] [flags]\n\n" +
		"Serve applications on this host over a unix socket: they register memory they own\n" +
		"(a sealed memfd, passed by SCM_RIGHTS) and submit reads of volumes into it\n" +
		"(docs/agent-protocol.md; the Python client is docs/python.md). The agent keeps\n" +
		"sessions to the servers warm and runs until SIGINT or SIGTERM."
	if _, err := cli.Parse(fs, args, 0, usage); err != nil {
		return nil, 0, nil, nil, cli.UsageErr(err)
	}
	if f.verify && f.noVerify {
		return nil, 0, nil, nil, cli.UsageErr(errors.New("--verify and --no-verify contradict each other"))
	}
	mode, err := strconv.ParseUint(f.mode, 8, 32)
	if err != nil || mode == 0 || mode > 0o777 {
		return nil, 0, nil, nil, cli.UsageErr(fmt.Errorf("--socket-mode %q: want an octal file mode such as 0660", f.mode))
	}
	var uids []uint32
	for _, s := range strings.Split(f.allowUIDs, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		u, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, 0, nil, nil, cli.UsageErr(fmt.Errorf("--allow-uid %q: want numeric uids", s))
		}
		uids = append(uids, uint32(u))
	}
	var servers []string
	if f.servers != "" {
		list, err := cli.AddrList(f.servers)
		if err != nil {
			return nil, 0, nil, nil, cli.UsageErr(fmt.Errorf("--servers: %w", err))
		}
		servers = strings.Split(list, ",")
	}
	return f, os.FileMode(mode), uids, servers, nil
}

// runAgent runs `blockcat agent` until ctx ends (SIGINT, SIGTERM).
func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, mode, uids, servers, err := parseAgentFlags(args, stderr)
	if err != nil {
		return err
	}
	devmode, err := choose.ParseMode(f.devmem.mode)
	if err != nil {
		return cli.UsageErr(err)
	}
	key, err := cli.LoadKey(f.keyFile)
	if err != nil {
		return err
	}
	log, err := cli.NewLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		return cli.UsageErr(err)
	}
	c := common{devmem: f.devmem}
	pathLog := c.pathLogger(log)
	a, err := agent.New(agent.Config{
		Key:       key,
		Provider:  hostmem.New(),
		DataConns: int(f.dataConns),
		Verify:    verifyMode(f.verify, f.noVerify),
		Name:      "blockcat-agent",
		Servers:   servers,
		AllowUIDs: uids,
		MaxConns:  f.maxConns,
		Logger:    log,
		ServerAddr: func(s string) (string, error) {
			return cli.ServerAddr(s)
		},
		Path: func(ctx context.Context, server string, p memory.Provider) (*agent.Path, error) {
			cp, err := choose.Client(ctx, choose.ClientOptions{Mode: devmode, Server: server, Provider: p,
				DataConns: int(f.dataConns), Logger: pathLog})
			if err != nil {
				return nil, err
			}
			return &agent.Path{Transport: cp.Transport, FallbackReason: cp.FallbackReason, Close: cp.Close}, nil
		},
	})
	if err != nil {
		return err
	}
	l, err := agent.Listen(f.socket, mode)
	if err != nil {
		a.Close()
		return err
	}
	log.Info("agent serving", "socket", f.socket, "mode", fmt.Sprintf("%#o", mode), "pid", os.Getpid())
	served := make(chan error, 1)
	go func() { served <- a.Serve(l) }()
	select {
	case <-ctx.Done():
	case err = <-served:
	}
	cerr := a.Close()
	if err == nil {
		err = <-served
	}
	log.Info("agent stopped", "reason", context.Cause(ctx))
	return errors.Join(err, cerr)
}
