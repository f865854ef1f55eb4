package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// getResult is what `blockcat get --json` prints.
type getResult struct {
	Server         string                `json:"server"`
	Volume         string                `json:"volume"`
	Offset         int64                 `json:"offset"`
	Bytes          int64                 `json:"bytes"`
	Seconds        float64               `json:"seconds"`
	SetupSeconds   float64               `json:"setup_seconds"`
	BytesPerSecond float64               `json:"bytes_per_second"`
	Provider       string                `json:"provider"`
	Transport      string                `json:"transport"`
	FallbackReason string                `json:"fallback_reason,omitempty"`
	ServerSend     string                `json:"server_transport"`
	DataConns      int                   `json:"data_conns"`
	Verified       bool                  `json:"verified"`
	Output         string                `json:"output,omitempty"`
	Requests       int                   `json:"requests"`
	Extents        []engine.ExtentTiming `json:"extents"`
}

// getFlags are the flags of `blockcat get` for a volume of one server.
type getFlags struct {
	common
	server, volume string
	offset, length cli.SizeFlag
	window         cli.SizeFlag
	depth          int
	out            string
	asJSON         bool
}

// parseGetFlags parses and checks the arguments of `blockcat get SERVER
// VOLUME`.
func parseGetFlags(args []string, stderr io.Writer) (*getFlags, error) {
	f := &getFlags{window: 64 << 20}
	fs := flag.NewFlagSet("blockcat get", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f.register(fs)
	fs.Var(&f.offset, "offset", "first byte to fetch")
	fs.Var(&f.length, "length", "bytes to fetch (default: to the end of the volume)")
	fs.Var(&f.window, "window", "bytes per request; up to --depth requests are in flight")
	fs.IntVar(&f.depth, "depth", 4, "requests in flight")
	fs.StringVar(&f.out, "o", "", "write the bytes to FILE, or - for stdout (default: keep in memory only)")
	fs.BoolVar(&f.verify, "verify", false, "check every extent's CRC-32C after it lands")
	fs.BoolVar(&f.asJSON, "json", false, "print the result as JSON")
	pos, err := cli.Parse(fs, args, 2, "SERVER VOLUME [--offset N] [--length N] [-o FILE|-] [--verify] [--json]")
	if err != nil {
		return nil, cli.UsageErr(err)
	}
	if f.window <= 0 || f.depth < 1 {
		return nil, cli.UsageErr(errors.New("--window and --depth must be positive"))
	}
	f.server, f.volume = pos[0], pos[1]
	return f, nil
}

// get runs `blockcat get SERVER VOLUME`: it fetches the range into the
// provider's memory, keeping --depth requests in flight, and writes it to
// -o.
func get(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseGetFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := f.context(ctx)
	defer cancel()
	setup := time.Now()
	s, err := f.dial(ctx, f.server, stderr)
	if err != nil {
		return err
	}
	defer s.Close()
	vol, err := s.Stat(ctx, f.volume)
	if err != nil {
		return err
	}
	n, err := volumeRange(vol.Name, int64(vol.Size), int64(f.offset), int64(f.length))
	if err != nil {
		return err
	}
	w, finish, err := openOutput(f.out, stdout)
	if err != nil {
		return err
	}
	defer finish()
	bufs, err := allocWindows(ctx, s.p, n, int64(f.window), f.depth)
	if err != nil {
		return err
	}
	res := getResult{Server: f.server, Volume: vol.Name, Offset: int64(f.offset), DataConns: f.dataConns, Provider: s.p.Name(),
		Verified: f.verify, Output: f.out, SetupSeconds: time.Since(setup).Seconds()}
	bar := newBar(stderr, n, "get "+vol.Name, f.asJSON)
	start := time.Now()
	err = fetch(ctx, s, vol.Name, int64(f.offset), n, bufs, s.p, w, bar, &res)
	bar.Finish(err)
	if err != nil {
		return err
	}
	res.Seconds = time.Since(start).Seconds()
	res.BytesPerSecond = float64(res.Bytes) / res.Seconds
	if err := finish(); err != nil {
		return err
	}
	if f.asJSON {
		return cli.WriteJSON(stdout, res)
	}
	// The summary goes to stderr when the payload goes to stdout.
	if w == stdout {
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

// allocWindows allocates the window buffers of a fetch of n bytes: up to
// depth buffers of window bytes (less if n is smaller).
func allocWindows(ctx context.Context, p memory.Provider, n, window int64, depth int) ([]memory.Buffer, error) {
	win := min(window, n)
	bufs := make([]memory.Buffer, min(int64(depth), (n+win-1)/win))
	for i := range bufs {
		var err error
		if bufs[i], err = p.Alloc(ctx, win, false); err != nil {
			return nil, err
		}
	}
	return bufs, nil
}

// printText prints the summary line.
func (res *getResult) printText(w io.Writer) {
	msg := fmt.Sprintf("fetched %s of %s into %s memory in %.3fs: %s/s over %s (%d data connections, server sent with %s)",
		cli.FormatBytes(float64(res.Bytes)), res.Volume, res.Provider, res.Seconds, cli.FormatBytes(res.BytesPerSecond),
		res.Transport, res.DataConns, res.ServerSend)
	if res.FallbackReason != "" {
		msg += ", fallback: " + res.FallbackReason
	}
	if res.Verified {
		msg += fmt.Sprintf(", %d extents verified (crc32c)", len(res.Extents))
	}
	fmt.Fprintln(w, msg)
}

// fetch reads [off, off+n) of volume through the window buffers, keeping
// every buffer busy, and writes the bytes to w (if set) in order.
func fetch(ctx context.Context, s *conn, volume string, off, n int64, bufs []memory.Buffer,
	p memory.Provider, w io.Writer, bar *cli.Bar, res *getResult) error {
	win := bufs[0].Size
	type inflight struct {
		h   *engine.Handle
		buf memory.Buffer
	}
	var queue []inflight
	next, done := off, int64(0)
	submit := func(buf memory.Buffer) {
		k := min(win, off+n-next)
		h := s.Submit(ctx, []engine.Request{{Volume: volume, Offset: next, Length: k, Dst: buf}})[0]
		queue = append(queue, inflight{h, buf})
		next += k
	}
	for _, b := range bufs {
		if next < off+n {
			submit(b)
		}
	}
	var host []byte
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for len(queue) > 0 {
		head := queue[0]
		select {
		case <-head.h.Done():
		case <-tick.C:
			var moving int64
			for _, q := range queue {
				moving += q.h.Progress()
			}
			bar.Progress(done+moving, n)
			continue
		}
		queue = queue[1:]
		r := head.h.Result()
		res.Requests++
		res.Transport, res.FallbackReason, res.ServerSend = r.Transport, r.FallbackReason, r.ServerSend
		if r.Err != nil {
			return r.Err
		}
		res.Extents = append(res.Extents, r.Extents...)
		if w != nil {
			b, err := hostView(ctx, p, head.buf.ID, r.Length, &host)
			if err != nil {
				return err
			}
			if _, err := w.Write(b); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
		}
		done += r.Bytes
		res.Bytes = done
		bar.Progress(done, n)
		if next < off+n {
			submit(head.buf)
		}
	}
	return nil
}

// openOutput opens -o: nothing for "", stdout for "-", else a new file.
// finish syncs a regular file and closes it; it may be called more than
// once, and only its first call does anything.
func openOutput(path string, stdout io.Writer) (w io.Writer, finish func() error, err error) {
	switch path {
	case "":
		return nil, func() error { return nil }, nil
	case "-":
		return stdout, func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, err
	}
	var once sync.Once
	var ferr error
	return f, func() error {
		once.Do(func() {
			// Only a regular file can be synced (the output may be a FIFO).
			if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
				ferr = f.Sync()
			}
			ferr = errors.Join(ferr, f.Close())
		})
		return ferr
	}, nil
}

// hostView returns n bytes of buf readable by the CPU: the buffer itself
// when the provider maps it, else a copy read back into *scratch.
func hostView(ctx context.Context, p memory.Provider, buf memory.BufferID, n int64, scratch *[]byte) ([]byte, error) {
	if m, ok := p.(memory.Mapper); ok {
		b, err := m.Bytes(buf)
		if err != nil {
			return nil, err
		}
		return b[:n], nil
	}
	if int64(len(*scratch)) < n {
		*scratch = make([]byte, n)
	}
	b := (*scratch)[:n]
	return b, p.ReadBack(ctx, buf, 0, b)
}
