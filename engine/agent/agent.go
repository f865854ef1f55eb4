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

	"github.com/blockxfer/blockxfer/ec"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// Path is the receive transport chosen for one server, and how to release
// it once the server's sessions are closed.
type Path struct {
	Transport transport.RecvTransport
	// Plain, when Transport is devmem, receives the plain data
	// connections a session adds for small reads
	// (engine.Config.PlainTransport); nil otherwise.
	Plain          transport.RecvTransport
	FallbackReason string
	Close          func() error // nil: nothing to release
}

// Config configures an Agent.
type Config struct {
	// Key is the pre-shared key of the blockd servers. Required.
	Key []byte
	// Provider is the memory the agent imports applications' host memory
	// into (kinds fd and shm); it must implement memory.Importer. The
	// agent closes it. Default: a new host-memory provider.
	Provider memory.Provider
	// Device returns the provider of GPU ordinal dev, which imports the
	// applications' device memory (kinds cuda-ipc and cuda-vmm-fd) and
	// must implement memory.Importer. The agent calls it on the first
	// registration on that device (again after a failure, which refuses
	// the registration with code device and the error's text) and closes
	// what it returned when it closes. Nil: device memory is not served.
	Device func(ctx context.Context, dev int) (memory.Provider, error)
	// Manifest returns the manifest of the striped volume named volume
	// (from the cluster catalog), for reads that name a striped volume;
	// it fails wrapping ec.ErrNoManifest when there is none. Nil: striped
	// reads fail with code not-supported.
	Manifest func(ctx context.Context, volume string) (*ec.Manifest, error)
	// Path chooses the receive transport for a server and a provider,
	// once, when the agent first needs a session with that server into
	// that provider's memory. Default: TCP.
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

	// ctx ends when the agent closes: calls to servers made for an
	// application (stat) stop with it.
	ctx  context.Context
	stop context.CancelFunc

	mu      sync.Mutex
	servers map[serverKey]*server
	conns   map[*conn]struct{}
	ls      []net.Listener
	closed  bool
	wg      sync.WaitGroup // connections being served

	// devMu serialises loading device providers (slow: a plugin starts)
	// apart from mu, so that other applications are served meanwhile.
	devMu   sync.Mutex
	devices map[int]memory.Provider // GPU ordinal -> its provider

	striped map[stripedKey]*ec.Reader // under mu
}

// stripedKey names a Reader: a striped volume's generation and the
// provider it reads into.
type stripedKey struct {
	volume     string
	generation uint64
	p          memory.Provider
}

// serverKey names a client: a blockd and the provider it reads into.
type serverKey struct {
	addr string
	p    memory.Provider
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
	// DeviceRegistrations are the Registrations of device memory.
	DeviceRegistrations int
	Reads               int // reads running or not yet collected
	Servers             int // clients of a server and a provider
	Devices             int // device providers loaded
}

// New returns an agent; Serve starts it.
func New(cfg Config) (*Agent, error) {
	if len(cfg.Key) == 0 {
		return nil, errors.New("agent: config: no key")
	}
	if cfg.Provider == nil {
		cfg.Provider = hostmem.New()
	}
	im, ok := cfg.Provider.(memory.Importer)
	if !ok {
		return nil, fmt.Errorf("agent: config: provider %s cannot import caller memory", cfg.Provider.Name())
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
	a := &Agent{cfg: cfg, importer: im, servers: map[serverKey]*server{}, conns: map[*conn]struct{}{}, devices: map[int]memory.Provider{},
		striped: map[stripedKey]*ec.Reader{}}
	a.ctx, a.stop = context.WithCancel(context.Background())
	for _, s := range cfg.Servers {
		go a.warm(s)
	}
	return a, nil
}

// warm opens a session with addr ahead of the first read.
func (a *Agent) warm(addr string) {
	srv := a.server(a.ctx, addr, a.cfg.Provider)
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

// server returns the client for addr reading into p's memory, creating it
// on first use.
func (a *Agent) server(ctx context.Context, addr string, p memory.Provider) *server {
	if a.cfg.ServerAddr != nil {
		norm, err := a.cfg.ServerAddr(addr)
		if err != nil {
			return &server{err: fmt.Errorf("agent: %w %q: %w", errServerAddr, addr, err)}
		}
		addr = norm
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	key := serverKey{addr, p}
	if s, ok := a.servers[key]; ok && s.err == nil {
		return s
	}
	if a.closed {
		return &server{err: fmt.Errorf("agent: %w: the agent is shutting down", engine.ErrSessionClosed)}
	}
	path, err := a.cfg.Path(ctx, addr, p)
	if err != nil {
		// Not kept: the next read tries again.
		return &server{err: fmt.Errorf("agent: choose the transport for %s into %s memory: %w", addr, p.Name(), err)}
	}
	s := &server{path: path, client: engine.NewClient(addr, engine.Config{
		Key: a.cfg.Key, Provider: p, Transport: path.Transport, PlainTransport: path.Plain, FallbackReason: path.FallbackReason,
		DataConns: a.cfg.DataConns, Verify: a.cfg.Verify, Name: a.cfg.Name, Logger: a.cfg.Logger,
	}, a.cfg.Resume)}
	a.servers[key] = s
	return s
}

// Errors of striped reads.
var (
	errNoCatalog   = errors.New("this agent has no cluster catalog for striped volumes (blockcat agent --etcd)")
	errVolumeRange = errors.New("range outside the volume")
)

// stripedReader returns a Reader of the striped volume into p's memory,
// and the receive path of its first server. A Reader is kept per volume
// generation and provider: its sessions, one per server, stay warm for
// the next reads.
func (a *Agent) stripedReader(ctx context.Context, volume string, p memory.Provider) (*ec.Reader, *Path, error) {
	if a.cfg.Manifest == nil {
		return nil, nil, fmt.Errorf("agent: read %s: %w", volume, errNoCatalog)
	}
	m, err := a.cfg.Manifest(ctx, volume)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: manifest of %s: %w", volume, err)
	}
	if err := m.Validate(); err != nil {
		return nil, nil, fmt.Errorf("agent: striped volume %s: %w", volume, err)
	}
	srv := a.server(ctx, m.Servers[0].Addr, p)
	key := stripedKey{volume, m.Generation, p}
	a.mu.Lock()
	defer a.mu.Unlock()
	if r, ok := a.striped[key]; ok {
		return r, srv.path, nil
	}
	if a.closed {
		return nil, nil, fmt.Errorf("agent: %w: the agent is shutting down", engine.ErrSessionClosed)
	}
	dial := func(ctx context.Context, s ec.ManifestServer) (*engine.Session, error) {
		srv := a.server(ctx, s.Addr, p)
		if srv.err != nil {
			return nil, srv.err
		}
		return engine.Dial(ctx, s.Addr, engine.Config{Key: a.cfg.Key, Provider: p, Transport: srv.path.Transport,
			PlainTransport: srv.path.Plain, FallbackReason: srv.path.FallbackReason, DataConns: a.cfg.DataConns, Verify: a.cfg.Verify, Name: a.cfg.Name,
			Logger: a.cfg.Logger.With("server", s.ID)})
	}
	r, err := ec.NewReader(m, ec.ReaderConfig{Dial: dial, Provider: p, Logger: a.cfg.Logger})
	if err != nil {
		return nil, nil, fmt.Errorf("agent: striped volume %s: %w", volume, err)
	}
	a.striped[key] = r
	return r, srv.path, nil
}

// errNoDevice: device memory cannot be served on the device a
// registration names; the error says why.
var errNoDevice = errors.New("device memory not served")

// device returns the importer of GPU ordinal dev and its provider,
// loading it on first use.
func (a *Agent) device(ctx context.Context, dev int) (memory.Importer, memory.Provider, error) {
	if a.cfg.Device == nil {
		return nil, nil, fmt.Errorf("agent: %w: this agent was started without device memory", errNoDevice)
	}
	a.devMu.Lock()
	defer a.devMu.Unlock()
	p, ok := a.devices[dev]
	if ok && exited(p) {
		// A plugin that crashed is started again; the registrations it
		// held are gone with it, and their reads fail.
		a.cfg.Logger.Warn("agent: device provider exited: starting it again", "device", dev, "provider", p.Name())
		p.Close()
		delete(a.devices, dev)
		ok = false
	}
	if !ok {
		a.mu.Lock()
		closed := a.closed
		a.mu.Unlock()
		if closed {
			return nil, nil, fmt.Errorf("agent: %w: the agent is shutting down", errNoDevice)
		}
		var err error
		if p, err = a.cfg.Device(ctx, dev); err != nil {
			return nil, nil, fmt.Errorf("agent: %w on device %d: %w", errNoDevice, dev, err)
		}
		if _, ok := p.(memory.Importer); !ok {
			err := fmt.Errorf("agent: %w on device %d: provider %s cannot import caller memory", errNoDevice, dev, p.Name())
			p.Close()
			return nil, nil, err
		}
		a.devices[dev] = p
		a.cfg.Logger.Info("agent: device provider loaded", "device", dev, "provider", p.Name())
	}
	return p.(memory.Importer), p, nil
}

// exited says whether p is a provider plugin whose process has exited
// (providers.Plugin.Exited).
func exited(p memory.Provider) bool {
	x, ok := p.(interface{ Exited() <-chan struct{} })
	if !ok {
		return false
	}
	select {
	case <-x.Exited():
		return true
	default:
		return false
	}
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
		r, d, n := c.counts()
		st.Registrations += r
		st.DeviceRegistrations += d
		st.Reads += n
	}
	a.devMu.Lock()
	st.Devices = len(a.devices)
	a.devMu.Unlock()
	return st
}

// Close stops accepting, ends every connection (cancelling its reads and
// releasing its registrations), closes the sessions and the providers.
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
	a.servers = map[serverKey]*server{}
	for _, r := range a.striped {
		errs = append(errs, r.Close())
	}
	a.striped = map[stripedKey]*ec.Reader{}
	a.mu.Unlock()
	for _, s := range servers {
		errs = append(errs, s.client.Close())
		if s.path.Close != nil {
			errs = append(errs, s.path.Close())
		}
	}
	a.devMu.Lock()
	for _, p := range a.devices {
		errs = append(errs, p.Close())
	}
	a.devices = map[int]memory.Provider{}
	a.devMu.Unlock()
	errs = append(errs, a.cfg.Provider.Close())
	return errors.Join(errs...)
}
