package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/internal/rawsock"
	"github.com/blockxfer/blockxfer/transport"
)

// ServerConfig configures a [Server].
type ServerConfig struct {
	// Key is the pre-shared key clients must prove they hold.
	Key []byte
	// Volumes holds the volumes served. Required. If it also has a
	// FreeBytes() (int64, error) method (*catalog.Store does), an upload
	// is refused up front when the free space, less what the uploads in
	// progress will write, cannot hold it.
	Volumes Volumes
	// Transport sends payload on data connections. Required.
	Transport transport.SendTransport
	// Name is the server's name in handshakes and logs (default: hostname).
	Name string
	// MaxSessions caps concurrent sessions (default 256).
	MaxSessions int
	// DataConns is how many data connections each session may open
	// (default 16).
	DataConns int
	// MaxInflight caps the announced-but-unsent payload bytes of one
	// session (default 256 MiB); it is the server's back-pressure.
	MaxInflight int64
	// HandshakeTimeout bounds a connection's preamble and handshake
	// (default 10s).
	HandshakeTimeout time.Duration
	// MaxPending caps the connections that have not yet finished their
	// preamble and handshake (default 128), and MaxPendingPerHost those
	// from one source address (default 16). A connection over either cap
	// is closed at once without a write, so unauthenticated peers cannot
	// exhaust the server's file descriptors.
	MaxPending        int
	MaxPendingPerHost int
	// MaxReads caps the reads one session may have open (default 64);
	// a Read beyond it is answered busy.
	MaxReads int
	// TokenTTL is how long a data token stays good after Welcome if it is
	// not used (default 10s).
	TokenTTL time.Duration
	// UploadStall fails an upload that receives no bytes for this long
	// (default 30s), freeing the space it reserved, even while its
	// session keeps pinging.
	UploadStall time.Duration
	// HangupGrace is how long Shutdown waits, once every read is sent, for
	// clients to close their sessions before closing them itself
	// (default 5s).
	HangupGrace time.Duration
	// IdleTimeout closes a control connection silent for this long
	// (default 2m; clients ping every 15s).
	IdleTimeout time.Duration
	// SmallRead is the read length below which a read of a session with
	// both plain and devmem data connections is sent on the plain ones;
	// longer reads go on the devmem ones (docs/devmem.md, "Per-read
	// path"). Default DefaultSmallRead; negative: every read on devmem
	// connections unless the client asks for plain.
	SmallRead int64
	// Logger receives the server's logs (default: discard).
	Logger *slog.Logger
	// Metrics, if set, receives the server's metrics.
	Metrics *Metrics
}

// Volumes is the source a [Server] serves from: volume records and their
// backing files. *catalog.Store implements it; implementations must be safe
// for concurrent use.
type Volumes interface {
	// List returns every volume's record.
	List() ([]*catalog.Volume, error)
	// Get returns one volume's record; errors wrap catalog.ErrNotFound or
	// catalog.ErrBadName.
	Get(name string) (*catalog.Volume, error)
	// Open opens a volume's backing file for reading together with the
	// record it was opened under. The caller closes the file.
	Open(name string) (*os.File, *catalog.Volume, error)
	// Write stores size bytes read from r as volume name (replacing an
	// existing one only when replace is set) and returns its record.
	Write(ctx context.Context, name string, size, extentSize int64, r io.Reader, replace bool, opts ...catalog.OpOption) (*catalog.Volume, error)
	// Blocks returns the block CRCs of a volume at a generation, or nil
	// when there are none (see catalog.Catalog.Blocks).
	Blocks(name string, generation uint64) (*catalog.Blocks, error)
}

// DefaultSmallRead is ServerConfig.SmallRead's default: reads shorter than
// 64 KiB go on plain data connections (docs/devmem.md, "Per-read path",
// gives the measurement).
const DefaultSmallRead = 64 << 10

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("engine: server closed")

// Server serves the volumes of a catalog to blockxfer clients.
type Server struct {
	cfg     ServerConfig
	nextSID atomic.Uint64

	rejects rejectLog     // rate-limited log of unauthenticated failures
	handles volumeHandles // backing files shared by the reads open on them
	quit    chan struct{}
	quitMu  sync.Once

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*srvSession]struct{}
	tokens    map[[blockproto.TokenLen]byte]tokenRef
	reserved  int64 // bytes the uploads in progress will write
	blocks    map[string]cachedBlocks
	pending   int                // connections before Welcome or attach
	pendingBy map[netip.Addr]int // the same, per source address
	draining  bool
	closed    bool

	conns sync.WaitGroup // connection goroutines
	reads sync.WaitGroup // reads in flight, across sessions
}

// cachedBlocks are the block CRCs of one generation of a volume.
type cachedBlocks struct {
	gen    uint64
	blocks *catalog.Blocks
}

// maxCachedBlocks bounds the volumes whose block CRCs a server keeps.
const maxCachedBlocks = 256

// blocksOf returns v's block CRCs, from the cache or the volume source, or
// nil when there are none or they cannot be read (the read then checks
// whole extents instead, which is slower but as safe).
func (s *Server) blocksOf(v *catalog.Volume) *catalog.Blocks {
	s.mu.Lock()
	c, ok := s.blocks[v.Name]
	s.mu.Unlock()
	if ok && c.gen == v.Generation {
		return c.blocks
	}
	b, err := s.cfg.Volumes.Blocks(v.Name, v.Generation)
	if err != nil {
		s.cfg.Logger.Warn("block CRCs unreadable: checking whole extents", "volume", v.Name, "err", err)
		return nil
	}
	s.mu.Lock()
	if len(s.blocks) >= maxCachedBlocks {
		for k := range s.blocks { // evict one at random
			delete(s.blocks, k)
			break
		}
	}
	s.blocks[v.Name] = cachedBlocks{v.Generation, b}
	s.mu.Unlock()
	return b
}

type tokenRef struct {
	sess    *srvSession
	index   int
	host    netip.Addr // the control connection's source address
	expires time.Time
}

// NewServer checks cfg and returns a server ready to Serve.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Volumes == nil || cfg.Transport == nil {
		return nil, errors.New("engine: server config: volumes and transport are required")
	}
	if len(cfg.Key) == 0 {
		return nil, errors.New("engine: server config: no key")
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = 256
	}
	if cfg.DataConns == 0 {
		cfg.DataConns = 16
	}
	if cfg.DataConns < 1 || cfg.DataConns > blockproto.MaxDataConns {
		return nil, fmt.Errorf("engine: server config: data connections %d out of range 1..%d", cfg.DataConns, blockproto.MaxDataConns)
	}
	if cfg.MaxInflight == 0 {
		cfg.MaxInflight = 256 << 20
	}
	if cfg.MaxInflight < blockproto.MaxExtentLen {
		return nil, fmt.Errorf("engine: server config: max in-flight %d below the largest extent (%d)", cfg.MaxInflight, blockproto.MaxExtentLen)
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = 128
	}
	if cfg.MaxPendingPerHost == 0 {
		cfg.MaxPendingPerHost = 16
	}
	if cfg.MaxReads == 0 {
		cfg.MaxReads = 64
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = 10 * time.Second
	}
	if cfg.UploadStall == 0 {
		cfg.UploadStall = 30 * time.Second
	}
	if cfg.HangupGrace == 0 {
		cfg.HangupGrace = 5 * time.Second
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.SmallRead == 0 {
		cfg.SmallRead = DefaultSmallRead
	}
	if cfg.SmallRead < 0 {
		cfg.SmallRead = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{
		cfg:       cfg,
		rejects:   rejectLog{log: cfg.Logger, every: 10 * time.Second, burst: 10},
		quit:      make(chan struct{}),
		listeners: map[net.Listener]struct{}{},
		sessions:  map[*srvSession]struct{}{},
		tokens:    map[[blockproto.TokenLen]byte]tokenRef{},
		pendingBy: map[netip.Addr]int{},
		blocks:    map[string]cachedBlocks{},
	}, nil
}

// Serve accepts connections on l until Shutdown or Close; it then returns
// ErrServerClosed. Control and data connections share the listener.
//
// An accept error (out of file descriptors, of buffers, a connection reset
// before it was accepted) never ends Serve: it backs off, 5 ms doubling up
// to 1 s, and tries again. Serve returns another error only when l itself
// was closed by someone other than the server.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed || s.draining {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			stopping := s.closed || s.draining
			s.mu.Unlock()
			if stopping {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("engine: accept: %w", err)
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.cfg.Metrics.rejected("accept-error")
			s.rejects.note("accept-error", "accept failed, backing off", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-s.quit:
			}
			continue
		}
		delay = 0
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			s.handle(c)
		}()
	}
}

// Shutdown stops accepting connections, tells every session the server is
// draining, lets reads already accepted finish, and then closes every
// session. Sessions with nothing in flight are half-closed once the reads
// are done and given ServerConfig.HangupGrace to hang up; an idle client cannot hold the
// shutdown longer than that.
//
// If ctx ends before the reads and uploads in flight have finished, they
// are cut off and Shutdown returns a *ShutdownError saying how many; it
// returns nil when nothing was cut off.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopAccepting()
	s.mu.Lock()
	s.draining = true
	for l := range s.listeners {
		l.Close()
	}
	sessions := s.sessionList()
	s.mu.Unlock()
	for _, ss := range sessions {
		ss.write(&blockproto.Goodbye{Reason: "server shutting down"})
	}
	drained := make(chan struct{})
	go func() {
		s.reads.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
		cut := s.inFlight()
		s.cfg.Logger.Warn("shutdown timed out: closing sessions", "sessions", cut.Sessions, "reads", cut.Reads, "uploads", cut.Uploads)
		s.Close()
		if cut.Reads+cut.Uploads == 0 {
			return nil
		}
		cut.Err = ctx.Err()
		return cut
	}
	// Every read is sent. Half-close the sessions so clients read the rest
	// of their payload before EOF, and let them hang up.
	s.mu.Lock()
	sessions = s.sessionList()
	s.mu.Unlock()
	for _, ss := range sessions {
		ss.closeWrite()
	}
	hungUp := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(hungUp)
	}()
	grace := time.NewTimer(s.cfg.HangupGrace)
	defer grace.Stop()
	var cut *ShutdownError
	select {
	case <-hungUp:
	case <-grace.C:
	case <-ctx.Done():
		if c := s.inFlight(); c.Uploads > 0 {
			c.Err = ctx.Err()
			cut = c
		}
	}
	s.Close()
	if cut != nil {
		return cut
	}
	return nil
}

// A ShutdownError reports what a Shutdown whose context ended cut off.
type ShutdownError struct {
	// Sessions, Reads and Uploads count the sessions open and the reads
	// and uploads still in flight when the server closed.
	Sessions, Reads, Uploads int
	// Err is the context's error.
	Err error
}

// Error says what was cut off.
func (e *ShutdownError) Error() string {
	return fmt.Sprintf("engine: shutdown cut off %d reads and %d uploads in %d sessions: %v", e.Reads, e.Uploads, e.Sessions, e.Err)
}

// Unwrap returns the context's error.
func (e *ShutdownError) Unwrap() error { return e.Err }

// inFlight counts the sessions, reads and uploads open now.
func (s *Server) inFlight() *ShutdownError {
	s.mu.Lock()
	sessions := s.sessionList()
	s.mu.Unlock()
	c := &ShutdownError{Sessions: len(sessions)}
	for _, ss := range sessions {
		ss.mu.Lock()
		c.Reads += len(ss.reads)
		c.Uploads += len(ss.uploads)
		ss.mu.Unlock()
	}
	return c
}

// Close closes the listeners and every session at once; reads in flight
// fail with CodeShuttingDown. It waits for the server's goroutines, those
// of reads and uploads included.
func (s *Server) Close() error {
	s.stopAccepting()
	s.mu.Lock()
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	sessions := s.sessionList()
	s.mu.Unlock()
	for _, ss := range sessions {
		ss.close(errors.New("server shutting down"), blockproto.CodeShuttingDown)
	}
	s.conns.Wait()
	// Reads and uploads end promptly once their sessions are closed; an
	// upload's goroutine may still be removing its temporary file.
	s.reads.Wait()
	s.handles.closeIdle()
	return nil
}

// stopAccepting wakes an accept loop that is backing off.
func (s *Server) stopAccepting() {
	s.quitMu.Do(func() { close(s.quit) })
}

// sessionList returns the live sessions. s.mu must be held.
func (s *Server) sessionList() []*srvSession {
	l := make([]*srvSession, 0, len(s.sessions))
	for ss := range s.sessions {
		l = append(l, ss)
	}
	return l
}

// handle reads a connection's preamble and runs it as control or data.
// Until the connection has authenticated (control) or attached (data) it
// counts against the pending caps, and any failure closes it with at most
// one frame: a version Error on a control connection, an auth Error for a
// failed handshake, nothing at all otherwise (docs/protocol.md sections 3
// and 6).
func (s *Server) handle(c net.Conn) {
	host := remoteHost(c)
	log := s.cfg.Logger.With("remote", c.RemoteAddr().String())
	release, ok := s.admit(host)
	if !ok {
		s.cfg.Metrics.rejected("pending-limit")
		s.rejects.note("pending-limit", "rejected connection: too many unauthenticated connections", "remote", c.RemoteAddr().String())
		c.Close()
		return
	}
	c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	p, err := blockproto.ReadPreamble(c)
	if err != nil {
		release()
		s.cfg.Metrics.rejected("preamble")
		s.rejects.note("preamble", "rejected connection: bad preamble", "remote", c.RemoteAddr().String(), "err", err)
		var ve *blockproto.VersionError
		if errors.As(err, &ve) && ve.Kind == blockproto.KindControl {
			blockproto.NewConn(c).WriteMsg(&blockproto.Error{Code: blockproto.CodeVersion,
				Message: fmt.Sprintf("peer speaks protocol version %d, this build speaks %d", ve.Peer, blockproto.Version)})
		}
		c.Close()
		return
	}
	if p.Kind == blockproto.KindData {
		s.attachData(c, p.Token, host, release, log)
		return
	}
	s.runControl(c, host, release, log)
}

// admit counts a new connection against the pending caps; release uncounts
// it and may be called more than once.
func (s *Server) admit(host netip.Addr) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending >= s.cfg.MaxPending || s.pendingBy[host] >= s.cfg.MaxPendingPerHost {
		return nil, false
	}
	s.pending++
	s.pendingBy[host]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.pending--
			if s.pendingBy[host]--; s.pendingBy[host] <= 0 {
				delete(s.pendingBy, host)
			}
			s.mu.Unlock()
		})
	}, true
}

// remoteHost is the source address of c, without the port (the zero Addr
// for connections that are not IP).
func remoteHost(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// attachData hands a data connection to the session that issued its token.
// A token is good once, for TokenTTL after Welcome, and only from the
// address its session's control connection came from; any other token
// closes the connection without a write.
func (s *Server) attachData(c net.Conn, tok [blockproto.TokenLen]byte, host netip.Addr, release func(), log *slog.Logger) {
	s.mu.Lock()
	ref, ok := s.tokens[tok]
	delete(s.tokens, tok)
	s.mu.Unlock()
	release()
	why := ""
	switch {
	case !ok:
		why = "unknown or already used token"
	case time.Now().After(ref.expires):
		why = "expired token"
	case ref.host != host:
		why = "token presented from another address than its session's"
	}
	if why != "" {
		s.cfg.Metrics.rejected("data-token")
		s.rejects.note("data-token", "rejected data connection: "+why, "remote", c.RemoteAddr().String())
		c.Close()
		return
	}
	kind := kindUndeclared
	if ref.sess.kinds {
		// Still under the handshake deadline.
		k, err := blockproto.ReadDataKind(c)
		if err != nil {
			s.cfg.Metrics.rejected("preamble")
			s.rejects.note("preamble", "rejected data connection: bad kind", "remote", c.RemoteAddr().String(), "err", err)
			c.Close()
			return
		}
		kind = int(k)
	}
	c.SetDeadline(time.Time{})
	if err := ref.sess.attach(ref.index, c, kind); err != nil {
		log.Warn("data connection failed", "session", ref.sess.id, "err", err)
		c.Close()
	}
}

// runControl authenticates a control connection and serves its session.
func (s *Server) runControl(c net.Conn, host netip.Addr, release func(), log *slog.Logger) {
	defer c.Close()
	c = rawsock.Wrap(c)
	pc := blockproto.NewConn(c)
	ss, err := s.handshake(c, host, pc, log)
	release()
	if err != nil {
		if !errors.Is(err, errRefused) {
			s.cfg.Metrics.rejected("auth")
			s.rejects.note("handshake", "handshake failed", "remote", c.RemoteAddr().String(), "err", err)
			// One frame that says nothing about which check failed,
			// also after the handshake deadline passed.
			c.SetWriteDeadline(time.Now().Add(time.Second))
			pc.WriteMsg(&blockproto.Error{Code: blockproto.CodeAuth, Message: "authentication failed"})
		}
		return
	}
	defer s.drop(ss)
	ss.log.Info("session open", "client", ss.client)
	ss.serve()
}

// errRefused marks a handshake the server turned down after
// authentication (busy, draining) and already answered.
var errRefused = errors.New("session refused")

// handshake runs Hello, Challenge, Auth and Welcome. Before Welcome it
// accepts frames of at most MaxHandshakeFrame bytes. An error that does not
// wrap errRefused is a failed authentication, which runControl answers with
// one auth Error.
func (s *Server) handshake(c net.Conn, host netip.Addr, pc *blockproto.Conn, log *slog.Logger) (*srvSession, error) {
	pc.SetReadLimit(blockproto.MaxHandshakeFrame)
	m, err := pc.ReadMsg()
	if err != nil {
		return nil, err
	}
	hello, ok := m.(*blockproto.Hello)
	if !ok {
		return nil, fmt.Errorf("expected hello, got %s", m.Type())
	}
	ch := &blockproto.Challenge{Caps: transportCaps(s.cfg.Transport.Name()) | blockproto.CapDataKinds | blockproto.CapInlineData | blockproto.CapInlineLarge, SessionID: s.nextSID.Add(1), Server: s.cfg.Name}
	if ch.Nonce, err = blockproto.NewNonce(); err != nil {
		return nil, err
	}
	if err := pc.WriteMsg(ch); err != nil {
		return nil, err
	}
	m, err = pc.ReadMsg()
	if err != nil {
		return nil, err
	}
	auth, ok := m.(*blockproto.Auth)
	if !ok {
		return nil, fmt.Errorf("expected auth, got %s", m.Type())
	}
	if !blockproto.VerifyProof(auth.MAC, blockproto.ClientProof(s.cfg.Key, hello.Nonce, ch.Nonce, ch.SessionID)) {
		return nil, errors.New("wrong proof: the client does not hold this server's key")
	}
	pc.SetReadLimit(blockproto.MaxFrame)
	ss := &srvSession{
		srv:      s,
		id:       ch.SessionID,
		kinds:    hello.Caps&blockproto.CapDataKinds != 0,
		inline:   hello.Caps&blockproto.CapInlineData != 0,
		client:   hello.Client,
		conn:     c,
		proto:    pc,
		log:      log.With("session", ch.SessionID),
		data:     make([]*srvData, s.cfg.DataConns),
		reads:    map[uint64]*srvRead{},
		uploads:  map[uint64]*srvUpload{},
		inflight: semaphore.NewWeighted(s.cfg.MaxInflight),
		done:     make(chan struct{}),
	}
	if ss.inline && hello.Caps&blockproto.CapInlineLarge != 0 && s.cfg.Transport.Name() == transport.TCP {
		// A lone read's extent goes inline from the volume file
		// (sendInlineFile), where the transport, plain TCP as the
		// control connection is, can put the frame's header first.
		if snd, err := s.cfg.Transport.NewSender(c); err == nil {
			ss.inlineFrom, _ = snd.(transport.HeaderSender)
		}
	}
	w := &blockproto.Welcome{MAC: blockproto.ServerProof(s.cfg.Key, hello.Nonce, ch.Nonce, ch.SessionID)}
	if ss.kinds {
		w.SmallRead = uint64(s.cfg.SmallRead)
	}
	for range s.cfg.DataConns {
		t, err := blockproto.NewToken()
		if err != nil {
			return nil, err
		}
		w.Tokens = append(w.Tokens, t)
	}
	s.mu.Lock()
	switch {
	case s.draining || s.closed:
		s.mu.Unlock()
		pc.WriteMsg(&blockproto.Error{Code: blockproto.CodeShuttingDown, Message: "server is shutting down"})
		return nil, fmt.Errorf("%w: %w", errRefused, ErrDraining)
	case len(s.sessions) >= s.cfg.MaxSessions:
		s.mu.Unlock()
		s.cfg.Metrics.rejected("busy")
		pc.WriteMsg(&blockproto.Error{Code: blockproto.CodeBusy, Message: fmt.Sprintf("server busy: %d sessions open", s.cfg.MaxSessions)})
		return nil, fmt.Errorf("%w: too many sessions", errRefused)
	}
	s.sessions[ss] = struct{}{}
	expires := time.Now().Add(s.cfg.TokenTTL)
	for i, t := range w.Tokens {
		s.tokens[t] = tokenRef{sess: ss, index: i, host: host, expires: expires}
	}
	ss.tokens = w.Tokens
	s.mu.Unlock()
	s.cfg.Metrics.sessionsUp()
	c.SetDeadline(time.Time{})
	if err := pc.WriteMsg(w); err != nil {
		s.drop(ss)
		return nil, err
	}
	return ss, nil
}

// drop forgets a session and its unused tokens.
func (s *Server) drop(ss *srvSession) {
	s.mu.Lock()
	if _, ok := s.sessions[ss]; !ok {
		s.mu.Unlock()
		return
	}
	delete(s.sessions, ss)
	for _, t := range ss.tokens {
		delete(s.tokens, t)
	}
	s.mu.Unlock()
	ss.close(errors.New("session ended"), 0)
	s.cfg.Metrics.sessionsDown()
}

// Pending returns the number of connections that have not finished their
// preamble and handshake (see ServerConfig.MaxPending).
func (s *Server) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending
}

// Sessions returns the number of sessions open.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining || s.closed
}

// srvSession is the server side of one client session.
//
// Its reads are served without a goroutine each: the serve goroutine
// registers a Read, announces its extents and queues them on the data
// connections' senders, and whoever ends a read's last piece of work (most
// often the sender that sent its last extent) queues its terminal message
// (see srvRead.pending). A read that would have to wait, for in-flight
// budget or for a disk read of the edges of a partial extent that are not
// in the page cache, is handed to the session's announcers: at most
// maxAnnouncers goroutines, which take turns among the waiting reads, one
// extent at a time.
//
// Control messages are queued and written in batches (see queue and flush):
// the serve goroutine writes what it queued once it has no more input
// buffered, and a sender writes the queue before the bytes of an extent
// whose Extent is still in it and whenever its own queue runs empty. A burst
// of Reads is so answered by one write of their Extents, and their ReadDones
// share writes too.
type srvSession struct {
	srv *Server
	id  uint64
	// kinds: the client declares each data connection's kind (both
	// offered CapDataKinds), so reads choose between plain and devmem ones.
	kinds bool
	// inline: staged extents carry their bytes in the Extent (both
	// offered CapInlineData; see enqueue).
	inline bool
	// inlineFrom sends a lone read's extent of up to MaxInlineData bytes
	// inline from the volume file on the control connection: a sender of
	// the server's transport on it, where that is plain TCP and the
	// client also offered CapInlineLarge; else nil (see enqueue).
	inlineFrom transport.HeaderSender
	client     string
	conn       net.Conn
	proto      *blockproto.Conn
	log        *slog.Logger
	tokens     [][blockproto.TokenLen]byte
	inflight   *semaphore.Weighted

	mu         sync.Mutex
	data       []*srvData // by token index; nil until attached
	reads      map[uint64]*srvRead
	uploads    map[uint64]*srvUpload
	waiting    []*srvRead // reads for the announcers, in turn order
	announcers int        // announcer goroutines running
	closed     bool
	done       chan struct{}
	announce   sync.Mutex // orders stream offsets, Extent queueing and job queueing
	workers    sync.WaitGroup

	// Control writes. Frames are appended to pending under wmu and written
	// by flush under fmu; queued and written count the bytes ever queued
	// and written, so a frame that ends at position p is on the wire once
	// written >= p.
	wmu     sync.Mutex
	pending []byte
	ended   bool // the session-ending Error was queued: nothing follows it
	queued  atomic.Uint64
	written atomic.Uint64
	fmu     sync.Mutex
	spare   []byte // the buffer not in use as pending; guarded by fmu
	werr    error  // sticky write error; guarded by fmu
}

type srvData struct {
	index  int
	kind   int // a blockproto.DataKind, or kindUndeclared
	conn   net.Conn
	sender transport.Sender
	bytes  transport.BytesSender // sender, when it sends from memory; else nil
	queue  chan sendJob
	stream uint64       // next stream offset; guarded by srvSession.announce
	queued atomic.Int64 // bytes queued or being sent, not yet finished
	broken error        // the connection failed; touched by its sender only
}

type sendJob struct {
	rd  *srvRead
	f   *os.File // the volume's file
	off int64    // in f
	n   int64
	ctl uint64    // where its Extent ends in the control stream
	buf *stageBuf // the checked bytes, sent instead of f's when set (see capture)
	// inlineMax: for a job being staged, the largest one staged whole and
	// sent in its Extent (copyMax, or loneInlineMax for a lone read of a
	// client that takes inline data, whose staged bytes all go inline if
	// it also offered CapInlineLarge); 0 for any other.
	inlineMax int64
}

// srvRead is one read in progress.
type srvRead struct {
	id     uint64
	volume string
	ctx    context.Context
	cancel context.CancelFunc
	start  time.Time
	ioErr  atomic.Pointer[error]
	// pending counts the read's extents queued and not yet sent, plus one
	// while the read is still being announced. Whoever takes it to zero
	// finishes the read.
	pending atomic.Int64

	// Announcing state, touched by one goroutine at a time: the serve
	// goroutine, then the announcer whose turn it is.
	vh      *volumeHandle
	next    int64 // the next byte to announce
	end     int64
	total   uint64 // bytes announced
	stopErr error
	staged  bool // every extent so far is sent from a staging buffer

	// terminated: the terminal message is queued. Set by the announcing
	// goroutine before its last step, or by finishRead.
	terminated bool

	// Path (see pickData): plain asks for plain data connections, for
	// reason (a Reason* code); path names the kind of the connections
	// its extents went on so far. Guarded by srvSession.announce.
	plain  bool
	reason string
	path   string
}

// maxAnnouncers bounds the goroutines announcing a session's waiting reads.
const maxAnnouncers = 8

// maxPendingCtl is how many queued control bytes make queue write them at
// once rather than wait for a flush.
const maxPendingCtl = 64 << 10

// write queues m and writes it with everything queued before it, like a
// plain write: it returns once m is handed to the kernel. A client that
// stops reading its control connection for the idle timeout has its session
// closed (in another goroutine: write may be called with the announce lock
// held).
func (ss *srvSession) write(m blockproto.Msg) error {
	if _, err := ss.queue(m); err != nil {
		return err
	}
	return ss.flush()
}

// errSessionEnded: the session-ending Error was queued; nothing follows it.
var errSessionEnded = errors.New("session ended")

// queue appends m to the control frames to be written and returns where it
// ends in the control stream. It writes only when a lot is queued; the
// caller flushes (or leaves it to a later flush, see srvSession).
func (ss *srvSession) queue(m blockproto.Msg) (uint64, error) {
	ss.wmu.Lock()
	if ss.ended {
		ss.wmu.Unlock()
		return 0, errSessionEnded
	}
	pos, err := ss.appendLocked(m)
	big := len(ss.pending) >= maxPendingCtl
	ss.wmu.Unlock()
	if err == nil && big {
		err = ss.flush()
	}
	return pos, err
}

// appendLocked encodes m onto pending; ss.wmu must be held.
func (ss *srvSession) appendLocked(m blockproto.Msg) (uint64, error) {
	n := len(ss.pending)
	b, err := blockproto.AppendFrame(ss.pending, m)
	if err != nil {
		return 0, err // nothing appended: AppendFrame checks before it encodes
	}
	ss.pending = b
	return ss.queued.Add(uint64(len(b) - n)), nil
}

// unflushed reports whether frames are queued but not yet written.
func (ss *srvSession) unflushed() bool { return ss.written.Load() != ss.queued.Load() }

// flush writes every frame queued so far, in one write. Concurrent flushes
// take turns; one finding nothing left to write returns at once.
func (ss *srvSession) flush() error {
	return ss.writeQueued(nil, func(b []byte) error {
		_, err := ss.conn.Write(b)
		return err
	})
}

// writeQueued hands every frame queued so far to send, in one call, with
// last's header after them when last is set (an inline Extent whose
// Length bytes send writes itself: sendInlineFile). Concurrent calls take
// turns. A send error ends the session, except one wrapping
// transport.ErrSource (the bytes came short from their source and were
// padded): that is returned with the stream intact.
func (ss *srvSession) writeQueued(last *blockproto.Extent, send func([]byte) error) error {
	ss.fmu.Lock()
	defer ss.fmu.Unlock()
	if ss.werr != nil {
		return ss.werr
	}
	ss.wmu.Lock()
	buf := ss.pending
	if last != nil {
		if ss.ended {
			ss.wmu.Unlock()
			return errSessionEnded
		}
		var err error
		if buf, err = blockproto.AppendExtentHeader(buf, last); err != nil {
			ss.wmu.Unlock()
			return err
		}
		ss.queued.Add(uint64(len(buf)-len(ss.pending)) + uint64(last.Length))
	}
	upTo := ss.queued.Load()
	ss.pending = ss.spare[:0]
	ss.wmu.Unlock()
	var err error
	if len(buf) > 0 {
		ss.conn.SetWriteDeadline(time.Now().Add(ss.srv.cfg.IdleTimeout))
		if err = send(buf); err != nil && !errors.Is(err, transport.ErrSource) {
			ss.werr = fmt.Errorf("control connection: %w", err)
			go ss.close(ss.werr, 0)
			return ss.werr
		}
	}
	ss.written.Store(upTo)
	if cap(buf) <= 4*maxPendingCtl {
		ss.spare = buf[:0]
	} else {
		ss.spare = nil
	}
	return err
}

// closeWrite half-closes the session's connections once the control frames
// queued are written: everything written so far is delivered, then the
// client sees EOF.
func (ss *srvSession) closeWrite() {
	ss.flush()
	type halfCloser interface{ CloseWrite() error }
	ss.mu.Lock()
	conns := []net.Conn{ss.conn}
	for _, d := range ss.data {
		if d != nil {
			conns = append(conns, d.conn)
		}
	}
	ss.mu.Unlock()
	for _, c := range conns {
		if hc, ok := c.(halfCloser); ok {
			hc.CloseWrite()
		}
	}
}

// attach starts the sender of data connection index, of the kind its
// client declared (kindUndeclared: none).
func (ss *srvSession) attach(index int, c net.Conn, kind int) error {
	snd, err := ss.srv.cfg.Transport.NewSender(c)
	if err != nil {
		return fmt.Errorf("%s sender: %w", ss.srv.cfg.Transport.Name(), err)
	}
	d := &srvData{index: index, kind: kind, conn: c, sender: snd, queue: make(chan sendJob, jobQueue)}
	d.bytes, _ = snd.(transport.BytesSender)
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		snd.Close()
		return errors.New("session already closed")
	}
	ss.data[index] = d
	ss.workers.Add(1)
	ss.mu.Unlock()
	go ss.runSender(d)
	return ss.write(&blockproto.DataAttached{Index: uint16(index)})
}

// flushAfter is the extent size from which a sender writes the queued
// control frames (its reads' ReadDones) after every extent, not only when
// its queue runs empty: a write is cheap beside sending that many bytes.
const flushAfter = 256 << 10

// runSender writes queued extents on one data connection until the session
// closes its queue. After a failure it keeps draining the queue, failing each
// job, so the reads waiting on them finish.
func (ss *srvSession) runSender(d *srvData) {
	defer ss.workers.Done()
	defer d.sender.Close()
	for j := range d.queue {
		ss.send(d, j)
		if (len(d.queue) == 0 || j.n >= flushAfter) && ss.unflushed() {
			ss.flush()
		}
	}
}

// send writes one extent's bytes on d, after its Extent. The job is
// finished whatever happens.
func (ss *srvSession) send(d *srvData, j sendJob) {
	if d.broken != nil {
		ss.finishJob(d, j, d.broken)
		return
	}
	// The Extent goes out before the first of its bytes.
	if ss.written.Load() < j.ctl {
		ss.flush()
	}
	// A client that stops reading is cut off after the idle timeout.
	d.conn.SetWriteDeadline(time.Now().Add(ss.srv.cfg.IdleTimeout))
	var err error
	if j.buf != nil {
		err = d.bytes.SendBytes(j.buf[:j.n])
	} else {
		err = d.sender.SendExtent(j.f, j.off, j.n)
	}
	if err != nil && !errors.Is(err, transport.ErrSource) {
		d.broken = fmt.Errorf("%w %d: %w", errDataConnLost, d.index, err)
		ss.log.Warn("data connection failed", "index", d.index, "err", err)
		// The session ends here: its Error{0} is queued before any
		// read this fails can queue a terminal message.
		ss.end(blockproto.CodeIO, d.broken.Error())
		go ss.close(d.broken, blockproto.CodeIO)
		ss.finishJob(d, j, d.broken)
		return
	}
	if err == nil {
		ss.srv.cfg.Metrics.sent(ss.srv.cfg.Transport.Name(), j.n)
	}
	ss.finishJob(d, j, err)
}

// finishJob ends one extent's send: its budget is returned and its read
// finished if this was the read's last piece of work.
func (ss *srvSession) finishJob(d *srvData, j sendJob, err error) {
	if err != nil {
		j.rd.ioErr.CompareAndSwap(nil, &err)
	}
	d.queued.Add(-j.n)
	ss.inflight.Release(j.n)
	if j.buf != nil {
		stagePool.Put(j.buf)
	}
	ss.step(j.rd)
}

// serve reads control messages until the connection ends. What it queues
// in answer is written once no more input is buffered.
func (ss *srvSession) serve() {
	idle := ss.srv.cfg.IdleTimeout
	for {
		if ss.proto.Buffered() == 0 && ss.unflushed() {
			ss.flush()
		}
		ss.conn.SetReadDeadline(time.Now().Add(idle))
		m, err := ss.proto.ReadMsg()
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
			case errors.As(err, &ne) && ne.Timeout():
				ss.log.Info("control connection idle: closing the session", "idle", idle)
				ss.fatal(blockproto.CodeTimedOut, fmt.Sprintf("no message for %s: session closed", idle))
			default:
				ss.log.Warn("control connection", "err", err)
				ss.fatal(blockproto.CodeBadRequest, err.Error())
			}
			return
		}
		switch m := m.(type) {
		case *blockproto.Read:
			if !ss.startRead(m) {
				return
			}
		case *blockproto.Cancel:
			ss.mu.Lock()
			rd := ss.reads[m.ID]
			ss.mu.Unlock()
			if rd != nil {
				rd.cancel()
			}
		case *blockproto.ListVolumes:
			ss.queue(ss.list(m.After))
		case *blockproto.StatVolume:
			ss.queue(ss.stat(m.Name))
		case *blockproto.PutVolume, *blockproto.PutData, *blockproto.PutCommit, *blockproto.PutAbort:
			ss.onPut(m)
		case *blockproto.Ping:
			ss.queue(&blockproto.Pong{Seq: m.Seq})
		case *blockproto.Pong:
		default:
			ss.log.Warn("unexpected message", "type", m.Type())
			ss.fatal(blockproto.CodeBadRequest, "unexpected "+m.Type().String())
			return
		}
	}
}

// fatal writes the one Error{ID: 0} that ends the session, unless one was
// written already; nothing is written on the control connection after it.
// The caller then ends the session.
func (ss *srvSession) fatal(code blockproto.Code, msg string) {
	ss.end(code, msg)
	ss.flush() // also an Error{0} that end queued earlier
}

// end queues the Error{ID: 0} that ends the session, unless one was queued
// already (it then returns false). From then on nothing else is queued, not
// even the terminal messages of the reads still open.
func (ss *srvSession) end(code blockproto.Code, msg string) bool {
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	if ss.ended {
		return false
	}
	ss.ended = true
	ss.appendLocked(&blockproto.Error{Code: code, Message: msg})
	return true
}

// close ends the session: reads in flight fail, connections close, and the
// senders drain their queues. It waits for the senders. With a non-zero code
// it first tells the client why, unless the session-ending Error was
// already written (a session ends with at most one).
func (ss *srvSession) close(why error, code blockproto.Code) {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return
	}
	ss.closed = true
	reads := make([]*srvRead, 0, len(ss.reads))
	for _, rd := range ss.reads {
		reads = append(reads, rd)
	}
	data := append([]*srvData(nil), ss.data...)
	ss.mu.Unlock()
	close(ss.done)
	for _, rd := range reads {
		rd.cancel()
	}
	if code != 0 {
		ss.fatal(code, why.Error())
	}
	ss.conn.Close()
	for _, d := range data {
		if d != nil {
			d.conn.Close()
		}
	}
	// Closed connections unblock the senders; once no enqueue is running
	// (they hold announce and see closed), the queues can be closed.
	ss.announce.Lock()
	for _, d := range data {
		if d != nil {
			close(d.queue)
		}
	}
	ss.announce.Unlock()
	ss.workers.Wait()
	if snd, ok := ss.inlineFrom.(transport.Sender); ok {
		ss.fmu.Lock() // once no inline send is in progress
		snd.Close()
		ss.fmu.Unlock()
	}
	ss.log.Info("session closed", "reason", why)
}

// list answers ListVolumes{After: after} with one page of the listing
// (docs/protocol.md 5.8 and 7.1): up to MaxVolumes volumes named after after,
// in bytewise name order, with Next set when more may follow. A page of
// MaxVolumes entries with the longest names (and Next) is at most 614533
// bytes, so it always fits in MaxFrame: a large catalog never ends a session.
//
// It reads one page plus one record from the catalog when the source can
// list from a key (*catalog.Store, through its Catalog), and otherwise
// filters and sorts the whole List.
func (ss *srvSession) list(after string) blockproto.Msg {
	const page = blockproto.MaxVolumes
	type lister interface {
		ListAfter(after string, limit int) ([]*catalog.Volume, error)
	}
	type catalogHolder interface{ Catalog() *catalog.Catalog }
	var vols []*catalog.Volume
	var err error
	switch src := ss.srv.cfg.Volumes.(type) {
	case lister:
		vols, err = src.ListAfter(after, page+1)
	case catalogHolder:
		vols, err = src.Catalog().ListAfter(after, page+1)
	default:
		var all []*catalog.Volume
		if all, err = src.List(); err == nil {
			for _, v := range all {
				if v.Name > after {
					vols = append(vols, v)
				}
			}
			slices.SortFunc(vols, func(a, b *catalog.Volume) int { return cmp.Compare(a.Name, b.Name) })
		}
	}
	if err != nil {
		return &blockproto.Error{Code: blockproto.CodeInternal, Message: err.Error()}
	}
	l := &blockproto.VolumeList{}
	if len(vols) > page {
		vols = vols[:page]
		l.Next = vols[page-1].Name
	}
	l.Volumes = make([]blockproto.VolumeStat, 0, len(vols))
	for _, v := range vols {
		l.Volumes = append(l.Volumes, volumeStat(v))
	}
	return l
}

func (ss *srvSession) stat(name string) blockproto.Msg {
	v, err := ss.srv.cfg.Volumes.Get(name)
	if err != nil {
		return catalogError(0, err)
	}
	return &blockproto.VolumeInfo{Volume: volumeStat(v)}
}

func volumeStat(v *catalog.Volume) blockproto.VolumeStat {
	return blockproto.VolumeStat{Name: v.Name, Size: uint64(v.Size), ExtentSize: uint32(v.ExtentSize), Generation: v.Generation}
}

func catalogError(id uint64, err error) *blockproto.Error {
	code := blockproto.CodeInternal
	switch {
	case errors.Is(err, catalog.ErrNotFound):
		code = blockproto.CodeNotFound
	case errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOMEM):
		code = blockproto.CodeBusy
		err = fmt.Errorf("server out of file descriptors or memory, retry later: %w", err)
	case errors.Is(err, catalog.ErrBacking):
		code = blockproto.CodeIO
	case errors.Is(err, catalog.ErrBadName):
		// No volume can have that name. A stat is answered with ID 0, where
		// only not-found, io, busy and internal answer the call.
		code = blockproto.CodeNotFound
		if id != 0 {
			code = blockproto.CodeBadRequest
		}
	}
	return &blockproto.Error{ID: id, Code: code, Message: err.Error()}
}

// startRead registers a read and starts announcing it, in the serve
// goroutine (see srvSession). It returns false when the Read is a violation
// that ends the session (an ID already open), after writing the session's
// Error.
func (ss *srvSession) startRead(m *blockproto.Read) bool {
	if ss.srv.isDraining() {
		ss.queue(&blockproto.Error{ID: m.ID, Code: blockproto.CodeShuttingDown, Message: "server is shutting down: no new reads"})
		return true
	}
	ctx, cancel := context.WithCancel(context.Background())
	if !m.Deadline.IsZero() {
		ctx, cancel = context.WithDeadline(context.Background(), m.Deadline)
	}
	rd := &srvRead{id: m.ID, volume: m.Volume, ctx: ctx, cancel: cancel, start: time.Now(), staged: true}
	switch {
	case m.Flags&blockproto.ReadPlain != 0:
		rd.plain, rd.reason = true, ReasonPlainRequested
	case m.Length < uint64(ss.srv.cfg.SmallRead):
		rd.plain, rd.reason = true, ReasonSmallRead
	}
	ss.mu.Lock()
	if !ss.closed && ss.reads[m.ID] == nil && len(ss.reads) >= ss.srv.cfg.MaxReads {
		ss.mu.Unlock()
		cancel()
		ss.srv.cfg.Metrics.read(ss.srv.cfg.Transport.Name(), blockproto.CodeBusy.String(), 0)
		ss.queue(&blockproto.Error{ID: m.ID, Code: blockproto.CodeBusy,
			Message: fmt.Sprintf("session has %d reads open, the most this server allows: retry when one finishes", ss.srv.cfg.MaxReads)})
		return true
	}
	attached := slices.ContainsFunc(ss.data, func(d *srvData) bool { return d != nil })
	switch {
	case ss.closed:
		ss.mu.Unlock()
		cancel()
		return true
	case ss.reads[m.ID] != nil:
		ss.mu.Unlock()
		cancel()
		ss.fatal(blockproto.CodeBadRequest, fmt.Sprintf("read id %d already in use", m.ID))
		return false
	case !attached:
		ss.mu.Unlock()
		cancel()
		ss.queue(&blockproto.Error{ID: m.ID, Code: blockproto.CodeBadRequest, Message: "read before any data connection was attached"})
		return true
	}
	ss.reads[m.ID] = rd
	ss.srv.reads.Add(1)
	ss.mu.Unlock()
	rd.pending.Store(1) // until the read is announced
	vh, err := ss.srv.handles.acquire(ss.srv.cfg.Volumes, m.Volume)
	if err != nil {
		rd.stopErr = err
		ss.step(rd)
		return true
	}
	rd.vh = vh
	v := vh.v
	if m.Generation != 0 && m.Generation != v.Generation {
		rd.stopErr = &replaced{fmt.Sprintf("volume %s is generation %d now, the read asked for %d: it was replaced", v.Name, v.Generation, m.Generation)}
		ss.step(rd)
		return true
	}
	if m.Offset >= uint64(v.Size) || m.Length > uint64(v.Size)-m.Offset {
		rd.stopErr = &outOfRange{fmt.Sprintf("read [%d,+%d) past the end of volume %s (%d bytes)", m.Offset, m.Length, v.Name, v.Size)}
		ss.step(rd)
		return true
	}
	rd.next, rd.end = int64(m.Offset), int64(m.Offset+m.Length)
	ss.announceRead(rd, false)
	return true
}

// outOfRange is why a read past the end of its volume is refused.
type outOfRange struct{ msg string }

func (e *outOfRange) Error() string { return e.msg }

// replaced is why a read of another generation than the volume's is
// refused.
type replaced struct{ msg string }

func (e *replaced) Error() string { return e.msg }

// announceRead announces rd's extents, from rd.next on. With wait false it
// stops at the first extent that would have to wait, for in-flight budget
// or for the disk, and hands the read to the announcers; with wait true
// (an announcer's turn) it announces one extent, waiting as needed, and
// hands the read back to the announcers if more remain. When every extent
// is announced, or the read stops, it ends the read's announcing.
func (ss *srvSession) announceRead(rd *srvRead, wait bool) {
	v := rd.vh.v
	for rd.next < rd.end {
		off := rd.next
		extOff, extLen := v.ExtentRange(int(off / v.ExtentSize))
		n := min(extOff+extLen, rd.end) - off
		if err := rd.ctx.Err(); err != nil {
			rd.stopErr = err
			break
		}
		// The CRC of what was written: the stored one for a whole
		// extent; for part of one, combined from the stored block
		// CRCs and the bytes of the edge blocks, checked against theirs.
		var blocks *catalog.Blocks
		if off != extOff || n != extLen {
			blocks = rd.vh.blocksOf(ss.srv)
		}
		src := io.ReaderAt(rd.vh.f)
		if !wait {
			if off != extOff || n != extLen {
				if blocks == nil {
					break // a whole extent to read: an announcer's job
				}
				src = cachedOnly{rd.vh.f}
			}
			if !ss.inflight.TryAcquire(n) {
				break
			}
		} else if err := ss.inflight.Acquire(rd.ctx, n); err != nil {
			rd.stopErr = err
			break
		}
		// A small partial range is kept as its edge blocks are read
		// and checked, and sent from memory (see capture).
		var cp *capture
		if (off != extOff || n != extLen) && n <= stageMax {
			cp = &capture{r: src, buf: stagePool.Get().(*stageBuf), lo: off, hi: off + n}
			src = cp
		}
		crc, err := v.RangeCRC(src, off, n, blocks)
		j := sendJob{rd: rd, f: rd.vh.f, off: off, n: n}
		if cp != nil {
			j.inlineMax = copyMax
			if ss.inline && ss.lone() {
				j.inlineMax = loneInlineMax
			}
			held := false
			if err == nil {
				held, err = cp.fill(v.Name, crc, j.inlineMax)
			}
			if held {
				j.buf = cp.buf
			} else {
				stagePool.Put(cp.buf)
			}
		}
		if err != nil {
			ss.inflight.Release(n)
			if !wait && errors.Is(err, errNotCached) {
				break
			}
			if errors.Is(err, catalog.ErrDataCorrupt) {
				ss.log.Error("volume data corrupt on disk: read refused", "volume", v.Name, "err", err)
			}
			rd.stopErr = err
			break
		}
		if err := ss.enqueue(&j, off, crc); err != nil {
			if j.buf != nil {
				stagePool.Put(j.buf)
			}
			ss.inflight.Release(n)
			rd.stopErr = err
			break
		}
		rd.staged = rd.staged && j.buf != nil
		rd.total += uint64(n)
		rd.next += n
		if wait {
			break // one extent a turn
		}
	}
	if rd.stopErr == nil && rd.next < rd.end {
		ss.handOff(rd)
		return
	}
	if rd.stopErr == nil && rd.staged {
		// Every byte is in memory, checked and queued: nothing left can
		// fail but the connection, which ends the session. ReadDone now.
		ss.terminate(rd)
	}
	ss.step(rd) // announced
}

// handOff queues rd for the session's announcers, starting one if fewer
// than maxAnnouncers run.
func (ss *srvSession) handOff(rd *srvRead) {
	ss.mu.Lock()
	ss.waiting = append(ss.waiting, rd)
	start := ss.announcers < min(maxAnnouncers, len(ss.waiting))
	if start {
		ss.announcers++
	}
	ss.mu.Unlock()
	if start {
		go ss.runAnnouncer()
	}
}

// runAnnouncer gives the waiting reads their turns, one extent each, until
// none waits. Each read in turn is cancelled by its own context, so a
// closed session's reads end promptly.
func (ss *srvSession) runAnnouncer() {
	for {
		ss.mu.Lock()
		if len(ss.waiting) == 0 {
			ss.announcers--
			ss.mu.Unlock()
			return
		}
		rd := ss.waiting[0]
		ss.waiting[0] = nil
		ss.waiting = ss.waiting[1:]
		ss.mu.Unlock()
		ss.announceRead(rd, true)
		if ss.unflushed() {
			ss.flush()
		}
	}
}

// step ends one piece of rd's work (its announcing, or the send of one of
// its extents) and finishes rd after the last.
func (ss *srvSession) step(rd *srvRead) {
	if rd.pending.Add(-1) == 0 {
		ss.finishRead(rd)
	}
}

// finishRead ends rd once all its work is done: its terminal message is
// queued unless it went out early (see capture), and it stops counting
// against the server's drain.
func (ss *srvSession) finishRead(rd *srvRead) {
	if !rd.terminated {
		ss.terminate(rd)
	}
	if rd.vh != nil {
		ss.srv.handles.release(rd.vh)
	}
	ss.srv.reads.Done()
}

// terminate queues rd's terminal message: ReadDone, or Error with why it
// stopped. The caller's path flushes it (see srvSession). From then on the
// client may reuse the read's ID.
func (ss *srvSession) terminate(rd *srvRead) {
	rd.terminated = true
	reply := ss.terminal(rd) // before cancel: it reads the context's state
	ss.mu.Lock()
	delete(ss.reads, rd.id)
	ss.mu.Unlock()
	rd.cancel()
	if p := rd.ioErr.Load(); p != nil && errors.Is(*p, errDataConnLost) {
		// No terminal message: the session ends for it (its Error{0} is
		// already queued), which is what tells the client.
		ss.srv.cfg.Metrics.read(ss.srv.cfg.Transport.Name(), "session-lost", time.Since(rd.start))
		return
	}
	outcome := "done"
	if e, ok := reply.(*blockproto.Error); ok {
		outcome = e.Code.String()
		ss.log.Info("read failed", "id", rd.id, "volume", rd.volume, "err", e.Message)
	}
	ss.srv.cfg.Metrics.read(ss.srv.cfg.Transport.Name(), outcome, time.Since(rd.start))
	if rd.path != "" {
		reason := "" // why a devmem session's read went plain
		if (rd.path == pathPlain || rd.path == pathMixed) && ss.hasDevmem() {
			reason = rd.reason
		}
		ss.srv.cfg.Metrics.path(rd.path, reason)
		if ss.log.Enabled(context.Background(), slog.LevelDebug) { // its arguments cost a small read allocations
			ss.log.Debug("read path", "id", rd.id, "volume", rd.volume, "path", rd.path, "reason", reason, "bytes", rd.total)
		}
	}
	ss.queue(reply)
}

// errDataConnLost marks the failure of a read whose data connection broke:
// the session ends for it, and the client learns so from the session, not
// from a reply to each read, which it would take for the read's own fate.
var errDataConnLost = errors.New("data connection")

// terminal returns the terminal message of a read whose work is done.
func (ss *srvSession) terminal(rd *srvRead) blockproto.Msg {
	stopErr := rd.stopErr
	if stopErr == nil {
		// A read that missed its deadline (or was cancelled) while its
		// last bytes were on the way reports so; the client gave up on it.
		stopErr = rd.ctx.Err()
	}
	var (
		oor *outOfRange
		rep *replaced
	)
	switch {
	case errors.As(stopErr, &oor):
		return &blockproto.Error{ID: rd.id, Code: blockproto.CodeOutOfRange, Message: oor.msg}
	case errors.As(stopErr, &rep):
		return &blockproto.Error{ID: rd.id, Code: blockproto.CodeReplaced, Message: rep.msg}
	case rd.vh == nil && stopErr != nil:
		return catalogError(rd.id, stopErr)
	case errors.Is(stopErr, context.DeadlineExceeded):
		return &blockproto.Error{ID: rd.id, Code: blockproto.CodeTimedOut, Message: "deadline expired after " + fmt.Sprint(rd.total) + " bytes"}
	case errors.Is(stopErr, context.Canceled):
		if ss.srv.isDraining() {
			return &blockproto.Error{ID: rd.id, Code: blockproto.CodeShuttingDown, Message: "server shutting down"}
		}
		return &blockproto.Error{ID: rd.id, Code: blockproto.CodeCancelled, Message: "cancelled"}
	case errors.Is(stopErr, catalog.ErrDataCorrupt):
		return &blockproto.Error{ID: rd.id, Code: blockproto.CodeCorrupt, Message: stopErr.Error()}
	case stopErr != nil:
		return &blockproto.Error{ID: rd.id, Code: blockproto.CodeIO, Message: stopErr.Error()}
	}
	if p := rd.ioErr.Load(); p != nil {
		return &blockproto.Error{ID: rd.id, Code: blockproto.CodeIO, Message: (*p).Error()}
	}
	return &blockproto.ReadDone{ID: rd.id, Bytes: rd.total}
}

// enqueue announces the extent of job j, at volume offset off, on the least
// loaded data connection and queues j there. The Extent is queued on the
// control connection before the job, and the sender writes it before the
// bytes; a lone read's small extent is sent here as far as the connection
// takes it at once (trySend). A staged job picked by a connection that
// cannot send from memory gives its buffer back and is sent from the volume
// file. In a session that takes inline data, a staged job's bytes go in its
// Extent instead, and its work is done; so do a lone read's of up to
// MaxInlineData, from memory or the volume file, for a client that offered
// CapInlineLarge (sendInlineFile).
func (ss *srvSession) enqueue(j *sendJob, off int64, crc uint32) error {
	// A lone read of at most MaxInlineData bytes goes inline whole, from
	// memory or from the file, to a client that reads such frames
	// cheaply (CapInlineLarge). Its extents are announced in order, so
	// total counts the read's bytes before this one.
	large := ss.inlineFrom != nil && int64(j.rd.total)+j.rd.end-off <= blockproto.MaxInlineData &&
		(j.inlineMax == loneInlineMax || j.buf == nil && ss.lone())
	if ss.inline && j.buf != nil && (j.n <= j.inlineMax || large) {
		return ss.sendInline(j, off, crc)
	}
	if large && j.buf == nil {
		return ss.sendInlineFile(j, off, crc)
	}
	ss.announce.Lock()
	defer ss.announce.Unlock()
	ss.mu.Lock()
	d := ss.pickData(j.rd)
	closed := ss.closed
	ss.mu.Unlock()
	if closed {
		return context.Canceled
	}
	if d == nil {
		return errors.New("no data connection attached")
	}
	if j.buf != nil && d.bytes == nil {
		stagePool.Put(j.buf)
		j.buf = nil
	}
	pos, err := ss.queue(&blockproto.Extent{ID: j.rd.id, DataConn: uint16(d.index), StreamOffset: d.stream,
		VolumeOffset: uint64(off), Length: uint32(j.n), CRC32C: crc})
	if err != nil {
		return err
	}
	d.stream += uint64(j.n)
	d.queued.Add(j.n)
	j.rd.notePath(d.kind)
	j.rd.pending.Add(1)
	j.ctl = pos
	if ts, ok := d.sender.(transport.TrySender); ok && j.buf == nil && j.n <= loneSendMax && d.broken == nil &&
		d.queued.Load() == j.n && ss.lone() && ss.trySend(d, ts, j) {
		return nil
	}
	// The sender always makes progress (a closed connection fails fast),
	// so this cannot block for good; close waits for announce before it
	// closes the queue.
	d.queue <- *j
	return nil
}

// loneSendMax is the largest extent that the goroutine announcing it sends
// itself (trySend) when its read is the session's only one: a read at a
// time then costs no hand-off to the data connection's sender goroutine
// (64 KiB reads at depth 1: 19% more a second on the 2-core VM,
// docs/performance.md). With more reads open the senders keep several
// sends going at once. The send never blocks, so the serve goroutine is
// never kept from the control connection by a client slow to drain.
const loneSendMax = 64 << 10

// lone reports whether the session has one read open.
func (ss *srvSession) lone() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.reads) == 1
}

// trySend sends file-backed job j on d from this goroutine, as much as d
// takes without waiting, and reports whether that was all of it; if not, j
// is left describing the rest, for d's sender. It must be called with
// ss.announce held and nothing queued or in flight on d (d.queued is
// j.n), so no other job's bytes can reach d before j's. The Extent goes
// out first (docs/protocol.md 7.3); a control write that fails leaves the
// whole job to the sender, which sees the session end.
func (ss *srvSession) trySend(d *srvData, ts transport.TrySender, j *sendJob) bool {
	if ss.written.Load() < j.ctl && ss.flush() != nil {
		return false
	}
	sent := ts.TrySendExtent(j.f, j.off, j.n)
	if sent > 0 {
		ss.srv.cfg.Metrics.sent(ss.srv.cfg.Transport.Name(), sent)
	}
	if sent == j.n {
		ss.finishJob(d, *j, nil)
		return true
	}
	d.queued.Add(-sent)
	ss.inflight.Release(sent)
	j.off += sent
	j.n -= sent
	return false
}

// inlinePath notes that an extent of rd goes inline, on the control
// connection (a plain path), unless the session is closed.
func (ss *srvSession) inlinePath(rd *srvRead) error {
	ss.mu.Lock()
	closed := ss.closed
	ss.mu.Unlock()
	if closed {
		return context.Canceled
	}
	ss.announce.Lock()
	rd.notePath(int(blockproto.DataPlain))
	ss.announce.Unlock()
	return nil
}

// sendInline queues the Extent of staged job j with its bytes
// (CapInlineData). The bytes are copied into the queued frame, so the
// buffer and the in-flight budget are returned at once.
func (ss *srvSession) sendInline(j *sendJob, off int64, crc uint32) error {
	if err := ss.inlinePath(j.rd); err != nil {
		return err
	}
	_, err := ss.queue(&blockproto.Extent{ID: j.rd.id, VolumeOffset: uint64(off), Length: uint32(j.n), CRC32C: crc, Data: j.buf[:j.n]})
	if err != nil {
		return err
	}
	stagePool.Put(j.buf)
	j.buf = nil
	ss.inflight.Release(j.n)
	ss.srv.cfg.Metrics.sent(transport.TCP, j.n)
	return nil
}

// sendInlineFile writes the Extent of file-backed job j, a lone read's,
// inline (CapInlineLarge): the frames queued before it, then the Extent's
// header and its bytes from the volume file (sendfile on the control
// connection), before it returns. The client's control reader then places
// the read as it reads the frame, without a data connection: 64 KiB reads
// at depth 1 cost it about a third less CPU (docs/performance.md). Bytes
// the file fails to give are sent as zeros, which the client's CRC check
// refuses, and the read ends with the error.
func (ss *srvSession) sendInlineFile(j *sendJob, off int64, crc uint32) error {
	if err := ss.inlinePath(j.rd); err != nil {
		return err
	}
	e := &blockproto.Extent{ID: j.rd.id, VolumeOffset: uint64(off), Length: uint32(j.n), CRC32C: crc}
	err := ss.writeQueued(e, func(b []byte) error { return ss.inlineFrom.SendExtentAfter(b, j.f, j.off, j.n) })
	if err != nil && !errors.Is(err, transport.ErrSource) {
		return err
	}
	ss.inflight.Release(j.n)
	if err != nil {
		j.rd.ioErr.CompareAndSwap(nil, &err)
		return nil
	}
	ss.srv.cfg.Metrics.sent(transport.TCP, j.n)
	return nil
}

// kindUndeclared is srvData.kind for a data connection of a client that
// declares no kinds.
const kindUndeclared = -1

// Server-side path names (blockd_read_paths_total): a data connection kind
// ("plain", "devmem", "devmem-emulated"), or these.
const (
	pathPlain      = "plain"
	pathMixed      = "mixed"
	pathUndeclared = "undeclared"
)

// pickData returns the least loaded attached data connection for the next
// extent of rd: among the plain ones for a read that asks for plain (small,
// or the client's hint) and among the devmem ones otherwise, when the
// session has a connection of that kind; else among all of them, as for a
// client that declares no kinds. ss.mu and ss.announce must be held.
func (ss *srvSession) pickData(rd *srvRead) *srvData {
	var best, least *srvData
	for _, c := range ss.data {
		if c == nil {
			continue
		}
		if least == nil || c.queued.Load() < least.queued.Load() {
			least = c
		}
		if c.kind == kindUndeclared || blockproto.DataKind(c.kind).Devmem() == rd.plain {
			continue
		}
		if best == nil || c.queued.Load() < best.queued.Load() {
			best = c
		}
	}
	if best == nil {
		return least
	}
	return best
}

// notePath records that an extent of rd went on a data connection of kind.
// ss.announce must be held.
func (rd *srvRead) notePath(kind int) {
	p := pathUndeclared
	if kind != kindUndeclared {
		p = blockproto.DataKind(kind).String()
	}
	switch rd.path {
	case "":
		rd.path = p
	case p:
	default:
		if (rd.path == pathPlain) != (p == pathPlain) {
			rd.path = pathMixed
		}
	}
}

// hasDevmem reports whether one of the session's data connections is
// steered to devmem.
func (ss *srvSession) hasDevmem() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return slices.ContainsFunc(ss.data, func(d *srvData) bool {
		return d != nil && d.kind != kindUndeclared && blockproto.DataKind(d.kind).Devmem()
	})
}
