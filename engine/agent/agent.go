package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// Path is the receive transport chosen for one server, and how to release
// it once the server's sessions are closed.
type Path struct {
	Transport      transport.RecvTransport
	FallbackReason string
	Close          func() error // nil: nothing to release
}

// Config configures an Agent.
type Config struct {
	// Key is the pre-shared key of the blockd servers. Required.
	Key []byte
	// Provider is the memory the agent imports applications' memory into;
	// it must implement memory.Importer. The agent closes it. Default: a
	// new host-memory provider.
	Provider memory.Provider
	// Path chooses the receive transport for a server, once, when the
	// agent first needs a session with it. Default: TCP.
	Path func(ctx context.Context, server string, p memory.Provider) (*Path, error)
	// DataConns, Verify and Name configure each session (engine.Config).
	DataConns int
	Verify    engine.VerifyMode
	Name      string
	// Resume configures how a read rides through a lost session (default:
	// 3 attempts, 100ms first back-off, 1s at most).
	Resume engine.ResumeOptions
	// ServerAddr, when set, checks and normalises the server address an
	// application names (such as adding the default port), so that
	// "host" and "host:7070" share one session. Nil: addresses are used
	// as given.
	ServerAddr func(string) (string, error)
	// Servers are dialled when the agent starts, so the first reads of
	// them find a warm session. Others are dialled on first use.
	Servers []string
	// AllowUIDs, when not nil, are the uids allowed to use the agent
	// besides root and the agent's own; other peers are refused. Nil:
	// anyone who can open the socket (its file mode is the permission).
	AllowUIDs []uint32
	// MaxConns bounds the applications connected at once (default 256).
	MaxConns int
	// MaxReads bounds a connection's reads, running or not yet collected
	// (default 4096).
	MaxReads int
	// MaxRegistrations bounds a connection's registered regions (default 1024).
	MaxRegistrations int
	// ChunkSize splits a long read into requests of at most this many
	// bytes, in flight together (default 64 MiB).
	ChunkSize int64
	// Logger receives the agent's logs (default: discard).
	Logger *slog.Logger
}

// Agent serves applications on a unix socket. Create one with New.
type Agent struct {
	cfg      Config
	importer memory.Importer
	mapper   memory.Mapper
	views    bytesImporter

	// ctx ends when the agent closes: calls to servers made for an
	// application (stat) stop with it.
	ctx  context.Context
	stop context.CancelFunc

	mu      sync.Mutex
	servers map[string]*server
	conns   map[*conn]struct{}
	ls      []net.Listener
	closed  bool
	wg      sync.WaitGroup // connections being served
}

// bytesImporter makes part of a mapped buffer a buffer of its own
// (hostmem.Provider.ImportBytes): a read's destination is the registered
// region from its dst_offset, which the engine's Client places from 0.
type bytesImporter interface {
	ImportBytes(mem []byte) (memory.Buffer, error)
}

// server is a blockd the agent has a client for.
type server struct {
	client *engine.Client
	path   *Path
	err    error // the path could not be chosen
}

// Stats counts what an agent holds, for tests and logs.
type Stats struct {
	Conns         int // applications connected
	Registrations int // regions registered, over all connections
	Reads         int // reads running or not yet collected
	Servers       int // servers with a client
}

// New returns an agent; Serve starts it.
func New(cfg Config) (*Agent, error) {
	if len(cfg.Key) == 0 {
		return nil, errors.New("agent: config: no key")
	}
	if cfg.Provider == nil {
		cfg.Provider = hostmem.New()
	}
	im, ok1 := cfg.Provider.(memory.Importer)
	mp, ok2 := cfg.Provider.(memory.Mapper)
	views, ok3 := cfg.Provider.(bytesImporter)
	if !ok1 || !ok2 || !ok3 {
		return nil, fmt.Errorf("agent: config: provider %s cannot import caller memory into mapped buffers", cfg.Provider.Name())
	}
	if cfg.Path == nil {
		cfg.Path = func(context.Context, string, memory.Provider) (*Path, error) {
			return &Path{Transport: &tcp.Transport{}}, nil
		}
	}
	if cfg.Resume == (engine.ResumeOptions{}) {
		cfg.Resume = engine.ResumeOptions{Attempts: 3, Backoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 256
	}
	if cfg.MaxReads <= 0 {
		cfg.MaxReads = 4096
	}
	if cfg.MaxRegistrations <= 0 {
		cfg.MaxRegistrations = 1024
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = 64 << 20
	}
	if cfg.Name == "" {
		cfg.Name = "blockcat-agent"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Agent{cfg: cfg, importer: im, mapper: mp, views: views, servers: map[string]*server{}, conns: map[*conn]struct{}{}}
	a.ctx, a.stop = context.WithCancel(context.Background())
	for _, s := range cfg.Servers {
		go a.warm(s)
	}
	return a, nil
}

// warm opens a session with addr ahead of the first read.
func (a *Agent) warm(addr string) {
	srv := a.server(a.ctx, addr)
	if srv.err != nil {
		a.cfg.Logger.Warn("agent: server not reachable", "server", addr, "err", srv.err)
		return
	}
	ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
	defer cancel()
	if _, err := srv.client.Session(ctx); err != nil {
		a.cfg.Logger.Warn("agent: cannot open a session", "server", addr, "err", err)
		return
	}
	a.cfg.Logger.Info("agent: session open", "server", addr)
}

// errServerAddr: an application named a server address that
// Config.ServerAddr refused.
var errServerAddr = errors.New("bad server address")

// server returns the client for addr, creating it on first use.
func (a *Agent) server(ctx context.Context, addr string) *server {
	if a.cfg.ServerAddr != nil {
		norm, err := a.cfg.ServerAddr(addr)
		if err != nil {
			return &server{err: fmt.Errorf("agent: %w %q: %w", errServerAddr, addr, err)}
		}
		addr = norm
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if s, ok := a.servers[addr]; ok && s.err == nil {
		return s
	}
	if a.closed {
		return &server{err: fmt.Errorf("agent: %w: the agent is shutting down", engine.ErrSessionClosed)}
	}
	path, err := a.cfg.Path(ctx, addr, a.cfg.Provider)
	if err != nil {
		// Not kept: the next read tries again.
		return &server{err: fmt.Errorf("agent: choose the transport for %s: %w", addr, err)}
	}
	s := &server{path: path, client: engine.NewClient(addr, engine.Config{
		Key: a.cfg.Key, Provider: a.cfg.Provider, Transport: path.Transport, FallbackReason: path.FallbackReason,
		DataConns: a.cfg.DataConns, Verify: a.cfg.Verify, Name: a.cfg.Name, Logger: a.cfg.Logger,
	}, a.cfg.Resume)}
	a.servers[addr] = s
	return s
}

// Listen creates the unix socket at path (SOCK_SEQPACKET) with file mode
// mode (0660 when 0). A socket file left at path by an agent that is gone
// is replaced; one an agent still answers on is not.
func Listen(path string, mode os.FileMode) (*net.UnixListener, error) {
	if mode == 0 {
		mode = 0o660
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("agent: %s exists and is not a socket: remove it or choose another --socket", path)
		}
		c, err := net.Dial("unixpacket", path)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("agent: %s: another agent is serving on it", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("agent: %s exists and cannot be checked: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("agent: remove the stale socket: %w", err)
		}
	}
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("agent: listen: %w", err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("agent: socket mode: %w", err)
	}
	return l, nil
}

// Serve accepts applications on l until Close, serving each in its own
// goroutine. It returns nil after Close.
func (a *Agent) Serve(l *net.UnixListener) error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		l.Close()
		return nil
	}
	a.ls = append(a.ls, l)
	a.mu.Unlock()
	var backoff time.Duration
	for {
		uc, err := l.AcceptUnix()
		if err != nil {
			a.mu.Lock()
			closed := a.closed
			a.mu.Unlock()
			if closed {
				return nil
			}
			// Out of fds and the like: back off, never stop serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			a.cfg.Logger.Warn("agent: accept", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := newConn(a, uc)
		a.mu.Lock()
		switch {
		case a.closed:
			a.mu.Unlock()
			uc.Close()
			continue
		case len(a.conns) >= a.cfg.MaxConns:
			a.mu.Unlock()
			c.refuse(&ProtoError{Code: CodeLimit, Message: fmt.Sprintf("the agent serves %d applications at once, its limit", a.cfg.MaxConns)})
			continue
		}
		a.conns[c] = struct{}{}
		a.wg.Add(1)
		a.mu.Unlock()
		go func() {
			defer a.wg.Done()
			c.serve()
			a.mu.Lock()
			delete(a.conns, c)
			a.mu.Unlock()
		}()
	}
}

// Stats returns what the agent holds now.
func (a *Agent) Stats() Stats {
	a.mu.Lock()
	conns := make([]*conn, 0, len(a.conns))
	for c := range a.conns {
		conns = append(conns, c)
	}
	st := Stats{Conns: len(conns), Servers: len(a.servers)}
	a.mu.Unlock()
	for _, c := range conns {
		r, n := c.counts()
		st.Registrations += r
		st.Reads += n
	}
	return st
}

// Close stops accepting, ends every connection (cancelling its reads and
// releasing its registrations), closes the sessions and the provider.
func (a *Agent) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.stop()
	ls := slices.Clone(a.ls)
	for c := range a.conns {
		c.uc.Close()
	}
	a.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	a.wg.Wait()
	var errs []error
	a.mu.Lock()
	servers := a.servers
	a.servers = map[string]*server{}
	a.mu.Unlock()
	for _, s := range servers {
		errs = append(errs, s.client.Close())
		if s.path.Close != nil {
			errs = append(errs, s.path.Close())
		}
	}
	errs = append(errs, a.cfg.Provider.Close())
	return errors.Join(errs...)
}
