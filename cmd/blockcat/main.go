// Command blockcat fetches blockxfer volumes into accelerator (or host)
// memory, writes them out, verifies them and benchmarks the path.
//
//	blockcat ls SERVER
//	blockcat get SERVER VOLUME [--offset N --length N] [-o FILE|-] [--continue] [--verify] [--json]
//	blockcat bench SERVER VOLUME [--sizes LIST] [--duration D] [--json]
//	blockcat put FILE --name V --ec K+M --peers A,B,... [--manifest OUT | --etcd E]
//	blockcat providers | doctor
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport/choose"
)

func main() {
	ctx, stop := signalContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// signalError is the cause of a context that a signal cancelled.
type signalError struct{ sig syscall.Signal }

func (e *signalError) Error() string {
	switch e.sig {
	case syscall.SIGINT:
		return "interrupted (SIGINT)"
	case syscall.SIGTERM:
		return "terminated (SIGTERM)"
	}
	return "stopped by signal " + e.sig.String()
}

// signalContext returns a context that the first of sigs to arrive
// cancels, with a *signalError as its cause, so that the command stops
// cleanly; a second signal then takes its default action. stop releases
// the signals.
func signalContext(parent context.Context, sigs ...os.Signal) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	go func() {
		select {
		case s := <-ch:
			signal.Reset(sigs...)
			sig, _ := s.(syscall.Signal)
			cancel(&signalError{sig: sig})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		cancel(nil)
	}
}

// stopCause returns the signal that stopped the command when ctx was
// cancelled by one, in place of err (which then only says that the
// context was cancelled), and err otherwise.
func stopCause(ctx context.Context, err error) error {
	var se *signalError
	if err != nil && ctx.Err() != nil && errors.As(context.Cause(ctx), &se) {
		return se
	}
	return err
}

// exitCode reports err and returns the exit status as cli.ExitCode does,
// except that a command stopped by a signal exits with 128 + the signal's
// number, as a shell reports it: 130 for SIGINT, 143 for SIGTERM.
func exitCode(ctx context.Context, err error, stderr io.Writer) int {
	var se *signalError
	if err != nil && !errors.Is(err, flag.ErrHelp) && !errors.As(err, &se) && errors.As(context.Cause(ctx), &se) {
		err = fmt.Errorf("%w: %w", se, err)
	}
	if errors.As(err, &se) {
		fmt.Fprintf(stderr, "blockcat: %v\n", err)
		return 128 + int(se.sig)
	}
	return cli.ExitCode("blockcat", err, stderr)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		program().WriteUsage(stderr)
		return 2
	}
	var err error
	switch args[0] {
	case "ls":
		err = ls(ctx, args[1:], stdout, stderr)
	case "get":
		err = dispatchGet(ctx, args[1:], stdout, stderr)
	case "put":
		err = put(ctx, args[1:], stdout, stderr)
	case "bench":
		err = bench(ctx, args[1:], stdout, stderr)
	case "providers":
		err = listProviders(ctx, args[1:], stdout, stderr)
	case "upload":
		err = upload(ctx, args[1:], stdout, stderr)
	case "agent":
		err = runAgent(ctx, args[1:], stdout, stderr)
	case "doctor":
		err = cli.Doctor(ctx, "blockcat doctor", args[1:], stdout, stderr)
	case "selftest":
		err = selftestCmd(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		err = cli.Version("blockcat", args[1:], stdout, stderr)
	case "completion":
		err = cli.Completion("blockcat", commands(), args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		err = cli.Help(program(), args[1:], stdout, stderr)
	case "man":
		err = cli.Man(program(), args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "blockcat: unknown command %q: run 'blockcat help' for the commands\n", args[0])
		return 2
	}
	return exitCode(ctx, err, stderr)
}

// common holds the flags every command that talks to a server shares.
type common struct {
	keyFile   string
	dataConns connsFlag
	timeout   time.Duration
	logLevel  string
	verify    bool
	noVerify  bool
	provider  string
	pluginDir string
	devmem    devmemFlag
	noResume  bool
}

// registerControl defines the flags of the commands that move no payload
// (ls, upload). They take --provider, --plugin-dir and --devmem too, so
// that a command line written for get works, but -h does not list them:
// there is no payload to place, so no provider is opened and no devmem
// probed. --data-conns they do not take.
func (c *common) registerControl(fs *flag.FlagSet) {
	c.devmem.mode = "auto"
	fs.StringVar(&c.keyFile, "key-file", "", "pre-shared key `FILE` (default $"+cli.KeyEnv+")")
	fs.DurationVar(&c.timeout, "timeout", 0, "give up after this long, such as 30s (0: no limit)")
	fs.StringVar(&c.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	ignored := "accepted and ignored: this command moves no payload"
	cli.Hidden(fs, stringValue{&c.provider}, "provider", ignored)
	cli.Hidden(fs, stringValue{&c.pluginDir}, "plugin-dir", ignored)
	cli.Hidden(fs, &c.devmem, "devmem", ignored)
}

// register defines the flags of the commands that fetch payload.
func (c *common) register(fs *flag.FlagSet) {
	c.dataConns, c.devmem.mode = 4, "auto"
	fs.StringVar(&c.keyFile, "key-file", "", "pre-shared key `FILE` (default $"+cli.KeyEnv+")")
	fs.Var(&c.dataConns, "data-conns", "parallel data connections, 1 to 64")
	fs.DurationVar(&c.timeout, "timeout", 0, "give up after this long, such as 30s (0: no limit)")
	fs.StringVar(&c.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	fs.StringVar(&c.provider, "provider", "host", "memory to fetch into: host, a plugin NAME, or a plugin PATH")
	fs.Var(&c.devmem, "devmem", "`MODE` of devmem receive: auto (fall back to tcp, saying why), off, require, or emulate (software NIC)")
	fs.StringVar(&c.pluginDir, "plugin-dir", "", cli.PluginDirHelp)
	fs.BoolVar(&c.noResume, "no-resume", false, "fail when the session to the server is lost, instead of reconnecting\n"+
		"(with back-off, up to 10 times) and fetching only the bytes that had not landed")
}

// stringValue is a flag.Value setting a string.
type stringValue struct{ p *string }

func (v stringValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v stringValue) Set(s string) error { *v.p = s; return nil }

// conn is an open session with what it was built from, and the client
// that re-dials it for reads that ride through a lost session.
type conn struct {
	*engine.Session
	client *engine.Client // nil for dialControl's sessions
	p      memory.Provider
	path   *choose.ClientPath
}

// Close ends the sessions, then releases the transport and the provider.
func (c *conn) Close() error {
	err := c.Session.Close()
	if c.client != nil {
		err = errors.Join(err, c.client.Close())
	}
	return errors.Join(err, c.path.Close(), c.p.Close())
}

// dial opens the provider, chooses the transport (--devmem) and opens a
// session. The caller closes the conn.
func (c *common) dial(ctx context.Context, server string, stderr io.Writer) (*conn, error) {
	return c.dialHolders(ctx, []engine.Holder{{Addr: server}}, stderr)
}

// dialHolders is dial for a volume several servers hold: the conn's
// client reads from the first that answers and fails over to the others.
// The transport is chosen for the route to the first holder.
func (c *common) dialHolders(ctx context.Context, holders []engine.Holder, stderr io.Writer) (*conn, error) {
	server := holders[0].Addr
	mode, err := choose.ParseMode(c.devmem.mode)
	if err != nil {
		return nil, cli.UsageErr(err)
	}
	key, log, err := c.credentials(stderr)
	if err != nil {
		return nil, err
	}
	p, err := cli.OpenProvider(ctx, c.provider, c.pluginDir, c.logLevel, stderr)
	if err != nil {
		return nil, err
	}
	path, err := choose.Client(ctx, choose.ClientOptions{Mode: mode, Server: server, Provider: p,
		DataConns: int(c.dataConns), Logger: c.pathLogger(log)})
	if err != nil {
		p.Close()
		return nil, err
	}
	resume := engine.ResumeOptions{}
	if c.noResume {
		resume.Attempts = -1
	}
	cl := engine.NewFailoverClient(holders, engine.Config{
		Key:            key,
		Provider:       p,
		Transport:      path.Transport,
		PlainTransport: path.Plain,
		FallbackReason: path.FallbackReason,
		DataConns:      int(c.dataConns),
		Verify:         verifyMode(c.verify, c.noVerify),
		Name:           "blockcat",
		Logger:         log,
	}, resume)
	s, err := cl.Session(ctx)
	if err != nil {
		path.Close()
		p.Close()
		return nil, c.explainDial(server, err)
	}
	return &conn{Session: s, client: cl, p: p, path: path}, nil
}

// credentials loads the key (--key-file, else $BLOCKXFER_KEY_FILE) and
// makes the logger (--log-level): what every command that dials needs.
func (c *common) credentials(stderr io.Writer) ([]byte, *slog.Logger, error) {
	key, err := cli.LoadKey(c.keyFile)
	if err != nil {
		return nil, nil, err
	}
	log, err := cli.NewLogger(stderr, "text", c.logLevel)
	if err != nil {
		return nil, nil, cli.UsageErr(err)
	}
	return key, log, nil
}

func (c *common) context(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.timeout > 0 {
		return context.WithTimeout(ctx, c.timeout)
	}
	return context.WithCancel(ctx)
}

// lsResult is what `blockcat ls --json` prints.
type lsResult struct {
	Server  string       `json:"server"`
	Volumes []volumeInfo `json:"volumes"`
}

// volumeInfo is a volume of a server as the --json of blockcat prints it.
type volumeInfo struct {
	Name            string `json:"name"`
	SizeBytes       uint64 `json:"size_bytes"`
	ExtentSizeBytes uint32 `json:"extent_size_bytes"`
	Generation      uint64 `json:"generation"`
}

func ls(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("blockcat ls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.registerControl(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := cli.ParseServer(fs, args, 1, "SERVER [--json]")
	if err != nil {
		return cli.UsageErr(err)
	}
	ctx, cancel := c.context(ctx)
	defer cancel()
	s, err := c.dialControl(ctx, pos[0], stderr)
	if err != nil {
		return err
	}
	defer s.Close()
	vols, err := s.Volumes(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		res := lsResult{Server: pos[0], Volumes: []volumeInfo{}}
		for _, v := range vols {
			res.Volumes = append(res.Volumes, volumeInfo{Name: v.Name, SizeBytes: v.Size, ExtentSizeBytes: v.ExtentSize, Generation: v.Generation})
		}
		return cli.WriteJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "%-32s %12s %10s %5s\n", "NAME", "SIZE", "EXTENT", "GEN")
	for _, v := range vols {
		fmt.Fprintf(stdout, "%-32s %12s %10s %5d\n", v.Name, cli.FormatBytes(float64(v.Size)),
			cli.FormatBytes(float64(v.ExtentSize)), v.Generation)
	}
	return nil
}

// verifyMode maps --verify and --no-verify onto the engine's mode: with
// --verify every extent must be checked, with --no-verify none is, and by
// default extents are checked wherever the path allows.
func verifyMode(require, off bool) engine.VerifyMode {
	switch {
	case require:
		return engine.VerifyRequire
	case off:
		return engine.VerifyOff
	}
	return engine.VerifyAuto
}

// noVerifyHelp describes --no-verify.
const noVerifyHelp = "do not check extents' CRC-32C (to measure the raw data path; results say so)"
