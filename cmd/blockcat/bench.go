package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/bufpool"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// benchResult is what `blockcat bench --json` prints (docs/json.md).
type benchResult struct {
	Server          string     `json:"server"`
	Volume          string     `json:"volume"`
	Generation      uint64     `json:"generation"`
	Provider        string     `json:"provider"`
	Transport       string     `json:"transport"`
	FallbackReason  *string    `json:"fallback_reason"` // nil: no fallback
	ServerSend      string     `json:"server_transport"`
	DataConns       int        `json:"data_connections"`
	Depth           int        `json:"depth"`
	DurationSeconds float64    `json:"duration_seconds"` // asked for, per size
	Sizes           []benchRow `json:"sizes"`
}

// benchRow is one request size's figures.
type benchRow struct {
	Size           int64   `json:"size_bytes"`
	Requests       int     `json:"requests"`
	Bytes          int64   `json:"fetched_bytes"`
	Seconds        float64 `json:"seconds"`
	BytesPerSecond float64 `json:"bytes_per_second"`
	P50            float64 `json:"p50_seconds"`
	P99            float64 `json:"p99_seconds"`
	// Inline counts the reads whose bytes all came in their Extent on
	// the control connection, not on a data connection (docs/protocol.md
	// 5.12): small reads, and a session's only read of up to 64 KiB.
	Inline int `json:"inline_requests"`
}

// benchColumns lays out the text table; each size's line is printed as
// soon as that size is done.
const benchColumns = "%10s  %9s  %12s  %10s  %10s  %7s\n"

// bench runs `blockcat bench SERVER VOLUME`: random reads of each size for
// --duration, reporting throughput and latency percentiles.
func bench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("blockcat bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	sizes := fs.String("sizes", "4KiB,64KiB,1MiB,16MiB", "comma-separated `LIST` of request sizes")
	duration := fs.Duration("duration", 3*time.Second, "time spent on each size, such as 3s")
	depth := fs.Int("depth", 8, "requests in flight (as get's --depth)")
	cli.Alias(fs, "concurrency", "depth") // its earlier name, kept working
	fs.BoolVar(&c.verify, "verify", false, "require every extent's CRC-32C checked (by default where the path allows)")
	fs.BoolVar(&c.noVerify, "no-verify", false, noVerifyHelp)
	seed := fs.Uint64("seed", 1, "seed for the random offsets")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := cli.ParseServer(fs, args, 2, "SERVER VOLUME [--sizes LIST] [--duration D] [--depth N] [--json]")
	if err != nil {
		return cli.UsageErr(err)
	}
	reqSizes, err := parseSizes(*sizes)
	if err != nil {
		return cli.CmdUsageErr(fs, err)
	}
	if *depth < 1 || *duration <= 0 {
		return cli.CmdUsageErr(fs, errors.New("--depth and --duration must be positive"))
	}
	ctx, cancel := c.context(ctx)
	defer cancel()
	s, err := c.dial(ctx, pos[0], stderr)
	if err != nil {
		return err
	}
	defer s.Close()
	p := s.p
	vol, err := s.Stat(ctx, pos[1])
	if err != nil {
		return noVolume(ctx, s, pos[0], pos[1], err)
	}
	for _, size := range reqSizes {
		if size > int64(vol.Size) {
			return fmt.Errorf("request size %s is larger than volume %s (%s)", cli.FormatBytes(float64(size)), vol.Name,
				cli.FormatBytes(float64(vol.Size)))
		}
	}
	res := benchResult{Server: pos[0], Volume: vol.Name, Generation: vol.Generation, Provider: p.Name(),
		Transport: s.path.Transport.Name(), ServerSend: s.ServerTransport(), DataConns: int(c.dataConns), Depth: *depth,
		DurationSeconds: duration.Seconds(), Sizes: []benchRow{}}
	if r := s.path.FallbackReason; r != "" {
		res.FallbackReason = &r
	}
	if !*asJSON {
		fmt.Fprintf(stdout, "volume %s, %s, %d requests in flight, transport %s (server: %s)\n",
			vol.Name, cli.Plural(res.DataConns, "data connection"), *depth, res.Transport, res.ServerSend)
		if res.FallbackReason != nil {
			fmt.Fprintf(stdout, "fallback: %s\n", *res.FallbackReason)
		}
		fmt.Fprintf(stdout, benchColumns, "SIZE", "REQUESTS", "THROUGHPUT", "P50", "P99", "INLINE")
	}
	// Every size reads into the same depth buffers of the largest size,
	// allocated and prefaulted once.
	pool := bufpool.New(p)
	defer pool.Close()
	bufs, err := pool.Get(ctx, slices.Max(reqSizes), *depth)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(*seed, 0))
	for _, size := range reqSizes {
		r, err := benchSize(ctx, s, bufs, vol, size, *duration, rng)
		if err != nil {
			return err
		}
		res.Sizes = append(res.Sizes, r)
		if !*asJSON {
			fmt.Fprintf(stdout, benchColumns, cli.FormatBytes(float64(r.Size)), strconv.Itoa(r.Requests),
				cli.FormatBytes(r.BytesPerSecond)+"/s", fmtDur(r.P50), fmtDur(r.P99), fmt.Sprintf("%.0f%%", 100*float64(r.Inline)/float64(max(r.Requests, 1))))
		}
	}
	if *asJSON {
		return cli.WriteJSON(stdout, res)
	}
	return nil
}

// inline reports whether every extent of a read came in its Extent, on the
// control connection (ExtentTiming.DataConn -1): the read then ended on
// the session's control reader.
func inline(res engine.Result) bool {
	for _, e := range res.Extents {
		if e.DataConn != -1 {
			return false
		}
	}
	return len(res.Extents) > 0
}

// parseSizes parses --sizes, a comma-separated list of positive sizes.
func parseSizes(list string) ([]int64, error) {
	var sizes []int64
	for _, f := range strings.Split(list, ",") {
		n, err := cli.ParseSize(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("--sizes: bad size %q", f)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

// benchSize keeps a read of size bytes at a random offset of vol in
// flight into each of bufs (each at least size bytes) for d, each slot
// starting its next read as soon as its last one ended, and reports
// throughput and latency percentiles. As fio's event loop does, the next
// read is submitted from the last one's completion (Request.OnDone): on
// the session's control reader when the bytes came in the Extent, so a
// small read costs no hand-off between goroutines; otherwise this
// goroutine submits it, so that a data connection's goroutine, which
// ended the read, goes back to receiving. A read that fails is read again
// here, through the conn's client, which resumes a lost session (unless
// --no-resume); the time that took counts in the latency.
func benchSize(ctx context.Context, s *conn, bufs []memory.Buffer, vol blockproto.VolumeStat, size int64,
	d time.Duration, rng *rand.Rand) (benchRow, error) {
	row := benchRow{Size: size}
	slots := (int64(vol.Size) - size) / size
	type read struct {
		slot int
		off  int64
		at   time.Time
	}
	var (
		mu    sync.Mutex // guards rng, lat, row.Bytes and left
		lat   []time.Duration
		left  = len(bufs)           // slots still reading
		all   = make(chan struct{}) // closed when left is 0
		start = time.Now()
		stop  = start.Add(d)
		// A slot has one read at a time, so neither channel fills.
		failed = make(chan read, len(bufs))
		next   = make(chan int, len(bufs)) // slots for this goroutine to submit
	)
	// landed counts a read and reports whether its slot reads again.
	landed := func(rd read, res engine.Result) bool {
		mu.Lock()
		defer mu.Unlock()
		lat = append(lat, time.Since(rd.at))
		row.Bytes += res.Bytes
		if inline(res) {
			row.Inline++
		}
		if time.Now().Before(stop) {
			return true
		}
		if left--; left == 0 {
			close(all)
		}
		return false
	}
	var submit func(sess *engine.Session, slot int)
	submit = func(sess *engine.Session, slot int) {
		mu.Lock()
		rd := read{slot: slot, off: rng.Int64N(slots+1) * size}
		mu.Unlock()
		rd.at = time.Now()
		sess.Submit(ctx, []engine.Request{{Volume: vol.Name, Offset: rd.off, Length: size, Dst: bufs[slot],
			Generation: vol.Generation, OnDone: func(h *engine.Handle) {
				res := h.Result()
				switch {
				case res.Err != nil:
					failed <- rd
				case !landed(rd, res):
				case inline(res):
					submit(sess, slot)
				default:
					next <- slot
				}
			}}})
	}
	sess, err := s.client.Session(ctx)
	if err != nil {
		return row, err
	}
	for slot := range bufs {
		submit(sess, slot)
	}
	for done := false; !done; {
		select {
		case <-all:
			done = true
		case slot := <-next:
			submit(sess, slot)
		case rd := <-failed:
			rs, err := s.client.Read(ctx, vol.Name, []engine.Range{{Offset: rd.off, Length: size}}, bufs[rd.slot],
				&engine.ReadOptions{Generation: vol.Generation})
			if err == nil {
				sess, err = s.client.Session(ctx)
			}
			if err != nil {
				// The reads still open end with ctx's cancellation
				// (the caller's) or the lost session's error.
				return row, err
			}
			if landed(rd, rs[0]) {
				submit(sess, rd.slot)
			}
		}
	}
	row.Seconds = time.Since(start).Seconds()
	row.Requests = len(lat)
	row.BytesPerSecond = float64(row.Bytes) / row.Seconds
	slices.Sort(lat)
	row.P50 = lat[len(lat)*50/100].Seconds()
	row.P99 = lat[min(len(lat)-1, len(lat)*99/100)].Seconds()
	return row, nil
}

func fmtDur(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Microsecond).String()
}
