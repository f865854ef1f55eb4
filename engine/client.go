package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/internal/rawsock"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport"
)

// VerifyMode chooses how a session checks each extent's CRC-32C once its
// bytes have landed (docs/protocol.md: a receiver checks every extent).
type VerifyMode int

const (
	// VerifyAuto checks every extent whose bytes the provider can
	// checksum cheaply: always on a TCP data connection (the bytes passed
	// through host memory, so the plain connections of a devmem session
	// check too) and, under devmem, where the provider checksums on the
	// device or maps its buffers. An extent it cannot check is counted
	// unverified on the result, never passed as checked.
	VerifyAuto VerifyMode = iota
	// VerifyRequire checks every extent and fails a read with an extent it
	// cannot check.
	VerifyRequire
	// VerifyOff checks nothing; results count every extent unverified.
	// For measuring the raw data path only.
	VerifyOff
)

// String names the mode as the command line does: "auto", "require", "off".
func (m VerifyMode) String() string {
	switch m {
	case VerifyAuto:
		return "auto"
	case VerifyRequire:
		return "require"
	case VerifyOff:
		return "off"
	}
	return fmt.Sprintf("VerifyMode(%d)", int(m))
}

// checkExtents says whether a data connection checks landed extents:
// always under VerifyRequire, never under VerifyOff, and under VerifyAuto
// where the check is cheap: the TCP path, whose bytes passed through host
// memory, or a provider that checksums on the device or maps its buffers.
func checkExtents(m VerifyMode, transportName string, caps memory.Capabilities) bool {
	switch m {
	case VerifyRequire:
		return true
	case VerifyOff:
		return false
	}
	return transportName == transport.TCP || caps.DeviceChecksum || caps.CPUMappable
}

// Config configures a client [Session].
type Config struct {
	// Key is the pre-shared key both ends hold (see docs/protocol.md).
	Key []byte
	// Provider receives the payload. Required.
	Provider memory.Provider
	// Transport receives payload on the data connections. Required.
	Transport transport.RecvTransport
	// FallbackReason, when set, says why Transport is not the one the user
	// asked for; it is copied onto every result (docs/architecture.md: a fallback is never silent).
	FallbackReason string
	// DataConns is how many data connections to open with Transport
	// (default 4).
	DataConns int
	// PlainTransport receives the plain data connections a session opens
	// beside devmem ones (transport/tcp; choose.ClientPath.Plain). Nil:
	// none are opened.
	PlainTransport transport.RecvTransport
	// PlainConns is how many plain data connections (PlainTransport) to
	// open beside the DataConns ones when Transport is devmem (default 1;
	// negative: none). Ignored when Transport is TCP. A server that
	// chooses per read (docs/devmem.md) sends small reads on them.
	PlainConns int
	// Metrics, if set, counts the session's reads by path and reason.
	Metrics *ClientMetrics
	// Verify chooses how landed extents are checked against the CRC-32C
	// the server announced (the zero value checks every extent it can).
	Verify VerifyMode
	// MaxReads caps the reads the session has open on the server at once
	// (default 64, blockd's default per-session cap); further reads wait in
	// the session, in order, and are sent as earlier ones end. Keep it at
	// or below the server's cap: a server over its cap answers busy.
	MaxReads int
	// Name identifies the client in the server's logs.
	Name string
	// DialTimeout bounds connecting and the handshake (default 10s).
	DialTimeout time.Duration
	// KeepAlive is the ping interval on an idle control connection
	// (default 15s); a server silent for three intervals ends the session.
	KeepAlive time.Duration
	// StallTimeout bounds how long an ended request waits for an extent it
	// is receiving before its data connection is declared stalled and the
	// session closed (default 30s).
	StallTimeout time.Duration
	// Logger receives the session's logs (default: discard).
	Logger *slog.Logger

	// noInline: do not offer CapInlineData, as a client before it did
	// (tests reach the data connection paths so; export_test.go).
	noInline bool
	// noInlineLarge: offer CapInlineData but not CapInlineLarge, as a
	// client before it did (tests).
	noInlineLarge bool
}

func (c *Config) setDefaults() error {
	if c.Provider == nil {
		return errors.New("engine: config: no provider")
	}
	if c.Transport == nil {
		return errors.New("engine: config: no transport")
	}
	if len(c.Key) == 0 {
		return errors.New("engine: config: no key")
	}
	if c.MaxReads <= 0 {
		c.MaxReads = 64
	}
	if c.DataConns == 0 {
		c.DataConns = 4
	}
	if c.DataConns < 1 || c.DataConns > blockproto.MaxDataConns {
		return fmt.Errorf("engine: config: data connections %d out of range 1..%d", c.DataConns, blockproto.MaxDataConns)
	}
	switch {
	case c.PlainTransport == nil || dataKind(c.Transport.Name()) == blockproto.DataPlain || c.PlainConns < 0:
		c.PlainConns = 0
	case c.PlainConns == 0:
		c.PlainConns = 1
	}
	if c.DataConns+c.PlainConns > blockproto.MaxDataConns {
		return fmt.Errorf("engine: config: %d data connections and %d plain ones: more than %d", c.DataConns, c.PlainConns, blockproto.MaxDataConns)
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 15 * time.Second
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Session is an authenticated connection to one blockd: a control connection,
// Config.DataConns data connections and, beside devmem ones,
// Config.PlainConns plain ones. It is safe for concurrent use.
type Session struct {
	cfg        Config
	addr       string
	ctl        net.Conn
	proto      *blockproto.Conn
	server     string
	serverSend string // the server's send transport, from its Challenge
	data       []*dataConn
	// kinds: the server reads each data connection's kind and chooses
	// per read (both offered CapDataKinds); smallRead is its threshold
	// (Welcome.SmallRead, 0 if none).
	kinds     bool
	smallRead uint64
	// hasPlain, hasDevmem: the session has data connections of that kind.
	hasPlain, hasDevmem bool
	// mapper maps the provider's buffers here, or is nil; extents landing
	// in mapped memory are checksummed as they land.
	mapper memory.Mapper
	// inline stands in for a data connection for the extents whose bytes
	// come in their Extent (CapInlineData, offered by a session whose
	// Transport is TCP); nil when not offered.
	inline *dataConn

	// Reads to write, whether a goroutine is writing them, and whether
	// the control reader holds them back (see sendRead); guarded by rmu.
	rmu      sync.Mutex
	rq       []blockproto.Msg
	rqSpare  []blockproto.Msg
	rwriting bool
	rhold    bool

	mu       sync.Mutex
	nextID   uint64
	reqs     map[uint64]*request
	sent     int                   // Reads the server has not ended yet
	backlog  []*blockproto.Read    // Reads waiting for one of those to end
	callQ    []chan blockproto.Msg // FIFO of list/stat waiters
	callMu   sync.Mutex            // orders list/stat calls on the wire
	puts     map[uint64]*clientPut // uploads Put is waiting on
	putSlots chan struct{}         // one token per upload running
	closed   bool
	draining bool    // the server said Goodbye
	recvErrs []error // from closing the receivers
	err      error   // why the session ended
	done     chan struct{}
	lastRx   atomic.Int64 // Unix nanoseconds of the last message received
	closeWG  sync.WaitGroup
}

// Dial connects to the blockd at addr, authenticates, and opens the data
// connections. It returns once every data connection is attached.
func Dial(ctx context.Context, addr string, cfg Config) (*Session, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	ctl, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("engine: connect to %s: %w", addr, withCtx(ctx, err))
	}
	ctl = &sniffConn{Conn: rawsock.Wrap(ctl)}
	s := &Session{
		cfg:      cfg,
		addr:     addr,
		ctl:      ctl,
		proto:    blockproto.NewConnSize(ctl, blockproto.InlineReadBuf),
		reqs:     make(map[uint64]*request),
		puts:     make(map[uint64]*clientPut),
		putSlots: make(chan struct{}, MaxUploadsPerSession),
		done:     make(chan struct{}),
	}
	if m, ok := cfg.Provider.(memory.Mapper); ok && cfg.Provider.Capabilities().CPUMappable {
		s.mapper = m
	}
	if t := cfg.Transport; t.Name() == transport.TCP && !cfg.noInline {
		s.inline = &dataConn{index: inlineConn, transport: t, kind: blockproto.DataPlain,
			check: checkExtents(cfg.Verify, t.Name(), cfg.Provider.Capabilities())}
	}
	stop := context.AfterFunc(ctx, func() { ctl.SetDeadline(time.Now()) })
	tokens, err := s.handshake()
	if err == nil {
		err = s.attach(ctx, &d, tokens)
	}
	if !stop() || err != nil {
		if err == nil {
			err = ctx.Err()
		}
		ctl.Close()
		for _, dc := range s.data {
			dc.close()
		}
		if errors.Is(err, ErrNotBlockxfer) {
			return nil, err // names addr and what it answered
		}
		return nil, fmt.Errorf("engine: connect to %s: %w", addr, withCtx(ctx, err))
	}
	ctl.SetDeadline(time.Time{})
	s.lastRx.Store(time.Now().UnixNano())
	s.closeWG.Add(2 + len(s.data))
	go s.readControl()
	go s.keepalive()
	for _, dc := range s.data {
		go s.runData(dc)
	}
	cfg.Logger.Info("session open", "server", addr, "server_name", s.server,
		"data_conns", len(s.data), "plain_conns", len(s.data)-cfg.DataConns, "transport", cfg.Transport.Name(),
		"per_read_path", s.kinds)
	return s, nil
}

// handshake runs Hello/Challenge/Auth/Welcome and returns the data tokens.
func (s *Session) handshake() ([][blockproto.TokenLen]byte, error) {
	if err := blockproto.WriteControlPreamble(s.ctl); err != nil {
		return nil, err
	}
	hello := &blockproto.Hello{Caps: blockproto.CapTCP | blockproto.CapDataKinds, Client: s.cfg.Name}
	if s.inline != nil {
		hello.Caps |= blockproto.CapInlineData
		if !s.cfg.noInlineLarge {
			hello.Caps |= blockproto.CapInlineLarge
		}
	}
	var err error
	if hello.Nonce, err = blockproto.NewNonce(); err != nil {
		return nil, err
	}
	if err := s.proto.WriteMsg(hello); err != nil {
		return nil, err
	}
	m, err := s.proto.ReadMsg()
	if err != nil {
		return nil, s.notBlockxfer(fmt.Errorf("read challenge: %w", err))
	}
	ch, ok := m.(*blockproto.Challenge)
	if !ok {
		return nil, unexpected(m, "challenge")
	}
	s.server = ch.Server
	s.serverSend = capsTransport(ch.Caps)
	s.kinds = ch.Caps&blockproto.CapDataKinds != 0
	proof := blockproto.ClientProof(s.cfg.Key, hello.Nonce, ch.Nonce, ch.SessionID)
	if err := s.proto.WriteMsg(&blockproto.Auth{MAC: proof}); err != nil {
		return nil, err
	}
	m, err = s.proto.ReadMsg()
	if err != nil {
		return nil, fmt.Errorf("read welcome: %w", err)
	}
	w, ok := m.(*blockproto.Welcome)
	if !ok {
		if e, isErr := m.(*blockproto.Error); isErr && e.Code == blockproto.CodeAuth {
			return nil, fmt.Errorf("%w: the server refused this client's key (%w)", ErrAuth, e)
		}
		return nil, unexpected(m, "welcome")
	}
	want := blockproto.ServerProof(s.cfg.Key, hello.Nonce, ch.Nonce, ch.SessionID)
	if !blockproto.VerifyProof(w.MAC, want) {
		return nil, fmt.Errorf("%w: the server did not prove it holds this client's key", ErrAuth)
	}
	if len(w.Tokens) < s.cfg.DataConns {
		return nil, fmt.Errorf("server granted %d data connections, %d asked", len(w.Tokens), s.cfg.DataConns)
	}
	s.smallRead = w.SmallRead
	n := min(len(w.Tokens), s.cfg.DataConns+s.cfg.PlainConns)
	if n < s.cfg.DataConns+s.cfg.PlainConns {
		s.cfg.Logger.Info("server granted fewer data connections than asked: fewer plain ones",
			"server", s.addr, "granted", len(w.Tokens), "plain", n-s.cfg.DataConns)
	}
	return w.Tokens[:n], nil
}

// attach opens one data connection per token and waits for the server to
// confirm each on the control connection. The first Config.DataConns
// receive with Config.Transport, the rest with Config.PlainTransport; each
// declares its kind when the server reads kinds.
func (s *Session) attach(ctx context.Context, d *net.Dialer, tokens [][blockproto.TokenLen]byte) error {
	for i, tok := range tokens {
		c, err := d.DialContext(ctx, "tcp", s.addr)
		if err != nil {
			return fmt.Errorf("data connection %d: %w", i, err)
		}
		t := s.cfg.Transport
		if i >= s.cfg.DataConns {
			t = s.cfg.PlainTransport
		}
		dc := &dataConn{index: i, conn: c, jobs: make(chan job, jobQueue), transport: t, kind: dataKind(t.Name()),
			check: checkExtents(s.cfg.Verify, t.Name(), s.cfg.Provider.Capabilities())}
		s.data = append(s.data, dc)
		s.hasPlain = s.hasPlain || !dc.kind.Devmem()
		s.hasDevmem = s.hasDevmem || dc.kind.Devmem()
		if s.kinds {
			err = blockproto.WriteDataPreambleKind(c, tok, dc.kind)
		} else {
			err = blockproto.WriteDataPreamble(c, tok)
		}
		if err != nil {
			return fmt.Errorf("data connection %d: %w", i, err)
		}
	}
	attached := make([]bool, len(tokens))
	for n := 0; n < len(tokens); {
		m, err := s.proto.ReadMsg()
		if err != nil {
			return fmt.Errorf("wait for data connections: %w", err)
		}
		a, ok := m.(*blockproto.DataAttached)
		if !ok {
			return unexpected(m, "data-attached")
		}
		if int(a.Index) >= len(tokens) || attached[a.Index] {
			return fmt.Errorf("server attached unknown data connection %d", a.Index)
		}
		attached[a.Index] = true
		n++
	}
	for _, dc := range s.data {
		r, err := dc.transport.NewReceiver(dc.conn, s.cfg.Provider)
		if err != nil {
			return fmt.Errorf("data connection %d: %s receiver: %w", dc.index, dc.transport.Name(), err)
		}
		dc.recv = r
	}
	return nil
}

// ErrNotBlockxfer: the peer answered the handshake with bytes that are not
// blockxfer frames; it is some other server, such as an HTTP or SSH server.
// The error names the address and quotes what the peer sent.
var ErrNotBlockxfer = errors.New("does not speak the blockxfer protocol")

// sniffConn keeps the first bytes read from a control connection, so that
// a handshake that fails can say what the peer answered.
type sniffConn struct {
	net.Conn
	head []byte // the first sniffLen bytes read
}

// sniffLen is how many of the first bytes read sniffConn keeps.
const sniffLen = 64

func (c *sniffConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if k := min(n, sniffLen-len(c.head)); k > 0 {
		c.head = append(c.head, b[:k]...)
	}
	return n, err
}

// notBlockxfer explains a handshake whose Challenge could not be read
// (err): a peer whose first bytes are not a frame is not a blockd, and the
// error says so, quoting its first line; a peer that sent nothing is asked
// about. Otherwise err is returned as it is.
func (s *Session) notBlockxfer(err error) error {
	sc, ok := s.ctl.(*sniffConn)
	if !ok {
		return err
	}
	head := sc.head
	framing := errors.Is(err, blockproto.ErrFrameTooLarge) || errors.Is(err, blockproto.ErrMalformed) ||
		errors.Is(err, blockproto.ErrUnknownType)
	plausible := len(head) < blockproto.FrameHeaderLen ||
		binary.BigEndian.Uint32(head) <= blockproto.MaxHandshakeFrame
	switch {
	case len(head) > 0 && (framing || !plausible):
		return fmt.Errorf("%s %w (it answered %s): is it the address of a blockd?", s.addr, ErrNotBlockxfer, quoteAnswer(head))
	case len(head) == 0:
		return fmt.Errorf("%w (%s accepted the connection but sent nothing back: is it the address of a blockd?)", err, s.addr)
	}
	return err
}

// quoteAnswer quotes the first line of what a peer sent, for a message.
func quoteAnswer(b []byte) string {
	line := string(b)
	if i := strings.IndexAny(line, "\r\n"); i >= 0 {
		line = line[:i]
	}
	if len(line) == 0 {
		line = string(b)
	}
	q := fmt.Sprintf("%q", line)
	if len(line) < len(b) {
		q += " ..."
	}
	return q
}

// withCtx names the context's error when it is why err happened: a dial or
// read cut short by the deadline otherwise reports only "i/o timeout".
func withCtx(ctx context.Context, err error) error {
	cerr := ctx.Err()
	if dl, ok := ctx.Deadline(); cerr == nil && ok && !time.Now().Before(dl) {
		// The dial's own timer can fire before the context's.
		cerr = context.DeadlineExceeded
	}
	// net reports a context deadline as "i/o timeout"; say which it was.
	if cerr != nil && !strings.Contains(err.Error(), cerr.Error()) {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}

func unexpected(m blockproto.Msg, want string) error {
	if e, ok := m.(*blockproto.Error); ok {
		return fmt.Errorf("server error: %w", e)
	}
	return fmt.Errorf("protocol: got %s, want %s", m.Type(), want)
}

// Server returns the name the server gave in its handshake.
func (s *Session) Server() string { return s.server }

// Addr returns the address the session was dialled at.
func (s *Session) Addr() string { return s.addr }

// ServerTransport returns the transport the server sends with.
func (s *Session) ServerTransport() string { return s.serverSend }

// Close ends the session. Requests still running fail with ErrSessionClosed.
// It waits for the session's goroutines to stop and returns what the
// receivers could not release cleanly (for devmem, tokens still held).
func (s *Session) Close() error {
	s.fail(fmt.Errorf("%w: closed by client", ErrSessionClosed))
	s.closeWG.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.recvErrs...)
}

// Draining reports whether the server said Goodbye: reads in flight finish,
// new ones are refused.
func (s *Session) Draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// Err returns why the session ended, or nil while it is up.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// fail ends the session with err: it closes every connection and fails
// every pending request and call.
func (s *Session) fail(err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.err = err
	reqs := s.reqs
	s.reqs = map[uint64]*request{}
	calls := s.callQ
	s.callQ = nil
	s.mu.Unlock()

	// End the requests first, so a receive unblocked below cannot
	// record a lesser error in their place.
	for _, r := range reqs {
		r.abort(StateFailed, err)
	}
	close(s.done)
	s.ctl.Close()
	for _, dc := range s.data {
		dc.close()
	}
	for _, c := range calls {
		close(c)
	}
	s.cfg.Logger.Info("session closed", "server", s.addr, "reason", err)
}

// call sends a list/stat request and waits for its answer. The server
// answers such calls in order, so waiters queue FIFO.
func (s *Session) call(ctx context.Context, m blockproto.Msg) (blockproto.Msg, error) {
	ch := make(chan blockproto.Msg, 1)
	// callMu keeps queue order equal to wire order; s.mu is not held while
	// writing, so the control reader is never stuck behind a blocked write.
	s.callMu.Lock()
	s.mu.Lock()
	if s.closed {
		err := s.err
		s.mu.Unlock()
		s.callMu.Unlock()
		return nil, err
	}
	s.callQ = append(s.callQ, ch)
	s.mu.Unlock()
	err := s.proto.WriteMsg(m)
	s.callMu.Unlock()
	if err != nil {
		s.fail(fmt.Errorf("%w: write: %w", ErrSessionClosed, err))
		return nil, s.Err()
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, s.Err()
		}
		if e, isErr := r.(*blockproto.Error); isErr {
			return nil, e
		}
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Volumes lists all the server's volumes, sorted bytewise by name. It asks
// for one page after another ([Session.VolumesPage]) until the server says
// the listing is complete, so a server with more than
// [blockproto.MaxVolumes] volumes is listed whole. Each page is read
// atomically, the whole listing is not: a volume created or removed while
// Volumes runs may be missing or still listed, but no name is listed twice.
func (s *Session) Volumes(ctx context.Context) ([]blockproto.VolumeStat, error) {
	var all []blockproto.VolumeStat
	after := ""
	for {
		vols, next, err := s.VolumesPage(ctx, after)
		if err != nil {
			return nil, err
		}
		if all == nil && next == "" {
			return vols, nil // the common case: one page
		}
		all = append(all, vols...)
		if next == "" {
			return all, nil
		}
		after = next
	}
}

// VolumesPage returns one page of the server's volumes: up to
// [blockproto.MaxVolumes] whose names sort bytewise after after, in that
// order ("" for the first page; at most [blockproto.MaxName] bytes). next is
// "" when no volumes follow the page; otherwise it is the after to pass for
// the next page. A server that answers out of order (a name not after after,
// or not above the one before it) gets an error, so a loop over pages always
// ends.
func (s *Session) VolumesPage(ctx context.Context, after string) (vols []blockproto.VolumeStat, next string, err error) {
	if len(after) > blockproto.MaxName {
		return nil, "", fmt.Errorf("engine: list volumes after a %d-byte name: longer than %d", len(after), blockproto.MaxName)
	}
	m, err := s.call(ctx, &blockproto.ListVolumes{After: after})
	if err != nil {
		return nil, "", fmt.Errorf("engine: list volumes: %w", err)
	}
	l, ok := m.(*blockproto.VolumeList)
	if !ok {
		return nil, "", fmt.Errorf("engine: list volumes: %w", unexpected(m, "volume-list"))
	}
	prev := after
	for i := range l.Volumes {
		if name := l.Volumes[i].Name; name <= prev {
			return nil, "", fmt.Errorf("engine: list volumes: protocol: server listed %q after %q, out of order", name, prev)
		}
		prev = l.Volumes[i].Name
	}
	return l.Volumes, l.Next, nil
}

// Stat describes one volume.
func (s *Session) Stat(ctx context.Context, name string) (blockproto.VolumeStat, error) {
	m, err := s.call(ctx, &blockproto.StatVolume{Name: name})
	if err != nil {
		return blockproto.VolumeStat{}, fmt.Errorf("engine: stat %s: %w", name, err)
	}
	v, ok := m.(*blockproto.VolumeInfo)
	if !ok {
		return blockproto.VolumeStat{}, fmt.Errorf("engine: stat %s: %w", name, unexpected(m, "volume-info"))
	}
	return v.Volume, nil
}

// readControl dispatches messages from the server until the session ends.
func (s *Session) readControl() {
	defer s.closeWG.Done()
	held := false // Reads held back while a burst of frames is dispatched
	for {
		buffered := s.proto.FrameBuffered()
		if held && !buffered {
			s.releaseReads()
			held = false
		}
		// Inline extents are placed before the next read: their Data
		// may alias the read buffer.
		m, err := s.proto.ReadMsgView()
		if err != nil {
			s.closeAfterDrain(fmt.Errorf("%w: control connection: %w", ErrSessionClosed, err))
			return
		}
		if !buffered {
			// Read from the connection now; a burst's later frames
			// were received with it.
			s.lastRx.Store(time.Now().UnixNano())
		}
		if !held && s.proto.FrameBuffered() {
			s.holdReads()
			held = true
		}
		switch m := m.(type) {
		case *blockproto.Extent:
			s.onExtent(m)
		case *blockproto.ReadDone:
			s.readEnded()
			if r := s.lookup(m.ID); r != nil {
				r.serverDone(int64(m.Bytes), nil)
			}
		case *blockproto.Error:
			if m.ID == 0 && s.answersCall(m) {
				s.answer(m)
				continue
			}
			if m.ID == 0 {
				s.fail(fmt.Errorf("%w: server: %w", ErrSessionClosed, m))
				return
			}
			s.readEnded()
			if r := s.lookup(m.ID); r != nil {
				r.serverDone(-1, m)
			}
		case *blockproto.VolumeList, *blockproto.VolumeInfo:
			s.answer(m)
		case *blockproto.PutAck, *blockproto.PutDone, *blockproto.PutError:
			s.onPut(m)
		case *blockproto.Ping:
			s.proto.WriteMsg(&blockproto.Pong{Seq: m.Seq})
		case *blockproto.Pong:
		case *blockproto.Goodbye:
			s.mu.Lock()
			s.draining = true
			s.mu.Unlock()
			s.cfg.Logger.Info("server is draining", "server", s.addr, "reason", m.Reason)
		default:
			s.fail(fmt.Errorf("%w: protocol: unexpected %s from server", ErrSessionClosed, m.Type()))
			return
		}
	}
}

// closeAfterDrain ends the session when its control connection ends. If the
// server said Goodbye first, reads it finished (ReadDone received) may still
// have payload in flight on the data connections: they get up to the stall
// timeout to land before the session closes. Reads the server never
// finished fail with ErrDraining.
func (s *Session) closeAfterDrain(cause error) {
	s.mu.Lock()
	draining := s.draining && !s.closed
	reqs := make([]*request, 0, len(s.reqs))
	for _, r := range s.reqs {
		reqs = append(reqs, r)
	}
	s.mu.Unlock()
	if draining {
		timeout := time.NewTimer(s.cfg.StallTimeout)
		defer timeout.Stop()
	wait:
		for _, r := range reqs {
			r.mu.Lock()
			finished := r.serverSaid
			r.mu.Unlock()
			if !finished {
				r.abort(StateFailed, fmt.Errorf("engine: read %s [%d,+%d): %w", r.res.Volume, r.offset, r.length, ErrDraining))
				continue
			}
			select {
			case <-r.done:
			case <-timeout.C:
				break wait
			}
		}
	}
	s.fail(cause)
}

// answersCall reports whether an ID-0 Error answers a pending list or stat
// call rather than ending the session (docs/protocol.md section 9.1).
func (s *Session) answersCall(e *blockproto.Error) bool {
	switch e.Code {
	case blockproto.CodeNotFound, blockproto.CodeIO, blockproto.CodeBusy, blockproto.CodeInternal:
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.callQ) > 0
	}
	return false
}

// answer hands a call's reply to the oldest waiter.
func (s *Session) answer(m blockproto.Msg) {
	s.mu.Lock()
	if len(s.callQ) == 0 {
		s.mu.Unlock()
		s.fail(fmt.Errorf("%w: protocol: unsolicited %s", ErrSessionClosed, m.Type()))
		return
	}
	ch := s.callQ[0]
	s.callQ = s.callQ[1:]
	s.mu.Unlock()
	ch <- m
}

func (s *Session) lookup(id uint64) *request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reqs[id]
}

// onExtent queues an announced extent on its data connection, or places
// one whose bytes came with it.
func (s *Session) onExtent(e *blockproto.Extent) {
	if e.Data != nil {
		s.onInline(e)
		return
	}
	if int(e.DataConn) >= len(s.data) {
		s.fail(fmt.Errorf("%w: protocol: extent on unknown data connection %d", ErrSessionClosed, e.DataConn))
		return
	}
	dc := s.data[e.DataConn]
	if e.StreamOffset != dc.announced {
		s.fail(fmt.Errorf("%w: protocol: data connection %d: extent at stream offset %d, expected %d",
			ErrSessionClosed, e.DataConn, e.StreamOffset, dc.announced))
		return
	}
	dc.announced += uint64(e.Length)
	r := s.lookup(e.ID)
	if r != nil && !r.announce(e) {
		s.fail(fmt.Errorf("%w: protocol: read %d: extent [%d,+%d) outside the request",
			ErrSessionClosed, e.ID, e.VolumeOffset, e.Length))
		return
	}
	select {
	case dc.jobs <- job{req: r, ext: *e, at: time.Now()}:
	case <-s.done:
	}
}

// inlineConn is ExtentTiming.DataConn for an extent whose bytes came in its
// Extent.
const inlineConn = -1

// onInline places an extent whose bytes came in its Extent (CapInlineData)
// and finishes it, here in the control reader, as a data connection's
// receiver would.
func (s *Session) onInline(e *blockproto.Extent) {
	if s.inline == nil {
		s.fail(fmt.Errorf("%w: protocol: read %d: extent with inline data, which this client did not offer", ErrSessionClosed, e.ID))
		return
	}
	r := s.lookup(e.ID)
	if r == nil {
		return // ended: the bytes are dropped
	}
	if !r.announce(e) {
		s.fail(fmt.Errorf("%w: protocol: read %d: extent [%d,+%d) outside the request",
			ErrSessionClosed, e.ID, e.VolumeOffset, e.Length))
		return
	}
	j := job{req: r, ext: *e, at: time.Now()}
	dstOff := r.dstOff + int64(e.VolumeOffset) - r.offset
	n := int64(e.Length)
	var (
		crc    uint32
		summed bool
		spoilt error
	)
	if r.begin() {
		var b []byte
		if s.mapper != nil {
			if m, err := s.mapper.Bytes(r.dst); err == nil && dstOff+n <= int64(len(m)) {
				b = m[dstOff : dstOff+n]
			}
		}
		if b != nil {
			// Checked as it is in the destination, as receiveExtent does.
			copy(b, e.Data)
			crc, summed = crc32.Checksum(b, castagnoli), true
		} else if err := s.cfg.Provider.CopyIn(context.Background(), r.dst, dstOff, e.Data); err != nil {
			spoilt = fmt.Errorf("engine: read %d: extent at %d: %w", r.id, e.VolumeOffset, err)
			n = 0
		}
		r.release(n)
	}
	s.finishExtent(context.Background(), s.inline, j, dstOff, crc, summed, spoilt)
}

// keepalive pings the server while the session is idle and ends the session
// when the server stays silent for three intervals.
func (s *Session) keepalive() {
	defer s.closeWG.Done()
	t := time.NewTicker(s.cfg.KeepAlive)
	defer t.Stop()
	var seq uint64
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			silent := now.Sub(time.Unix(0, s.lastRx.Load()))
			if silent > 3*s.cfg.KeepAlive {
				s.fail(fmt.Errorf("%w: server silent for %s", ErrSessionClosed, silent.Round(time.Millisecond)))
				return
			}
			seq++
			if err := s.proto.WriteMsg(&blockproto.Ping{Seq: seq}); err != nil {
				s.fail(fmt.Errorf("%w: keepalive: %w", ErrSessionClosed, err))
				return
			}
		}
	}
}
