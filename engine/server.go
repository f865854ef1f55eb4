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
// fail with CodeShuttingDown. It waits for the server's goroutines.
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
	c.SetDeadline(time.Time{})
	if err := ref.sess.attach(ref.index, c); err != nil {
		log.Warn("data connection failed", "session", ref.sess.id, "err", err)
		c.Close()
	}
}

// runControl authenticates a control connection and serves its session.
func (s *Server) runControl(c net.Conn, host netip.Addr, release func(), log *slog.Logger) {
	defer c.Close()
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
	ch := &blockproto.Challenge{Caps: transportCaps(s.cfg.Transport.Name()), SessionID: s.nextSID.Add(1), Server: s.cfg.Name}
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
	w := &blockproto.Welcome{MAC: blockproto.ServerProof(s.cfg.Key, hello.Nonce, ch.Nonce, ch.SessionID)}
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
type srvSession struct {
	srv      *Server
	id       uint64
	client   string
	conn     net.Conn
	proto    *blockproto.Conn
	log      *slog.Logger
	tokens   [][blockproto.TokenLen]byte
	inflight *semaphore.Weighted

	mu       sync.Mutex
	data     []*srvData // by token index; nil until attached
	reads    map[uint64]*srvRead
	uploads  map[uint64]*srvUpload
	closed   bool
	done     chan struct{}
	announce sync.Mutex // orders stream offsets, Extent writes and queueing
	wmu      sync.Mutex // orders control writes after the check of ended
	ended    bool       // the session-ending Error was written; guarded by wmu
	workers  sync.WaitGroup
}

type srvData struct {
	index  int
	conn   net.Conn
	sender transport.Sender
	queue  chan sendJob
	stream uint64       // next stream offset; guarded by srvSession.announce
	queued atomic.Int64 // bytes queued, for choosing the least loaded
}

type sendJob struct {
	rd  *srvRead
	f   *os.File
	off int64
	n   int64
}

type srvRead struct {
	id     uint64
	ctx    context.Context
	cancel context.CancelFunc
	sends  sync.WaitGroup
	ioErr  atomic.Pointer[error]
}

// write sends a control message. A client that stops reading its control
// connection for the idle timeout has its session closed (in another
// goroutine: write may be called with the announce lock held).
func (ss *srvSession) write(m blockproto.Msg) error {
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	if ss.ended {
		return errSessionEnded
	}
	return ss.writeLocked(m)
}

// errSessionEnded: the session-ending Error was written; nothing follows it.
var errSessionEnded = errors.New("session ended")

// writeLocked writes m; ss.wmu must be held.
func (ss *srvSession) writeLocked(m blockproto.Msg) error {
	ss.conn.SetWriteDeadline(time.Now().Add(ss.srv.cfg.IdleTimeout))
	err := ss.proto.WriteMsg(m)
	if err != nil {
		go ss.close(fmt.Errorf("control connection: %w", err), 0)
	}
	return err
}

// closeWrite half-closes the session's connections: everything written so
// far is delivered, then the client sees EOF.
func (ss *srvSession) closeWrite() {
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

// attach starts the sender of data connection index.
func (ss *srvSession) attach(index int, c net.Conn) error {
	snd, err := ss.srv.cfg.Transport.NewSender(c)
	if err != nil {
		return fmt.Errorf("%s sender: %w", ss.srv.cfg.Transport.Name(), err)
	}
	d := &srvData{index: index, conn: c, sender: snd, queue: make(chan sendJob, jobQueue)}
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

// runSender writes queued extents on one data connection until the session
// closes its queue. After a failure it keeps draining the queue, failing each
// job, so the reads waiting on them finish.
func (ss *srvSession) runSender(d *srvData) {
	defer ss.workers.Done()
	defer d.sender.Close()
	var broken error
	for j := range d.queue {
		if broken != nil {
			ss.finishJob(d, j, broken)
			continue
		}
		// A client that stops reading is cut off after the idle timeout.
		d.conn.SetWriteDeadline(time.Now().Add(ss.srv.cfg.IdleTimeout))
		err := d.sender.SendExtent(j.f, j.off, j.n)
		if err != nil && !errors.Is(err, transport.ErrSource) {
			broken = fmt.Errorf("%w %d: %w", errDataConnLost, d.index, err)
			ss.log.Warn("data connection failed", "index", d.index, "err", err)
			ss.finishJob(d, j, broken)
			go ss.close(broken, blockproto.CodeIO)
			continue
		}
		if err == nil {
			ss.srv.cfg.Metrics.sent(ss.srv.cfg.Transport.Name(), j.n)
		}
		ss.finishJob(d, j, err)
	}
}

func (ss *srvSession) finishJob(d *srvData, j sendJob, err error) {
	if err != nil {
		j.rd.ioErr.CompareAndSwap(nil, &err)
	}
	d.queued.Add(-j.n)
	ss.inflight.Release(j.n)
	j.rd.sends.Done()
}

// serve reads control messages until the connection ends.
func (ss *srvSession) serve() {
	idle := ss.srv.cfg.IdleTimeout
	for {
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
			ss.write(ss.list(m.After))
		case *blockproto.StatVolume:
			ss.write(ss.stat(m.Name))
		case *blockproto.PutVolume, *blockproto.PutData, *blockproto.PutCommit, *blockproto.PutAbort:
			ss.onPut(m)
		case *blockproto.Ping:
			ss.write(&blockproto.Pong{Seq: m.Seq})
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
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	if !ss.ended {
		ss.ended = true
		ss.writeLocked(&blockproto.Error{Code: code, Message: msg})
	}
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

// startRead registers a read and serves it in its own goroutine.
// It returns false when the Read is a violation that ends the session (an
// ID already open), after writing the session's Error.
func (ss *srvSession) startRead(m *blockproto.Read) bool {
	if ss.srv.isDraining() {
		ss.write(&blockproto.Error{ID: m.ID, Code: blockproto.CodeShuttingDown, Message: "server is shutting down: no new reads"})
		return true
	}
	ctx, cancel := context.WithCancel(context.Background())
	if !m.Deadline.IsZero() {
		ctx, cancel = context.WithDeadline(context.Background(), m.Deadline)
	}
	rd := &srvRead{id: m.ID, ctx: ctx, cancel: cancel}
	ss.mu.Lock()
	if !ss.closed && ss.reads[m.ID] == nil && len(ss.reads) >= ss.srv.cfg.MaxReads {
		ss.mu.Unlock()
		cancel()
		ss.srv.cfg.Metrics.read(ss.srv.cfg.Transport.Name(), blockproto.CodeBusy.String(), 0)
		ss.write(&blockproto.Error{ID: m.ID, Code: blockproto.CodeBusy,
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
		ss.write(&blockproto.Error{ID: m.ID, Code: blockproto.CodeBadRequest, Message: "read before any data connection was attached"})
		return true
	}
	ss.reads[m.ID] = rd
	ss.srv.reads.Add(1)
	ss.mu.Unlock()
	go func() {
		defer ss.srv.reads.Done()
		start := time.Now()
		reply := ss.serveRead(rd, m)
		ss.mu.Lock()
		delete(ss.reads, m.ID)
		ss.mu.Unlock()
		cancel()
		outcome := "done"
		if e, ok := reply.(*blockproto.Error); ok {
			outcome = e.Code.String()
			ss.log.Info("read failed", "id", m.ID, "volume", m.Volume, "offset", m.Offset, "length", m.Length, "err", e.Message)
		}
		if reply == nil {
			outcome = "session-lost"
		}
		ss.srv.cfg.Metrics.read(ss.srv.cfg.Transport.Name(), outcome, time.Since(start))
		if reply != nil {
			ss.write(reply)
		}
	}()
	return true
}

// errDataConnLost marks the failure of a read whose data connection broke:
// the session ends for it, and the client learns so from the session, not
// from a reply to each read, which it would take for the read's own fate.
var errDataConnLost = errors.New("data connection")

// serveRead announces and queues every extent of a read and waits for them
// to be sent. It returns the read's final message: ReadDone or Error, or
// nil when its data connection broke (the session is ending).
func (ss *srvSession) serveRead(rd *srvRead, m *blockproto.Read) blockproto.Msg {
	vh, err := ss.srv.handles.acquire(ss.srv.cfg.Volumes, m.Volume)
	if err != nil {
		return catalogError(m.ID, err)
	}
	defer ss.srv.handles.release(vh)
	f, v := vh.f, vh.v
	if m.Offset >= uint64(v.Size) || m.Length > uint64(v.Size)-m.Offset {
		return &blockproto.Error{ID: m.ID, Code: blockproto.CodeOutOfRange,
			Message: fmt.Sprintf("read [%d,+%d) past the end of volume %s (%d bytes)", m.Offset, m.Length, v.Name, v.Size)}
	}
	var stopErr error
	var total uint64
	for off, end := int64(m.Offset), int64(m.Offset+m.Length); off < end; {
		i := int(off / v.ExtentSize)
		extOff, extLen := v.ExtentRange(i)
		n := min(extOff+extLen, end) - off
		if err := rd.ctx.Err(); err != nil {
			stopErr = err
			break
		}
		// The CRC of what was written: the stored one for a whole
		// extent; for part of one, computed from the extent's bytes
		// after they were checked against the stored CRC.
		var blocks *catalog.Blocks
		if off != extOff || n != extLen {
			blocks = ss.srv.blocksOf(v)
		}
		crc, err := v.RangeCRC(f, off, n, blocks)
		if err != nil {
			if errors.Is(err, catalog.ErrDataCorrupt) {
				ss.log.Error("volume data corrupt on disk: read refused", "volume", v.Name, "err", err)
			}
			stopErr = err
			break
		}
		if err := ss.inflight.Acquire(rd.ctx, n); err != nil {
			stopErr = err
			break
		}
		if err := ss.enqueue(rd, f, off, n, crc); err != nil {
			ss.inflight.Release(n)
			stopErr = err
			break
		}
		total += uint64(n)
		off += n
	}
	rd.sends.Wait()
	if p := rd.ioErr.Load(); p != nil && errors.Is(*p, errDataConnLost) {
		return nil // the session ends for it, which tells the client
	}
	if stopErr == nil {
		// A read that missed its deadline (or was cancelled) while its
		// last bytes were on the way reports so; the client gave up on it.
		stopErr = rd.ctx.Err()
	}
	switch {
	case errors.Is(stopErr, context.DeadlineExceeded):
		return &blockproto.Error{ID: m.ID, Code: blockproto.CodeTimedOut, Message: "deadline expired after " + fmt.Sprint(total) + " bytes"}
	case errors.Is(stopErr, context.Canceled):
		if ss.srv.isDraining() {
			return &blockproto.Error{ID: m.ID, Code: blockproto.CodeShuttingDown, Message: "server shutting down"}
		}
		return &blockproto.Error{ID: m.ID, Code: blockproto.CodeCancelled, Message: "cancelled"}
	case errors.Is(stopErr, catalog.ErrDataCorrupt):
		return &blockproto.Error{ID: m.ID, Code: blockproto.CodeCorrupt, Message: stopErr.Error()}
	case stopErr != nil:
		return &blockproto.Error{ID: m.ID, Code: blockproto.CodeIO, Message: stopErr.Error()}
	}
	if p := rd.ioErr.Load(); p != nil {
		return &blockproto.Error{ID: m.ID, Code: blockproto.CodeIO, Message: (*p).Error()}
	}
	return &blockproto.ReadDone{ID: m.ID, Bytes: total}
}

// enqueue announces one extent on the least loaded data connection and
// queues its bytes there. The announcement goes out before the bytes.
func (ss *srvSession) enqueue(rd *srvRead, f *os.File, off, n int64, crc uint32) error {
	ss.announce.Lock()
	defer ss.announce.Unlock()
	ss.mu.Lock()
	var d *srvData
	for _, c := range ss.data {
		if c != nil && (d == nil || c.queued.Load() < d.queued.Load()) {
			d = c
		}
	}
	closed := ss.closed
	ss.mu.Unlock()
	if closed {
		return context.Canceled
	}
	if d == nil {
		return errors.New("no data connection attached")
	}
	e := &blockproto.Extent{ID: rd.id, DataConn: uint16(d.index), StreamOffset: d.stream,
		VolumeOffset: uint64(off), Length: uint32(n), CRC32C: crc}
	if err := ss.write(e); err != nil {
		return err
	}
	d.stream += uint64(n)
	d.queued.Add(n)
	rd.sends.Add(1)
	// The sender always makes progress (a closed connection fails fast),
	// so this cannot block for good; close waits for announce before it
	// closes the queue.
	d.queue <- sendJob{rd: rd, f: f, off: off, n: n}
	return nil
}
