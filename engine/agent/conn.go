package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/ec"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// maxFDs is how many fds one message may bring in before the control
// message is truncated; a message carries one at most, so room for more
// lets extra ones be received and closed rather than lost in the socket.
const maxFDs = 8

// conn is one application's connection: its registrations and reads.
type conn struct {
	a    *Agent
	uc   *net.UnixConn
	log  *slog.Logger
	peer peer
	gone chan struct{} // closed when the application has hung up

	hello bool // the application said hello

	mu       sync.Mutex
	regs     map[uint64]*region
	reads    map[uint64]*read
	ended    []uint64      // reads ended and not yet collected, in order
	notify   chan struct{} // closed and replaced when a read ends
	lastID   uint64
	lastReg  uint64
	inflight sync.WaitGroup // read goroutines
}

// region is registered memory: an import of the application's memory.
type region struct {
	handle uint64
	p      memory.Provider // the provider that imported it
	buf    memory.Buffer
	device bool // device memory (cuda-ipc, cuda-vmm-fd)
}

// read is one submitted read.
type read struct {
	spec      ReadSpec
	reg       *region
	cancel    context.CancelFunc
	done      chan struct{} // closed when it has ended and stopped writing
	comp      Completion
	submitted time.Time
}

// inMsg is one message from the application, decoded or refused.
type inMsg struct {
	req *Request
	fds []int
	err error // a *ProtoError to answer with
}

func newConn(a *Agent, uc *net.UnixConn) *conn {
	return &conn{
		a: a, uc: uc, gone: make(chan struct{}),
		regs: map[uint64]*region{}, reads: map[uint64]*read{}, notify: make(chan struct{}),
	}
}

// refuse answers a connection that will not be served and closes it.
func (c *conn) refuse(e *ProtoError) {
	c.reply(0, nil, e)
	c.uc.Close()
}

// serve reads and answers the application's messages until it hangs up,
// then cancels its reads and releases its registrations.
func (c *conn) serve() {
	defer c.uc.Close()
	p, err := peerOf(c.uc)
	if err != nil {
		c.a.cfg.Logger.Warn("agent: refused an application: no peer credentials", "err", err)
		c.reply(0, nil, &ProtoError{Code: CodePermission, Message: err.Error()})
		return
	}
	c.peer = p
	c.log = c.a.cfg.Logger.With("pid", p.pid, "uid", p.uid, "gid", p.gid)
	if !c.a.allowed(p.uid) {
		c.log.Warn("agent: refused an application: uid not allowed")
		c.reply(0, nil, &ProtoError{Code: CodePermission, Message: fmt.Sprintf("uid %d may not use this agent (its --allow-uid list)", p.uid)})
		return
	}
	c.log.Info("agent: application connected")
	in := make(chan inMsg)
	go c.receive(in)
	for m := range in {
		if m.err != nil {
			var pe *ProtoError
			errors.As(m.err, &pe)
			var seq uint64
			if m.req != nil {
				seq = m.req.Seq
			}
			c.log.Info("agent: refused a message", "code", pe.Code, "msg", pe.Message)
			c.reply(seq, nil, pe)
			continue
		}
		c.handle(m.req, m.fds)
	}
	c.release()
	c.log.Info("agent: application disconnected")
}

// allowed says whether uid may use the agent.
func (a *Agent) allowed(uid uint32) bool {
	return a.cfg.AllowUIDs == nil || uid == 0 || uid == uint32(os.Getuid()) || slices.Contains(a.cfg.AllowUIDs, uid)
}

// receive reads messages and passes them to serve until the application
// hangs up or the connection fails; then it closes gone and in.
func (c *conn) receive(in chan<- inMsg) {
	defer close(in)
	defer close(c.gone)
	buf := make([]byte, MaxMessage)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	for {
		n, oobn, flags, _, err := c.uc.ReadMsgUnix(buf, oob)
		if err != nil || (n == 0 && oobn == 0) {
			return // hung up (a zero-length message ends the connection)
		}
		fds, ferr := parseFDs(oob[:oobn])
		m := inMsg{fds: fds}
		switch {
		case ferr != nil:
			m.err = &ProtoError{Code: CodeUnexpectedFD, Message: ferr.Error()}
		case flags&unix.MSG_CTRUNC != 0:
			m.err = &ProtoError{Code: CodeUnexpectedFD, Message: fmt.Sprintf("more than %d fds with one message (they were closed)", maxFDs)}
		case flags&unix.MSG_TRUNC != 0:
			m.err = &ProtoError{Code: CodeTooLarge, Message: fmt.Sprintf("message over %d bytes, the limit", MaxMessage)}
		default:
			m.req, m.err = Decode(buf[:n], len(fds))
		}
		if m.err != nil {
			closeFDs(m.fds)
			m.fds = nil
		}
		in <- m
	}
}

// parseFDs returns the fds of SCM_RIGHTS messages in oob; it closes them
// and fails on any other control message.
func parseFDs(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("bad control message: %v", err)
	}
	var fds []int
	var bad error
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			bad = fmt.Errorf("unexpected control message (level %d, type %d)", m.Header.Level, m.Header.Type)
			continue
		}
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			bad = fmt.Errorf("bad SCM_RIGHTS message: %v", err)
			continue
		}
		fds = append(fds, got...)
	}
	if bad != nil {
		closeFDs(fds)
		return nil, bad
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// reply sends one answer: ok with the fields of body, or err.
func (c *conn) reply(seq uint64, body map[string]any, err *ProtoError) {
	m := map[string]any{"seq": seq, "ok": err == nil}
	for k, v := range body {
		m[k] = v
	}
	if err != nil {
		m["error"] = err
	}
	b, jerr := json.Marshal(m)
	if jerr != nil || len(b) > MaxMessage {
		b, _ = json.Marshal(map[string]any{"seq": seq, "ok": false,
			"error": &ProtoError{Code: "internal", Message: fmt.Sprintf("reply could not be encoded (%d bytes, %v)", len(b), jerr)}})
	}
	if _, werr := c.uc.Write(b); werr != nil && !errors.Is(werr, net.ErrClosed) && !errors.Is(werr, syscall.EPIPE) {
		c.a.cfg.Logger.Info("agent: reply not sent", "err", werr)
	}
}

// handle answers one request.
func (c *conn) handle(q *Request, fds []int) {
	if !c.hello && q.Op != OpHello {
		closeFDs(fds)
		c.reply(q.Seq, nil, &ProtoError{Code: CodeVersion, Message: "send hello first"})
		return
	}
	switch q.Op {
	case OpHello:
		if q.Version != Version {
			c.reply(q.Seq, nil, &ProtoError{Code: CodeVersion, Message: fmt.Sprintf("protocol version %d not spoken; this agent speaks %d", q.Version, Version)})
			return
		}
		c.hello = true
		c.log.Info("agent: hello", "client", q.Client)
		c.reply(q.Seq, map[string]any{"version": Version, "agent": c.a.cfg.Name, "pid": os.Getpid(),
			"max_message_bytes": MaxMessage, "max_reads_per_submit": MaxReadsPerSubmit,
			"max_completions_per_reply": MaxCompletionsPerReply, "uid": c.peer.uid}, nil)
	case OpStat:
		c.stat(q)
	case OpRegister:
		fd := -1
		if len(fds) > 0 {
			fd = fds[0]
		}
		c.register(q, fd)
	case OpUnregister:
		c.unregister(q)
	case OpSubmit:
		c.submit(q)
	case OpWait:
		c.wait(q)
	case OpCancel:
		c.cancel(q)
	}
}

// stat describes a volume.
func (c *conn) stat(q *Request) {
	ctx, cancel := context.WithTimeout(c.a.ctx, 30*time.Second)
	defer cancel()
	if q.Striped {
		r, _, err := c.a.stripedReader(ctx, q.Volume, c.a.cfg.Provider)
		if err != nil {
			c.reply(q.Seq, nil, errorOf(err))
			return
		}
		m := r.Manifest()
		c.reply(q.Seq, map[string]any{"server": "", "volume": m.Name, "size_bytes": m.Size, "striped": true,
			"extent_size_bytes": m.Unit, "generation": m.Generation, "k": m.K, "m": m.M}, nil)
		return
	}
	srv := c.a.server(ctx, q.Server, c.a.cfg.Provider)
	if srv.err != nil {
		c.reply(q.Seq, nil, errorOf(srv.err))
		return
	}
	s, err := srv.client.Session(ctx)
	if err != nil {
		c.reply(q.Seq, nil, errorOf(err))
		return
	}
	vs, err := s.Stat(ctx, q.Volume)
	if err != nil {
		c.reply(q.Seq, nil, errorOf(err))
		return
	}
	c.reply(q.Seq, map[string]any{"server": q.Server, "volume": vs.Name, "size_bytes": vs.Size, "striped": false,
		"extent_size_bytes": vs.ExtentSize, "generation": vs.Generation}, nil)
}

// register imports the application's memory: host memory through the
// agent's provider, device memory through its device's. fd (-1 with
// cuda-ipc) is closed once imported, before the reply: the application
// never sees an answer while the agent still holds its fd.
func (c *conn) register(q *Request, fd int) {
	r, err := c.importRegion(q, fd)
	if fd >= 0 {
		unix.Close(fd)
	}
	if err != nil {
		c.log.Info("agent: registration refused", "kind", q.Kind, "code", err.Code, "msg", err.Message)
		c.reply(q.Seq, nil, err)
		return
	}
	c.log.Debug("agent: registered", "handle", r.handle, "kind", q.Kind, "bytes", q.Size)
	c.reply(q.Seq, map[string]any{"handle": r.handle, "size": q.Size}, nil)
}

// importRegion imports what q describes and records it as a region.
func (c *conn) importRegion(q *Request, fd int) (*region, *ProtoError) {
	c.mu.Lock()
	full := len(c.regs) >= c.a.cfg.MaxRegistrations
	c.mu.Unlock()
	if full {
		return nil, &ProtoError{Code: CodeLimit, Message: fmt.Sprintf("%d regions registered, the limit: unregister some", c.a.cfg.MaxRegistrations)}
	}
	ctx := context.Background()
	d := memory.ImportDesc{Kind: memory.ImportKind(q.Kind), FD: fd, Offset: q.Offset, Size: q.Size}
	im, p := c.a.importer, c.a.cfg.Provider
	if q.Device != nil {
		var err error
		if im, p, err = c.a.device(ctx, *q.Device); err != nil {
			return nil, &ProtoError{Code: CodeDevice, Message: err.Error()}
		}
		if d.Kind == memory.ImportCUDAIPC {
			d.Handle, _ = ipcHandle(q.IPCHandle) // checked by Decode
		}
	}
	buf, err := im.Import(ctx, d)
	if err != nil {
		code := CodeImport
		switch {
		case errors.Is(err, memory.ErrImportNotSupported):
			code = CodeNotSupported
		case errors.Is(err, memory.ErrOutOfBounds):
			code = "out-of-range"
		}
		return nil, &ProtoError{Code: code, Message: err.Error()}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastReg++
	r := &region{handle: c.lastReg, p: p, buf: buf, device: q.Device != nil}
	c.regs[r.handle] = r
	return r, nil
}

// free releases a region's import.
func (c *conn) free(r *region) {
	if err := r.p.Free(context.Background(), r.buf.ID); err != nil {
		c.log.Warn("agent: release a registration", "handle", r.handle, "err", err)
	}
}

// unregister cancels the reads into a region, waits for them to stop
// writing, and releases it.
func (c *conn) unregister(q *Request) {
	c.mu.Lock()
	r, ok := c.regs[q.Handle]
	if !ok {
		c.mu.Unlock()
		c.reply(q.Seq, nil, &ProtoError{Code: CodeUnknownHandle, Message: fmt.Sprintf("no registration %d on this connection", q.Handle)})
		return
	}
	delete(c.regs, q.Handle)
	var wait []chan struct{}
	for _, rd := range c.reads {
		if rd.reg == r {
			rd.cancel()
			wait = append(wait, rd.done)
		}
	}
	c.mu.Unlock()
	for _, d := range wait {
		<-d
	}
	c.free(r)
	c.reply(q.Seq, map[string]any{"cancelled": len(wait)}, nil)
}

// submit starts reads. It checks all of them first: one that names an
// unknown handle or does not fit its region refuses the whole submit.
func (c *conn) submit(q *Request) {
	ids, err := c.start(q.Reads)
	if err != nil {
		c.reply(q.Seq, nil, err)
		return
	}
	c.reply(q.Seq, map[string]any{"ids": ids}, nil)
}

// start checks reads and starts them, or starts none.
func (c *conn) start(reads []ReadSpec) ([]uint64, *ProtoError) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.reads)+len(reads) > c.a.cfg.MaxReads {
		return nil, &ProtoError{Code: CodeLimit, Message: fmt.Sprintf("%d reads open and %d more would pass the limit of %d: collect completions with wait",
			len(c.reads), len(reads), c.a.cfg.MaxReads)}
	}
	for i, s := range reads {
		r, ok := c.regs[s.Handle]
		if !ok {
			return nil, &ProtoError{Code: CodeUnknownHandle, Message: fmt.Sprintf("submit: read %d: no registration %d on this connection", i, s.Handle)}
		}
		if s.DstOffset+s.Length > r.buf.Size {
			return nil, &ProtoError{Code: "out-of-range", Message: fmt.Sprintf("submit: read %d: %d bytes at dst_offset %d do not fit registration %d of %d bytes",
				i, s.Length, s.DstOffset, s.Handle, r.buf.Size)}
		}
	}
	ids := make([]uint64, len(reads))
	now := time.Now()
	for i, s := range reads {
		c.lastID++
		reg := c.regs[s.Handle]
		ctx, cancel := context.WithCancel(context.Background())
		if s.TimeoutMS > 0 {
			ctx, cancel = context.WithTimeout(context.Background(), time.Duration(s.TimeoutMS)*time.Millisecond)
		}
		rd := &read{spec: s, reg: reg, cancel: cancel, done: make(chan struct{}), submitted: now, comp: Completion{
			ID: c.lastID, Tag: s.Tag, Server: s.Server, Volume: s.Volume, Offset: s.Offset, Length: s.Length,
			Handle: s.Handle, DstOffset: s.DstOffset}}
		c.reads[c.lastID] = rd
		ids[i] = c.lastID
		c.inflight.Add(1)
		go c.run(ctx, rd)
	}
	return ids, nil
}

// run performs one read and records its completion.
func (c *conn) run(ctx context.Context, rd *read) {
	defer c.inflight.Done()
	defer rd.cancel()
	start := time.Now()
	if rd.spec.Striped {
		res, path, err := c.fetchStriped(ctx, rd)
		rd.comp.completeStriped(res, path, c.a.cfg.Verify == engine.VerifyRequire, err, rd.submitted, start, time.Now())
	} else {
		res, err := c.fetch(ctx, rd)
		rd.comp.complete(res, err, rd.submitted, start, time.Now())
	}
	c.mu.Lock()
	c.ended = append(c.ended, rd.comp.ID)
	close(rd.done)
	close(c.notify)
	c.notify = make(chan struct{})
	c.mu.Unlock()
}

// fetch reads rd's range into its region from its dst_offset, through the
// client of the server and the region's provider, in chunks of at most
// ChunkSize in flight together.
func (c *conn) fetch(ctx context.Context, rd *read) ([]engine.Result, error) {
	srv := c.a.server(ctx, rd.spec.Server, rd.reg.p)
	if srv.err != nil {
		return nil, srv.err
	}
	var ranges []engine.Range
	for off, end := rd.spec.Offset, rd.spec.Offset+rd.spec.Length; off < end; off += c.a.cfg.ChunkSize {
		ranges = append(ranges, engine.Range{Offset: off, Length: min(c.a.cfg.ChunkSize, end-off)})
	}
	return srv.client.Read(ctx, rd.spec.Volume, ranges, rd.reg.buf, &engine.ReadOptions{DstOffset: rd.spec.DstOffset})
}

// fetchStriped reads rd's range of a striped volume into its region from
// its dst_offset, through the agent's Reader of that volume.
func (c *conn) fetchStriped(ctx context.Context, rd *read) (*ec.ReadResult, *Path, error) {
	r, path, err := c.a.stripedReader(ctx, rd.spec.Volume, rd.reg.p)
	if err != nil {
		return nil, nil, err
	}
	if size := r.Manifest().Size; rd.spec.Offset+rd.spec.Length > size {
		return nil, path, fmt.Errorf("agent: read %s [%d,+%d): %w of %d bytes", rd.spec.Volume, rd.spec.Offset, rd.spec.Length, errVolumeRange, size)
	}
	res, err := r.Read(ctx, rd.spec.Offset, rd.spec.Length, rd.reg.buf, rd.spec.DstOffset)
	return res, path, err
}

// wait answers with ended reads (of q.IDs, or any), waiting up to
// q.TimeoutMS for the first one.
func (c *conn) wait(q *Request) {
	limit := q.Max
	if limit == 0 {
		limit = MaxCompletionsPerReply
	}
	var timer <-chan time.Time
	if q.TimeoutMS > 0 {
		t := time.NewTimer(time.Duration(q.TimeoutMS) * time.Millisecond)
		defer t.Stop()
		timer = t.C
	}
	for {
		c.mu.Lock()
		for _, id := range q.IDs {
			if _, ok := c.reads[id]; !ok {
				c.mu.Unlock()
				c.reply(q.Seq, nil, &ProtoError{Code: CodeUnknownRead, Message: fmt.Sprintf("no read %d on this connection (never submitted, or its completion was collected)", id)})
				return
			}
		}
		comps, size := []json.RawMessage{}, 256
		var keep []uint64
		for _, id := range c.ended {
			if len(comps) >= limit || (len(q.IDs) > 0 && !slices.Contains(q.IDs, id)) {
				keep = append(keep, id)
				continue
			}
			b, err := json.Marshal(&c.reads[id].comp)
			if err != nil || size+len(b)+1 > MaxMessage {
				keep = append(keep, id)
				limit = len(comps) // full: the rest go in the next reply
				continue
			}
			size += len(b) + 1
			comps = append(comps, b)
			delete(c.reads, id)
		}
		if len(comps) > 0 || timer == nil {
			c.ended = keep
			pending := len(c.reads) - len(keep)
			c.mu.Unlock()
			c.reply(q.Seq, map[string]any{"completions": comps, "pending": pending}, nil)
			return
		}
		notify := c.notify
		c.mu.Unlock()
		select {
		case <-notify:
		case <-timer:
			timer = nil
		case <-c.gone:
			return
		}
	}
}

// cancel cancels reads; their completions say cancelled unless they had
// already ended.
func (c *conn) cancel(q *Request) {
	c.mu.Lock()
	var unknown []uint64
	n := 0
	for _, id := range q.IDs {
		rd, ok := c.reads[id]
		if !ok {
			unknown = append(unknown, id)
			continue
		}
		select {
		case <-rd.done:
		default:
			rd.cancel()
			n++
		}
	}
	c.mu.Unlock()
	if len(unknown) > 0 {
		c.reply(q.Seq, nil, &ProtoError{Code: CodeUnknownRead, Message: fmt.Sprintf("no reads %v on this connection (the others were cancelled)", unknown)})
		return
	}
	c.reply(q.Seq, map[string]any{"cancelled": n}, nil)
}

// release cancels the connection's reads, waits for them to stop writing,
// and releases its registrations.
func (c *conn) release() {
	c.mu.Lock()
	for _, rd := range c.reads {
		rd.cancel()
	}
	c.mu.Unlock()
	c.inflight.Wait()
	c.mu.Lock()
	regs := c.regs
	c.regs = map[uint64]*region{}
	c.reads = map[uint64]*read{}
	c.ended = nil
	c.mu.Unlock()
	for _, r := range regs {
		c.free(r)
	}
	if len(regs) > 0 {
		c.log.Info("agent: released the registrations of a disconnected application", "registrations", len(regs))
	}
}

// counts returns the connection's registrations, those of device memory
// among them, and its reads.
func (c *conn) counts() (regs, device, reads int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.regs {
		if r.device {
			device++
		}
	}
	return len(c.regs), device, len(c.reads)
}
