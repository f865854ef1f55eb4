package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/cmd/internal/cli"
)

func volume(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return cli.UsageErr(errors.New("volume: want create, import, list, inspect or rm"))
	}
	fs := flag.NewFlagSet("blockd volume "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", "", "data directory (required)")
	var open = func(readOnly bool) (*catalog.Store, error) {
		if *dataDir == "" {
			return nil, cli.UsageErr(errors.New("--data is required"))
		}
		return catalog.OpenStore(*dataDir, &catalog.Options{ReadOnly: readOnly})
	}
	switch args[0] {
	case "create":
		var size cli.SizeFlag
		var extent cli.SizeFlag = catalog.DefaultExtentSize
		fs.Var(&size, "size", "volume size, e.g. 256MiB (required)")
		fs.Var(&extent, "extent-size", "extent size: a multiple of 4KiB up to 64MiB")
		fill := fs.String("fill", "zero", "contents: zero or random")
		pos, err := cli.Parse(fs, args[1:], 1, "NAME --size SIZE [--fill zero|random] --data DIR")
		if err != nil {
			return cli.UsageErr(err)
		}
		f, err := catalog.ParseFill(*fill)
		if err != nil {
			return cli.UsageErr(err)
		}
		if size <= 0 {
			return cli.UsageErr(errors.New("--size is required"))
		}
		s, err := open(false)
		if err != nil {
			return err
		}
		defer s.Close()
		bar := cli.NewBar(stderr, int64(size), "create "+pos[0])
		v, err := s.Create(ctx, pos[0], int64(size), int64(extent), f, catalog.WithProgress(bar.Progress))
		bar.Finish(err)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "created %s: %s in %d extents of %s\n", v.Name, cli.FormatBytes(float64(v.Size)), v.Extents(), cli.FormatBytes(float64(v.ExtentSize)))
		return nil
	case "import":
		var extent cli.SizeFlag = catalog.DefaultExtentSize
		fs.Var(&extent, "extent-size", "extent size: a multiple of 4KiB up to 64MiB")
		link := fs.Bool("link", false, "serve SRC in place instead of copying it (use for block devices)")
		pos, err := cli.Parse(fs, args[1:], 2, "NAME SRC [--link] --data DIR")
		if err != nil {
			return cli.UsageErr(err)
		}
		s, err := open(false)
		if err != nil {
			return err
		}
		defer s.Close()
		bar := cli.NewBar(stderr, -1, "import "+pos[0])
		v, err := s.Import(ctx, pos[0], pos[1], int64(extent), *link, catalog.WithProgress(bar.Progress))
		bar.Finish(err)
		if err != nil {
			return err
		}
		how := "copied"
		if *link {
			how = "linked"
		}
		fmt.Fprintf(stdout, "imported %s (%s from %s): %s in %d extents\n", v.Name, how, pos[1], cli.FormatBytes(float64(v.Size)), v.Extents())
		return nil
	case "list":
		asJSON := fs.Bool("json", false, "print JSON")
		if _, err := cli.Parse(fs, args[1:], 0, "--data DIR"); err != nil {
			return cli.UsageErr(err)
		}
		s, err := open(true)
		if err != nil {
			return err
		}
		defer s.Close()
		vols, err := s.Catalog().List()
		if err != nil {
			return err
		}
		if *asJSON {
			out := make([]volumeJSON, len(vols))
			for i, v := range vols {
				out[i] = toJSON(v, false)
			}
			return writeJSON(stdout, out)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSIZE\tEXTENT\tEXTENTS\tGEN\tBACKING")
		for _, v := range vols {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", v.Name, cli.FormatBytes(float64(v.Size)),
				cli.FormatBytes(float64(v.ExtentSize)), v.Extents(), v.Generation, v.Backing)
		}
		return tw.Flush()
	case "inspect":
		asJSON := fs.Bool("json", false, "print JSON")
		verify := fs.Bool("verify", false, "re-read every extent and check its CRC-32C")
		pos, err := cli.Parse(fs, args[1:], 1, "NAME [--verify] --data DIR")
		if err != nil {
			return cli.UsageErr(err)
		}
		s, err := open(true)
		if err != nil {
			return err
		}
		defer s.Close()
		v, err := s.Catalog().Get(pos[0])
		if err != nil {
			return err
		}
		out := toJSON(v, true)
		if *verify {
			bar := cli.NewBar(stderr, v.Size, "verify "+v.Name)
			bad, err := s.Verify(ctx, v.Name, catalog.WithProgress(bar.Progress))
			bar.Finish(err)
			if err != nil {
				return err
			}
			out.Verified = true
			out.BadExtents = append([]int{}, bad...)
		}
		if *asJSON {
			if err := writeJSON(stdout, out); err != nil {
				return err
			}
		} else {
			printVolume(stdout, out)
		}
		if len(out.BadExtents) > 0 {
			return fmt.Errorf("volume %s: %d extents fail their checksum", v.Name, len(out.BadExtents))
		}
		return nil
	case "rm":
		pos, err := cli.Parse(fs, args[1:], 1, "NAME --data DIR")
		if err != nil {
			return cli.UsageErr(err)
		}
		s, err := open(false)
		if err != nil {
			return err
		}
		defer s.Close()
		if err := s.Remove(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %s\n", pos[0])
		return nil
	}
	return cli.UsageErr(fmt.Errorf("volume: unknown command %q: want create, import, list, inspect or rm", args[0]))
}

type volumeJSON struct {
	Name       string    `json:"name"`
	Size       int64     `json:"size"`
	ExtentSize int64     `json:"extent_size"`
	Extents    int       `json:"extents"`
	Generation uint64    `json:"generation"`
	Backing    string    `json:"backing"`
	Owned      bool      `json:"owned"`
	Created    time.Time `json:"created"`
	CRCs       []string  `json:"crc32c,omitempty"`
	Verified   bool      `json:"verified,omitempty"`
	BadExtents []int     `json:"bad_extents,omitempty"`
}

func toJSON(v *catalog.Volume, crcs bool) volumeJSON {
	j := volumeJSON{Name: v.Name, Size: v.Size, ExtentSize: v.ExtentSize, Extents: v.Extents(),
		Generation: v.Generation, Backing: v.Backing, Owned: v.Owned, Created: v.Created}
	if crcs {
		for _, c := range v.CRCs {
			j.CRCs = append(j.CRCs, fmt.Sprintf("%08x", c))
		}
	}
	return j
}

func printVolume(w io.Writer, v volumeJSON) {
	fmt.Fprintf(w, "name:        %s\nsize:        %d (%s)\nextent size: %s\nextents:     %d\ngeneration:  %d\nbacking:     %s (owned: %v)\ncreated:     %s\n",
		v.Name, v.Size, cli.FormatBytes(float64(v.Size)), cli.FormatBytes(float64(v.ExtentSize)), v.Extents,
		v.Generation, v.Backing, v.Owned, v.Created.Format(time.RFC3339))
	if v.Verified {
		if len(v.BadExtents) == 0 {
			fmt.Fprintf(w, "verify:      all %d extents match their crc32c\n", v.Extents)
		} else {
			fmt.Fprintf(w, "verify:      BAD extents %v\n", v.BadExtents)
		}
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func keygen(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("blockd keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "key file to create, mode 0600 (required)")
	if _, err := cli.Parse(fs, args, 0, "-o FILE"); err != nil {
		return cli.UsageErr(err)
	}
	if *out == "" {
		return cli.UsageErr(errors.New("-o FILE is required"))
	}
	return cli.WriteKeyFile(*out)
}
