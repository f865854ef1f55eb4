package providers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"

	"github.com/blockxfer/blockxfer/providers/internal/fdpass"
)

// Load starts the provider plugin executable at path and connects to it:
// the go-plugin handshake over gRPC, plus a side SOCK_SEQPACKET socketpair
// whose child end is the plugin's fd 3, for dmabuf and staging fds. The
// plugin runs in its own process group and is SIGKILLed if this process
// dies (Pdeathsig; the plugin also exits when the side socket reaches EOF).
//
// Load succeeds for a plugin that is unusable on this machine: check
// Plugin.Unusable. ctx bounds the start-up; the Plugin outlives it. Close
// the Plugin to stop the process.
func Load(ctx context.Context, path string, opts *LoadOptions) (*Plugin, error) {
	if opts == nil {
		opts = &LoadOptions{}
	}
	logger := opts.Logger
	if logger == nil {
		logger = hclog.New(&hclog.LoggerOptions{Name: "provider", Level: hclog.Warn, Output: os.Stderr})
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("providers: load %s: %w", path, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("providers: load: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("providers: load %s: not an executable file", abs)
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}

	local, remote, err := fdpass.Socketpair()
	if err != nil {
		return nil, fmt.Errorf("providers: load %s: %w", abs, err)
	}
	fds, err := fdpass.New(local, fdpass.Options{
		Accept: fdpass.KindDmabuf,
		Strict: true,
		Logf:   func(format string, args ...any) { logger.Warn(fmt.Sprintf(format, args...), "plugin", abs) },
	})
	if err != nil {
		remote.Close()
		return nil, fmt.Errorf("providers: load %s: %w", abs, err)
	}
	r := &procRunner{path: abs, args: opts.Args, child: remote, life: &lifeline{exited: make(chan struct{})}}
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: Handshake,
		Plugins:         PluginMap(&ProviderPlugin{fds: fds, logger: logger}),
		RunnerFunc: func(_ hclog.Logger, cmd *exec.Cmd, _ string) (runner.Runner, error) {
			// cmd carries the environment go-plugin prepared (this
			// process's, the magic cookie, the socket dir).
			r.env = append(cmd.Env, opts.Env...)
			return r, nil
		},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
		StartTimeout:     timeout,
		GRPCDialOptions: []grpc.DialOption{
			grpc.WithInitialWindowSize(grpcWindow),
			grpc.WithInitialConnWindowSize(grpcWindow),
		},
	})

	fail := func(err error) (*Plugin, error) {
		pc.Kill()
		fds.Close()
		r.closeChild()
		r.closePipes()
		return nil, fmt.Errorf("providers: load %s: %w", abs, err)
	}
	type started struct {
		raw any
		err error
	}
	done := make(chan started, 1)
	go func() {
		cp, err := pc.Client()
		if err != nil {
			done <- started{err: err}
			return
		}
		raw, err := cp.Dispense(PluginName)
		done <- started{raw: raw, err: err}
	}()
	var res started
	select {
	case res = <-done:
	case <-ctx.Done():
		pc.Kill()
		<-done
		return fail(ctx.Err())
	}
	if res.err != nil {
		return fail(res.err)
	}
	client, ok := res.raw.(*GRPCClient)
	if !ok {
		return fail(fmt.Errorf("dispensed %T, want *GRPCClient", res.raw))
	}
	if err := client.init(ctx, opts.StagingSlotSize, opts.StagingSlots, r.life); err != nil {
		return fail(err)
	}
	if client.ringOffer == ringVersion && !opts.NoRing && ringEnabled() {
		if err := client.startRing(ctx, opts.RingEntries); err != nil {
			logger.Warn("data-plane ring unavailable; data calls go over gRPC", "plugin", abs, "error", err)
		}
	}
	r.onExit(client.pluginExited)
	return &Plugin{path: abs, client: client, pc: pc, runner: r}, nil
}

// procRunner is the go-plugin runner for a plugin process: exec.Cmd with
// the side socket as fd 3, its own process group and Pdeathsig, and an exit
// status the host can report.
type procRunner struct {
	path  string
	args  []string
	env   []string
	child *os.File // the side socket's child end; closed once started
	life  *lifeline

	cmd              *exec.Cmd
	pid              int
	stdoutR, stderrR *os.File
	childOnce        sync.Once
	pipesOnce        sync.Once

	hookMu sync.Mutex
	hook   func() // run when the process has exited, before life.exited closes
	gone   bool   // the process has exited
}

// onExit arranges for f to run once the process has exited, before
// life.exited is closed (so a caller woken by it sees f's effects); if the
// process has already exited, f runs now.
func (r *procRunner) onExit(f func()) {
	r.hookMu.Lock()
	defer r.hookMu.Unlock()
	if r.gone {
		f()
		return
	}
	r.hook = f
}

var _ runner.Runner = (*procRunner)(nil)

// Start starts the process. The goroutine that forks it stays locked to its
// OS thread until the process exits: Pdeathsig fires when the forking
// thread exits, not the process, and Go may otherwise retire that thread.
func (r *procRunner) Start(_ context.Context) error {
	defer r.closeChild()
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		return err
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		stdoutR.Close()
		stdoutW.Close()
		return err
	}
	cmd := exec.Command(r.path, r.args...)
	cmd.Env = r.env
	cmd.Stdout = stdoutW
	cmd.Stderr = stderrW
	cmd.ExtraFiles = []*os.File{r.child} // fd 3 in the plugin
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	startErr := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			startErr <- err
			return
		}
		startErr <- nil
		werr := cmd.Wait()
		status := "exit status 0"
		if werr != nil {
			status = werr.Error()
		}
		r.life.err = fmt.Errorf("%w: %s (pid %d): %s", ErrPluginExited, filepath.Base(r.path), cmd.Process.Pid, status)
		r.hookMu.Lock()
		r.gone = true
		if r.hook != nil {
			r.hook()
		}
		r.hookMu.Unlock()
		close(r.life.exited)
	}()
	err = <-startErr
	stdoutW.Close()
	stderrW.Close()
	if err != nil {
		stdoutR.Close()
		stderrR.Close()
		return err
	}
	r.cmd, r.pid = cmd, cmd.Process.Pid
	r.stdoutR, r.stderrR = stdoutR, stderrR
	return nil
}

// Wait waits for the process to exit.
func (r *procRunner) Wait(ctx context.Context) error {
	select {
	case <-r.life.exited:
	case <-ctx.Done():
		return ctx.Err()
	}
	r.closePipes()
	if errors.Is(r.life.err, ErrPluginExited) && r.cmd.ProcessState != nil && r.cmd.ProcessState.Success() {
		return nil
	}
	return r.life.err
}

// Kill sends SIGKILL to the process, unless it has exited.
func (r *procRunner) Kill(_ context.Context) error {
	if r.cmd == nil {
		return nil
	}
	select {
	case <-r.life.exited:
		return nil
	default:
	}
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// Stdout returns the plugin's stdout, which carries only the go-plugin
// handshake line.
func (r *procRunner) Stdout() io.ReadCloser { return r.stdoutR }

// Stderr returns the plugin's stderr, which carries its hclog output.
func (r *procRunner) Stderr() io.ReadCloser { return r.stderrR }

// Name returns the executable's path.
func (r *procRunner) Name() string { return r.path }

// ID returns the process id.
func (r *procRunner) ID() string {
	if r.pid == 0 {
		return ""
	}
	return strconv.Itoa(r.pid)
}

// Diagnose explains a failed handshake.
func (r *procRunner) Diagnose(context.Context) string {
	return fmt.Sprintf("%s did not complete the blockxfer provider handshake: is it a provider plugin built with this version of github.com/blockxfer/blockxfer/providers? Its log (stderr) is forwarded to the host's logger.", r.path)
}

// PluginToHost returns the address unchanged: host and plugin share a
// file system.
func (r *procRunner) PluginToHost(network, addr string) (string, string, error) {
	return network, addr, nil
}

// HostToPlugin returns the address unchanged.
func (r *procRunner) HostToPlugin(network, addr string) (string, string, error) {
	return network, addr, nil
}

// closeChild closes this process's copy of the side socket's child end.
func (r *procRunner) closeChild() {
	r.childOnce.Do(func() { r.child.Close() })
}

// closePipes closes the read ends of the plugin's stdout and stderr.
func (r *procRunner) closePipes() {
	r.pipesOnce.Do(func() {
		if r.stdoutR != nil {
			r.stdoutR.Close()
			r.stderrR.Close()
		}
	})
}
