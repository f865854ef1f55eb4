package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/term"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/bufpool"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// getResult is what `blockcat get --json` prints for a volume of one
// server (docs/json.md).
type getResult struct {
	Server     string `json:"server"`
	Volume     string `json:"volume"`
	Generation uint64 `json:"generation"`
	Offset     int64  `json:"offset_bytes"`
	Length     int64  `json:"length_bytes"`
	// Resumed counts the bytes of the range that a partial file kept by
	// an earlier get held (--continue); Bytes counts those fetched now.
	Bytes          int64   `json:"fetched_bytes"`
	Resumed        int64   `json:"resumed_bytes"`
	Seconds        float64 `json:"seconds"`
	SetupSeconds   float64 `json:"setup_seconds"`
	BytesPerSecond float64 `json:"bytes_per_second"`
	Provider       string  `json:"provider"`
	Output         *string `json:"output"` // nil: memory only
	Transport      string  `json:"transport"`
	FallbackReason *string `json:"fallback_reason"` // nil: no fallback
	ServerSend     string  `json:"server_transport"`
	DataConns      int     `json:"data_connections"`
	Depth          int     `json:"depth"`
	WindowBytes    int64   `json:"window_bytes"`
	Requests       int     `json:"requests"`
	// Paths counts the requests by the path that carried each.
	Paths readPaths `json:"paths"`
	// Verified: every extent fetched was checked against its CRC-32C;
	// VerifiedExtents and UnverifiedExtents count them.
	Verified          bool `json:"verified"`
	VerifiedExtents   int  `json:"verified_extents"`
	UnverifiedExtents int  `json:"unverified_extents"`
	// LinearBytes counts bytes that arrived in host memory instead of the
	// dmabuf (packets the NIC did not header-split) and were copied in.
	LinearBytes int64 `json:"linear_bytes"`
	LinearFrags int64 `json:"linear_frags"`
	// Reconnects counts the sessions dialled again after one was lost
	// under the get; ReconnectCauses says why each was lost.
	Reconnects      int          `json:"reconnects"`
	ReconnectCauses []string     `json:"reconnect_causes"`
	Extents         []extentInfo `json:"extents"`
}

// extentInfo is one extent of a get as --json prints it.
type extentInfo struct {
	Offset   int64   `json:"offset_bytes"` // in the volume
	Length   int64   `json:"length_bytes"`
	DataConn int     `json:"data_connection"`
	Latency  float64 `json:"latency_seconds"` // announcement to last byte placed
	Verified bool    `json:"verified"`
	CRC32C   string  `json:"crc32c"` // as the server announced it, 8 hex digits
	// Transport received it (a session's devmem and plain connections
	// differ).
	Transport string `json:"transport"`
}

// extentInfos converts the engine's extent timings for --json.
func extentInfos(ext []engine.ExtentTiming) []extentInfo {
	out := make([]extentInfo, len(ext))
	for i, e := range ext {
		out[i] = extentInfo{Offset: e.VolumeOffset, Length: e.Length, DataConn: e.DataConn,
			Latency: e.Latency.Seconds(), Verified: e.Verified, CRC32C: fmt.Sprintf("%08x", e.CRC32C), Transport: e.Transport}
	}
	return out
}

// defaultWindow is the bytes of one request of a get when --window is not
// given: 1 MiB with four or more data connections (as by default), 4 MiB
// with fewer. Up to --depth windows are in flight, each into its own
// buffer, so this is also the memory a get takes and must have the kernel
// zero once. Measured on the 2-core development VM (whole processes, 7-9
// interleaved rounds, docs/performance.md): a 1 GiB get over 4 data
// connections took 200 ms of client CPU with 1 MiB windows, 254 ms with
// 2 MiB, 276 ms with 4 MiB and 296 ms with 8 MiB, and no longer with 1 MiB
// (290 ms against 297-308 ms); a 256 MiB get 79 ms against 89 ms with
// 2 MiB. One data connection was slower with 1 MiB (335 ms against 276 ms
// with 4 MiB and 277 ms with 8 MiB).
func defaultWindow(dataConns int) int64 {
	if dataConns >= 4 {
		return 1 << 20
	}
	return 4 << 20
}

// getFlags are the flags of `blockcat get` for a volume of one server.
type getFlags struct {
	common
	server, volume string
	offset, length cli.SizeFlag
	window         cli.SizeFlag // 0: defaultWindow for --data-conns
	depth          int
	rate           cli.SizeFlag
	out            string
	force          bool
	resume         bool
	keepCache      bool
	asJSON         bool
}

// outputHelp describes -o for both kinds of get.
const outputHelp = "write the bytes to `FILE`, or - for stdout (default: keep in memory only).\n" +
	"A regular FILE is replaced only when the whole get succeeds: the bytes go to\n" +
	".FILE" + partialSuffix + " beside it first, and a get that fails or is interrupted\n" +
	"leaves FILE as it was and keeps the bytes fetched there for --continue.\n" +
	"A device, FIFO or other non-regular FILE is written in place"

// continueHelp describes --continue for both kinds of get.
const continueHelp = "resume from the bytes an earlier get -o FILE of the same range kept;\n" +
	"refused if the volume was replaced since. A get stopped by SIGINT (Ctrl-C)\n" +
	"or SIGTERM keeps its bytes and exits with status 130 or 143"

// keepCacheHelp describes --keep-cache for both kinds of get.
const keepCacheHelp = "keep the bytes written to -o FILE in the page cache; by default a get\n" +
	"waits for all but the last 32MiB written to reach the disk and drops them\n" +
	"from the cache as it goes, as nbdcopy does, so a large get does not push\n" +
	"other data out of memory"

// parseGetFlags parses and checks the arguments of `blockcat get SERVER
// VOLUME`.
func parseGetFlags(args []string, stderr io.Writer) (*getFlags, error) {
	f := &getFlags{}
	fs := flag.NewFlagSet("blockcat get", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f.register(fs)
	fs.Var(&f.offset, "offset", "first byte to fetch")
	fs.Var(&f.length, "length", "bytes to fetch (default: to the end of the volume)")
	fs.Var(&f.window, "window", "bytes per request; up to --depth requests are in flight\n(default: 1MiB, or 4MiB with fewer than 4 --data-conns)")
	fs.IntVar(&f.depth, "depth", 4, "requests in flight")
	cli.Alias(fs, "concurrency", "depth")
	fs.Var(&f.rate, "rate", "limit the fetch to about this many bytes per second, such as 100MiB (0: no limit);\nit caps --window at a quarter second's worth")
	fs.StringVar(&f.out, "o", "", outputHelp)
	fs.BoolVar(&f.force, "force", false, forceHelp)
	fs.BoolVar(&f.resume, "continue", false, continueHelp)
	fs.BoolVar(&f.keepCache, "keep-cache", false, keepCacheHelp)
	fs.BoolVar(&f.verify, "verify", false, "require every extent's CRC-32C checked after it lands (it is checked\nwherever the path allows by default); fail if one cannot be")
	fs.BoolVar(&f.noVerify, "no-verify", false, noVerifyHelp)
	fs.BoolVar(&f.asJSON, "json", false, "print the result as JSON")
	pos, err := cli.ParseServer(fs, args, 2, "SERVER VOLUME [--offset N] [--length N] [-o FILE|-] [--continue] [--verify|--no-verify] [--json]")
	if err != nil {
		return nil, cli.UsageErr(err)
	}
	given := false
	fs.Visit(func(fl *flag.Flag) { given = given || fl.Name == "window" })
	if (given && f.window <= 0) || f.depth < 1 {
		return nil, cli.CmdUsageErr(fs, errors.New("--window and --depth must be positive"))
	}
	if f.verify && f.noVerify {
		return nil, cli.UsageErr(errors.New("--verify and --no-verify contradict each other"))
	}
	if f.resume && (f.out == "" || f.out == "-") {
		return nil, cli.UsageErr(errors.New("--continue needs -o FILE"))
	}
	f.server, f.volume = pos[0], pos[1]
	return f, nil
}

// forceHelp describes --force.
const forceHelp = "with -o -, write the bytes to stdout even when it is a terminal"

// refuseTerminal refuses -o - when stdout is a terminal, unless --force:
// a volume's bytes would flood it (curl refuses the same way).
func refuseTerminal(out string, stdout io.Writer, force bool) error {
	if out != "-" || force {
		return nil
	}
	if f, ok := stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return cli.UsageErr(errors.New("-o - would write the volume's bytes to this terminal: redirect stdout " +
			"(blockcat get ... -o - > FILE, or | into a program), use -o FILE, or pass --force"))
	}
	return nil
}

// get runs `blockcat get SERVER VOLUME`: it fetches the range into the
// provider's memory, keeping --depth requests in flight, and writes it to
// -o (see openOutput: a regular FILE is replaced only when the get
// succeeds).
func get(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseGetFlags(args, stderr)
	if err != nil {
		return err
	}
	return getVolume(ctx, f, []engine.Holder{{Addr: f.server}}, stdout, stderr)
}

// getVolume runs a get of f's range of f.volume from the servers holding
// it: the first that answers, failing over to the others in order. An
// empty f.server is set to the holder read first.
func getVolume(ctx context.Context, f *getFlags, holders []engine.Holder, stdout, stderr io.Writer) error {
	if err := refuseTerminal(f.out, stdout, f.force); err != nil {
		return err
	}
	ctx, cancel := f.context(ctx)
	defer cancel()
	setup := time.Now()
	s, err := f.dialHolders(ctx, holders, stderr)
	if err != nil {
		return err
	}
	defer s.Close()
	if f.server == "" {
		f.server = s.Addr()
	}
	vol, err := s.Stat(ctx, f.volume)
	if err != nil {
		return noVolume(ctx, s, f.server, f.volume, err)
	}
	n, err := volumeRange(vol.Name, int64(vol.Size), int64(f.offset), int64(f.length))
	if err != nil {
		return err
	}
	out, err := openOutput(f.out, stdout, stderr, volumeSource(f.server, vol, int64(f.offset), n), f.resume)
	if err != nil {
		return err
	}
	out.keepCache = f.keepCache
	defer out.finish(errors.New("get ended early"))
	res := getResult{Server: f.server, Volume: vol.Name, Generation: vol.Generation, Offset: int64(f.offset), Length: n,
		DataConns: int(f.dataConns), Depth: f.depth, Provider: s.p.Name(), Output: outputName(f.out), Resumed: out.resumed,
		SetupSeconds: time.Since(setup).Seconds(), Transport: s.path.Transport.Name(), ServerSend: s.ServerTransport(),
		Extents: []extentInfo{}, Paths: readPaths{}}
	if r := s.path.FallbackReason; r != "" {
		res.FallbackReason = &r
	}
	start := time.Now()
	if rest := n - out.resumed; rest > 0 {
		window := int64(f.window)
		if window == 0 {
			window = defaultWindow(int(f.dataConns))
		}
		if f.rate > 0 {
			// Requests of a quarter second's worth keep the rate even.
			window = min(window, max(int64(f.rate)/4, 4096))
		}
		window = min(window, rest)
		res.WindowBytes = window
		res.Depth = windowCount(rest, window, f.depth, int(f.dataConns), vol.ExtentSize)
		// The windows come from a pool of the provider's buffers,
		// allocated and prefaulted once, freed when the get ends.
		pool := bufpool.New(s.p)
		defer pool.Close()
		bufs, err := pool.Get(ctx, window, res.Depth)
		if err != nil {
			return out.finish(stopCause(ctx, err))
		}
		start = time.Now()
		bar := newBar(stderr, rest, "get "+vol.Name, f.asJSON)
		err = fetch(ctx, s, vol, int64(f.offset)+out.resumed, rest, int64(f.rate), window, bufs, out, bar, &res)
		bar.Finish(err)
		if err != nil {
			return out.finish(stopCause(ctx, err))
		}
	}
	for _, e := range res.Extents {
		if e.Verified {
			res.VerifiedExtents++
		} else {
			res.UnverifiedExtents++
		}
	}
	res.Verified = res.UnverifiedExtents == 0 && res.VerifiedExtents > 0
	res.ReconnectCauses = []string{}
	for _, r := range s.client.Reconnects() {
		cause := r.Cause
		if r.Addr != f.server {
			cause += ", failed over to " + r.Addr
		}
		res.ReconnectCauses = append(res.ReconnectCauses, cause)
	}
	res.Reconnects = len(res.ReconnectCauses)
	// The rate counts making the output durable: the sync and rename.
	if err := out.finish(nil); err != nil {
		return err
	}
	res.Seconds = time.Since(start).Seconds()
	if res.Seconds > 0 {
		res.BytesPerSecond = float64(res.Bytes) / res.Seconds
	}
	if f.asJSON {
		return cli.WriteJSON(stdout, res)
	}
	// The summary goes to stderr when the payload goes to stdout.
	if f.out == "-" {
		stdout = stderr
	}
	res.printText(stdout)
	return nil
}

// volumeRange checks that [off, off+length) is within the volume of size
// bytes and not empty, and returns the bytes to fetch (length 0: to the
// end).
func volumeRange(name string, size, off, length int64) (int64, error) {
	if off > size {
		return 0, fmt.Errorf("offset %d is past the end of %s (%d bytes)", off, name, size)
	}
	n := length
	if n == 0 {
		n = size - off
	}
	if n == 0 {
		return 0, fmt.Errorf("nothing to fetch: %s is empty past offset %d", name, off)
	}
	return n, nil
}

// windowCount is how many windows of a fetch of n bytes are in flight:
// --depth, raised until they hold an extent for every data connection
// (extents go to the least loaded connection, so fewer would leave some
// idle), and no more than the fetch has windows.
func windowCount(n, window int64, depth, dataConns int, extentSize uint32) int {
	k := int64(depth)
	if extentSize > 0 {
		k = max(k, (int64(dataConns)*int64(min(int64(extentSize), window))+window-1)/window)
	}
	return int(min(k, (n+window-1)/window))
}

// destination names where a get put the bytes, for its summary: FILE,
// stdout, or the provider's memory.
func destination(output *string, provider string) string {
	switch {
	case output == nil:
		return provider + " memory"
	case *output == "-":
		return "stdout"
	}
	return *output
}

// resumedNote says, for the summary, what an earlier get had kept.
func resumedNote(n int64) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (after the %s kept by an earlier get)", cli.FormatBytes(float64(n)))
}

// printText prints the summary line.
func (res *getResult) printText(w io.Writer) {
	msg := fmt.Sprintf("fetched %s of %s%s into %s in %.3fs: %s/s over %s (%s, server sent with %s)",
		cli.FormatBytes(float64(res.Bytes)), res.Volume, resumedNote(res.Resumed), destination(res.Output, res.Provider),
		res.Seconds, cli.FormatBytes(res.BytesPerSecond), res.Transport, cli.Plural(res.DataConns, "data connection"), res.ServerSend)
	if res.FallbackReason != nil {
		msg += ", fallback: " + *res.FallbackReason
	}
	if res.Paths.perRead(res.Transport) {
		msg += ", " + res.Paths.String()
	}
	if res.VerifiedExtents > 0 {
		msg += fmt.Sprintf(", %d extents verified (crc32c)", res.VerifiedExtents)
	}
	if res.UnverifiedExtents > 0 {
		msg += fmt.Sprintf(", %d extents NOT verified", res.UnverifiedExtents)
	}
	if res.LinearBytes > 0 {
		msg += fmt.Sprintf(", %s arrived in host memory and were copied in (%d linear frags: packets the NIC did not header-split)",
			cli.FormatBytes(float64(res.LinearBytes)), res.LinearFrags)
	}
	if res.Reconnects > 0 {
		msg += fmt.Sprintf(", reconnected %s (%s)", cli.Plural(res.Reconnects, "time"), strings.Join(res.ReconnectCauses, "; "))
	}
	fmt.Fprintln(w, msg)
}

// fetch reads [off, off+n) of vol in windows of win bytes through the
// buffers (each at least win bytes), keeping every buffer busy (at rate
// bytes per second at most, if rate is set). Each window is one read of the conn's client, which rides through a lost
// session unless --no-resume. An output that takes bytes at their place
// gets each extent written as it lands, overlapping the rest of the
// fetch; a stream gets each window, in order, once it is whole. When it
// fails, or ctx ends, it cancels the reads still in flight and waits for
// them to end.
func fetch(ctx context.Context, s *conn, vol blockproto.VolumeStat, off, n, rate, win int64, bufs []memory.Buffer,
	out *output, bar *cli.Bar, res *getResult) error {
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel, below
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type window struct {
		off, n int64
		buf    memory.Buffer
		res    []engine.Result
		err    error
		done   bool
	}
	var landed atomic.Int64 // bytes of extents landed, for the progress bar
	// place writes an extent of w to the output as it lands.
	place := func(w *window) func(engine.ExtentTiming) error {
		return func(t engine.ExtentTiming) error {
			landed.Add(t.Length)
			if !out.placed() {
				return nil
			}
			b, release, err := extentView(ctx, s.p, w.buf.ID, t.VolumeOffset-w.off, t.Length)
			if err != nil {
				return err
			}
			defer release()
			return out.writeAt(b, t.VolumeOffset-out.src.Offset, t.Verified)
		}
	}
	ordered := out.w != nil && !out.placed() // a stream: windows in order
	completed := make(chan *window, len(bufs))
	var queue []*window // windows in flight, in order
	free := slices.Clone(bufs)
	start := time.Now()
	next, end := off, off+n
	// due is when the next request may start under --rate.
	due := func() time.Time {
		return start.Add(time.Duration(float64(next-off) / float64(rate) * float64(time.Second)))
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	pace := time.NewTimer(time.Hour)
	pace.Stop()
	for next < end || len(queue) > 0 {
		for len(free) > 0 && next < end && (rate == 0 || !time.Now().Before(due())) {
			w := &window{off: next, n: min(win, end-next), buf: free[0]}
			free = free[1:]
			next += w.n
			queue = append(queue, w)
			opts := &engine.ReadOptions{Generation: vol.Generation, OnExtent: place(w)}
			wg.Go(func() {
				w.res, w.err = s.client.Read(ctx, vol.Name, []engine.Range{{Offset: w.off, Length: w.n}}, w.buf, opts)
				completed <- w
			})
		}
		var paced <-chan time.Time // a free buffer waits for its turn under --rate
		if len(free) > 0 && next < end {
			pace.Reset(time.Until(due()))
			paced = pace.C
		}
		var w *window
		select {
		case w = <-completed:
		case <-paced:
			continue
		case <-tick.C:
			bar.Progress(min(landed.Load(), n), n)
			if err := out.checkpoint(); err != nil {
				return err
			}
			continue
		}
		pace.Stop()
		if w.err != nil {
			return w.err
		}
		w.done = true
		res.Requests++
		res.Paths.add(w.res[0], s.path.FallbackReason)
		res.Bytes += w.res[0].Bytes
		res.LinearBytes += w.res[0].LinearBytes
		res.LinearFrags += w.res[0].LinearFrags
		res.Extents = append(res.Extents, extentInfos(w.res[0].Extents)...)
		if !ordered {
			// Bytes at their place or in memory only: a window's buffer
			// is free as soon as its read ends.
			queue = slices.DeleteFunc(queue, func(h *window) bool { return h == w })
			free = append(free, w.buf)
		}
		for ordered && len(queue) > 0 && queue[0].done {
			h := queue[0]
			queue = queue[1:]
			b, release, err := extentView(ctx, s.p, h.buf.ID, 0, h.n)
			if err != nil {
				return err
			}
			err = out.write(b, verifiedPrefix(h.off, h.res[0].Extents))
			release()
			if err != nil {
				return err
			}
			free = append(free, h.buf)
		}
		bar.Progress(min(landed.Load(), n), n)
	}
	return nil
}

// extentView returns the n bytes at off of buf readable by the CPU: the
// buffer itself when the provider maps it, else a copy read back into a
// pooled buffer, which release gives back.
func extentView(ctx context.Context, p memory.Provider, buf memory.BufferID, off, n int64) (b []byte, release func(), err error) {
	if m, ok := p.(memory.Mapper); ok {
		mem, err := m.Bytes(buf)
		if err != nil {
			return nil, nil, err
		}
		return mem[off : off+n], func() {}, nil
	}
	scratch := readBackPool.Get().(*[]byte)
	if int64(cap(*scratch)) < n {
		*scratch = make([]byte, n)
	}
	b = (*scratch)[:n]
	if err := p.ReadBack(ctx, buf, off, b); err != nil {
		readBackPool.Put(scratch)
		return nil, nil, err
	}
	return b, func() { readBackPool.Put(scratch) }, nil
}

// readBackPool holds the buffers extentView reads bytes back into.
var readBackPool = sync.Pool{New: func() any { return new([]byte) }}
