package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/ec"
	"github.com/blockxfer/blockxfer/engine/agent"
	"github.com/blockxfer/blockxfer/providers"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport/choose"
)

// gpuDeviceEnv is the environment variable the gpu provider plugin takes
// its device ordinal from.
const gpuDeviceEnv = "BLOCKXFER_GPU_DEVICE"

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
	gpu       string
	pluginDir string
	etcd      string
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
	fs.StringVar(&f.gpu, "gpu", "auto", "`MODE` of device memory (CUDA IPC handles, VMM fds): auto (the gpu provider plugin,\n"+
		"started per device on its first registration) or off")
	fs.StringVar(&f.pluginDir, "plugin-dir", "", cli.PluginDirHelp)
	fs.StringVar(&f.etcd, "etcd", "", "etcd `ENDPOINTS` of the cluster catalog: reads may name its striped volumes")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	usage := "[--socket PATH] [--socket-mode 0660] [--servers LIST] [--allow-uid LIST] [flags]\n\n" +
		"Serve applications on this host over a unix socket: they register memory they own\n" +
		"(a sealed memfd, passed by SCM_RIGHTS, or CUDA device memory by IPC handle or VMM fd)\n" +
		"and submit reads of volumes into it (striped volumes too, with --etcd)\n" +
		"(docs/agent-protocol.md; the Python client is docs/python.md). The agent keeps\n" +
		"sessions to the servers warm and runs until SIGINT or SIGTERM."
	if _, err := cli.Parse(fs, args, 0, usage); err != nil {
		return nil, 0, nil, nil, cli.UsageErr(err)
	}
	if f.verify && f.noVerify {
		return nil, 0, nil, nil, cli.UsageErr(errors.New("--verify and --no-verify contradict each other"))
	}
	if f.gpu != "auto" && f.gpu != "off" {
		return nil, 0, nil, nil, cli.UsageErr(fmt.Errorf("--gpu %q: want auto or off", f.gpu))
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
	var manifest func(context.Context, string) (*ec.Manifest, error)
	if f.etcd != "" {
		cluster, err := ec.Connect(ctx, f.etcd)
		if err != nil {
			return err
		}
		defer cluster.Close()
		manifest = cluster.GetManifest
		log.Info("agent: striped volumes served from the cluster catalog", "etcd", f.etcd)
	}
	devices := gpuDevices(ctx, f, log, stderr)
	a, err := agent.New(agent.Config{
		Key:       key,
		Provider:  hostmem.New(),
		Device:    devices,
		Manifest:  manifest,
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
			return &agent.Path{Transport: cp.Transport, Plain: cp.Plain, FallbackReason: cp.FallbackReason, Close: cp.Close}, nil
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

// gpuDevices returns the agent's Config.Device for --gpu: the gpu provider
// plugin of the plugin directory, started for each device with
// BLOCKXFER_GPU_DEVICE set. It logs whether device memory can be served,
// and why not: --gpu off, no plugin, or (probed in the background, on the
// device $BLOCKXFER_GPU_DEVICE names or 0) a plugin that is unusable here
// or imports no device memory. Where it cannot, the function it returns
// fails with the reason, which the agent's refusals carry.
func gpuDevices(ctx context.Context, f *agentFlags, log *slog.Logger, stderr io.Writer) func(context.Context, int) (memory.Provider, error) {
	path := filepath.Join(cli.PluginDir(f.pluginDir), providers.ExecutablePrefix+"gpu")
	var off error
	if f.gpu == "off" {
		off = errors.New("device memory is off (blockcat agent --gpu off)")
	} else if _, err := os.Stat(path); err != nil {
		off = fmt.Errorf("no gpu provider plugin: %w (install blockxfer-provider-gpu there, or point --plugin-dir at it)", err)
	}
	if off != nil {
		log.Warn("agent: device memory (cuda-ipc, cuda-vmm-fd) not served", "reason", off)
		return func(context.Context, int) (memory.Provider, error) { return nil, off }
	}
	load := func(ctx context.Context, dev int) (memory.Provider, error) {
		p, err := providers.Load(ctx, path, &providers.LoadOptions{Logger: cli.PluginLogger(f.logLevel, stderr),
			Env: []string{fmt.Sprintf("%s=%d", gpuDeviceEnv, dev)}})
		if err != nil {
			return nil, fmt.Errorf("gpu provider %s for device %d: %w", path, dev, err)
		}
		if why := p.Unusable(); why != "" {
			p.Close()
			return nil, fmt.Errorf("gpu provider for device %d is unusable here: %s", dev, why)
		}
		return p, nil
	}
	go func() {
		dev, _ := strconv.Atoi(os.Getenv(gpuDeviceEnv))
		p, err := load(ctx, dev)
		switch {
		case err != nil:
			log.Warn("agent: device memory (cuda-ipc, cuda-vmm-fd) not served", "device", dev, "reason", err)
			return
		case len(p.Capabilities().ImportKinds) == 0:
			log.Warn("agent: device memory (cuda-ipc, cuda-vmm-fd) not served", "device", dev,
				"reason", "the gpu provider plugin imports no memory: update it")
		default:
			log.Info("agent: device memory served", "plugin", path, "device", p.Capabilities().Device,
				"import_kinds", p.Capabilities().ImportKinds)
		}
		p.Close()
	}()
	return load
}
