package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/cmd/internal/cli"
)

// upload runs `blockcat upload SERVER NAME FILE`: it stores FILE as volume
// NAME on a running blockd, over the authenticated control connection (the
// server's catalog is locked by the server, so this is how volumes are added
// while it serves).
func upload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("blockcat upload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.registerControl(fs)
	var extent cli.SizeFlag = catalog.DefaultExtentSize
	fs.Var(&extent, "extent-size", "extent size: a multiple of 4KiB up to 64MiB")
	replace := fs.Bool("replace", false, "replace a volume of that name (its generation goes up)")
	pos, err := cli.ParseServer(fs, args, 3, "SERVER NAME FILE [--extent-size SIZE] [--replace]")
	if err != nil {
		return cli.UsageErr(err)
	}
	if err := catalog.ValidName(pos[1]); err != nil {
		return cli.UsageErr(err)
	}
	f, err := os.Open(pos[2])
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := fileSize(f)
	if err != nil {
		return fmt.Errorf("size of %s: %w", pos[2], err)
	}
	if size == 0 {
		return errors.New("nothing to upload: " + pos[2] + " is empty")
	}
	ctx, cancel := c.context(ctx)
	defer cancel()
	s, err := c.dialControl(ctx, pos[0], stderr)
	if err != nil {
		return err
	}
	defer s.Close()
	bar := cli.NewBar(stderr, size, "upload "+pos[1])
	start := time.Now()
	st, err := s.Put(ctx, pos[1], size, int64(extent), &progressReader{r: f, bar: bar, total: size}, *replace)
	bar.Finish(err)
	if err != nil {
		return exists(ctx, s, pos[0], pos[1], err)
	}
	secs := time.Since(start).Seconds()
	fmt.Fprintf(stdout, "uploaded %s as %s on %s: %s in %.3fs (%s/s), generation %d\n", pos[2], st.Name, pos[0],
		cli.FormatBytes(float64(st.Size)), secs, cli.FormatBytes(float64(st.Size)/secs), st.Generation)
	return nil
}

// exists explains an upload the server refused because the volume exists:
// it says which generation is there and names --replace.
func exists(ctx context.Context, s *conn, server, name string, err error) error {
	var pe *blockproto.PutError
	var e *blockproto.Error
	if !(errors.As(err, &pe) && pe.Code == blockproto.CodeExists) && !(errors.As(err, &e) && e.Code == blockproto.CodeExists) {
		return err
	}
	what := ""
	if v, serr := s.Stat(ctx, name); serr == nil {
		what = fmt.Sprintf(" (%s, generation %d)", cli.FormatBytes(float64(v.Size)), v.Generation)
	}
	return fmt.Errorf("volume %q already exists on %s%s: pass --replace to replace it (its generation goes up), or upload under another NAME",
		name, server, what)
}

// progressReader reports bytes read to a progress bar.
type progressReader struct {
	r     io.Reader
	bar   *cli.Bar
	n     int64
	total int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	p.bar.Progress(p.n, p.total)
	return n, err
}
