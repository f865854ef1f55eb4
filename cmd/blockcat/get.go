package main

import (
	"context"
	"encoding/json"
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

func get(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("blockcat get", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	var offset, length cli.SizeFlag
	var window cli.SizeFlag = 64 << 20
	fs.Var(&offset, "offset", "first byte to fetch")
	fs.Var(&length, "length", "bytes to fetch (default: to the end of the volume)")
	fs.Var(&window, "window", "bytes per request; up to --depth requests are in flight")
	depth := fs.Int("depth", 4, "requests in flight")
	out := fs.String("o", "", "write the bytes to FILE, or - for stdout (default: keep in memory only)")
	fs.BoolVar(&c.verify, "verify", false, "check every extent's CRC-32C after it lands")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, err := cli.Parse(fs, args, 2, "SERVER VOLUME [--offset N] [--length N] [-o FILE|-] [--verify] [--json]")
	if err != nil {
		return cli.UsageErr(err)
	}
	if window <= 0 || *depth < 1 {
		return cli.UsageErr(errors.New("--window and --depth must be positive"))
	}
	ctx, cancel := c.context(ctx)
	defer cancel()
	setup := time.Now()
	s, err := c.dial(ctx, pos[0], stderr)
	if err != nil {
		return err
	}
	defer s.Close()
	p := s.p
	vol, err := s.Stat(ctx, pos[1])
	if err != nil {
		return err
	}
	size := int64(vol.Size)
	if int64(offset) > size {
		return fmt.Errorf("offset %d is past the end of %s (%d bytes)", offset, vol.Name, size)
	}
	n := int64(length)
	if n == 0 {
		n = size - int64(offset)
	}
	if n == 0 {
		return fmt.Errorf("nothing to fetch: %s is empty past offset %d", vol.Name, offset)
	}

	w, finish, err := openOutput(*out, stdout)
	if err != nil {
		return err
	}
	defer finish()

	win := min(int64(window), n)
	bufs := make([]memory.Buffer, min(int64(*depth), (n+win-1)/win))
	for i := range bufs {
		if bufs[i], err = p.Alloc(ctx, win, false); err != nil {
			return err
		}
	}
	res := getResult{Server: pos[0], Volume: vol.Name, Offset: int64(offset), DataConns: c.dataConns, Provider: p.Name(),
		Verified: c.verify, Output: *out, SetupSeconds: time.Since(setup).Seconds()}

	bar := cli.NewBar(stderr, n, "get "+vol.Name)
	if *asJSON {
		bar = cli.NewBar(io.Discard, n, "")
	}
	start := time.Now()
	err = fetch(ctx, s, vol.Name, int64(offset), n, bufs, p, w, bar, &res)
	bar.Finish(err)
	if err != nil {
		return err
	}
	res.Seconds = time.Since(start).Seconds()
	res.BytesPerSecond = float64(res.Bytes) / res.Seconds
	if err := finish(); err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, res)
	}
	msg := fmt.Sprintf("fetched %s of %s into %s memory in %.3fs: %s/s over %s (%d data connections, server sent with %s)",
		cli.FormatBytes(float64(res.Bytes)), res.Volume, res.Provider, res.Seconds, cli.FormatBytes(res.BytesPerSecond),
		res.Transport, res.DataConns, res.ServerSend)
	if res.FallbackReason != "" {
		msg += ", fallback: " + res.FallbackReason
	}
	if res.Verified {
		msg += fmt.Sprintf(", %d extents verified (crc32c)", len(res.Extents))
	}
	// The summary goes to stderr when the payload goes to stdout.
	sum := stdout
	if w == stdout {
		sum = stderr
	}
	fmt.Fprintln(sum, msg)
	return nil
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

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
