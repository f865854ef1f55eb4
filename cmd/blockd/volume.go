package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/cmd/internal/cli"
)

// volume runs `blockd volume SUBCOMMAND`: it hands the arguments to the
// subcommand.
func volume(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return cli.UsageErr(&cli.FlagError{Cmd: "blockd volume", Err: errors.New("volume: want create, import, list, inspect or rm")})
	}
	var cmd func(context.Context, *volumeFlags, []string, io.Writer, io.Writer) error
	switch args[0] {
	case "create":
		cmd = volumeCreate
	case "import":
		cmd = volumeImport
	case "list":
		cmd = volumeList
	case "inspect":
		cmd = volumeInspect
	case "rm":
		cmd = volumeRemove
	case "help", "-h", "-help", "--help":
		return program().WriteGroupHelp(stdout, group("volume"))
	default:
		return cli.UsageErr(fmt.Errorf("volume: unknown command %q: want create, import, list, inspect or rm", args[0]))
	}
	fs := newVolumeFlags(args[0], stderr)
	err := cmd(ctx, fs, args[1:], stdout, stderr) // parses --data
	return explainCatalog(fs.dataDir, err)
}

// volumeFlags is the flag set of one `blockd volume` subcommand, with the
// --data flag they all take.
type volumeFlags struct {
	*flag.FlagSet
	dataDir string
}

func newVolumeFlags(sub string, stderr io.Writer) *volumeFlags {
	f := &volumeFlags{FlagSet: flag.NewFlagSet("blockd volume "+sub, flag.ContinueOnError)}
	f.SetOutput(stderr)
	cli.DataDirFlag(f.FlagSet, &f.dataDir, "data directory")
	return f
}

// parse parses the subcommand's arguments; want positional arguments are
// required, named by usage.
func (f *volumeFlags) parse(args []string, want int, usage string) ([]string, error) {
	pos, err := cli.Parse(f.FlagSet, args, want, usage)
	return pos, cli.UsageErr(err)
}

// open opens the catalog in --data.
func (f *volumeFlags) open(readOnly bool) (*catalog.Store, error) {
	if f.dataDir == "" {
		return nil, cli.UsageErr(cli.ErrNoDataDir)
	}
	return catalog.OpenStore(f.dataDir, &catalog.Options{ReadOnly: readOnly})
}

// crcBlockFlag adds --crc-block to fs and returns the catalog option it
// asks for.
func crcBlockFlag(fs *volumeFlags) func() catalog.OpOption {
	var bs cli.SizeFlag
	fs.Var(&bs, "crc-block", "size of the blocks the stored block CRCs cover: a power of two from 4KiB to 64KiB dividing the extent size; smaller blocks make small random reads cheaper to check (default: 4KiB for volumes up to 1GiB, doubling with the size up to 64KiB from 16GiB)")
	return func() catalog.OpOption { return catalog.WithBlockSize(int64(bs)) }
}

// volumeCreate runs `blockd volume create NAME --size SIZE`.
func volumeCreate(ctx context.Context, fs *volumeFlags, args []string, stdout, stderr io.Writer) error {
	var size cli.SizeFlag
	var extent cli.SizeFlag = catalog.DefaultExtentSize
	fs.Var(&size, "size", "volume size, e.g. 256MiB (required)")
	fs.Var(&extent, "extent-size", "extent size: a multiple of 4KiB up to 64MiB")
	fill := fs.String("fill", "zero", "contents: zero or random")
	crcBlock := crcBlockFlag(fs)
	pos, err := fs.parse(args, 1, "NAME --size SIZE [--fill zero|random] [--extent-size SIZE] [--crc-block SIZE] --data DIR")
	if err != nil {
		return err
	}
	f, err := catalog.ParseFill(*fill)
	if err != nil {
		return cli.UsageErr(err)
	}
	if size <= 0 {
		return cli.UsageErr(errors.New("--size is required"))
	}
	s, err := fs.open(false)
	if err != nil {
		return err
	}
	defer s.Close()
	bar := cli.NewBar(stderr, int64(size), "create "+pos[0])
	v, err := s.Create(ctx, pos[0], int64(size), int64(extent), f, catalog.WithProgress(bar.Progress), crcBlock())
	bar.Finish(err)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "created %s: %s in %d extents of %s\n", v.Name, cli.FormatBytes(float64(v.Size)), v.Extents(), cli.FormatBytes(float64(v.ExtentSize)))
	return nil
}

// volumeImport runs `blockd volume import NAME SRC`.
func volumeImport(ctx context.Context, fs *volumeFlags, args []string, stdout, stderr io.Writer) error {
	var extent cli.SizeFlag = catalog.DefaultExtentSize
	fs.Var(&extent, "extent-size", "extent size: a multiple of 4KiB up to 64MiB")
	link := fs.Bool("link", false, "serve SRC in place instead of copying it (use for block devices)")
	crcBlock := crcBlockFlag(fs)
	pos, err := fs.parse(args, 2, "NAME SRC [--link] [--extent-size SIZE] [--crc-block SIZE] --data DIR\n\nSRC is a file (copied into DIR/volumes) or, with --link, a file or block\ndevice served in place.")
	if err != nil {
		return err
	}
	s, err := fs.open(false)
	if err != nil {
		return err
	}
	defer s.Close()
	bar := cli.NewBar(stderr, -1, "import "+pos[0])
	v, err := s.Import(ctx, pos[0], pos[1], int64(extent), *link, catalog.WithProgress(bar.Progress), crcBlock())
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
}

// volumeList runs `blockd volume list`.
func volumeList(_ context.Context, fs *volumeFlags, args []string, stdout, _ io.Writer) error {
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := fs.parse(args, 0, "[--json] --data DIR"); err != nil {
		return err
	}
	s, err := fs.open(true)
	if err != nil {
		return err
	}
	defer s.Close()
	vols, err := s.Catalog().List()
	if err != nil {
		return err
	}
	if *asJSON {
		out := volumeListJSON{DataDir: fs.dataDir, Volumes: make([]volumeJSON, len(vols))}
		for i, v := range vols {
			out.Volumes[i] = toJSON(v)
		}
		return cli.WriteJSON(stdout, out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSIZE\tEXTENT\tEXTENTS\tGEN\tBACKING")
	for _, v := range vols {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", v.Name, cli.FormatBytes(float64(v.Size)),
			cli.FormatBytes(float64(v.ExtentSize)), v.Extents(), v.Generation, v.Backing)
	}
	return tw.Flush()
}

// volumeInspect runs `blockd volume inspect NAME`; with --verify it
// re-reads every extent and fails if one does not match its checksum.
func volumeInspect(ctx context.Context, fs *volumeFlags, args []string, stdout, stderr io.Writer) error {
	asJSON := fs.Bool("json", false, "print JSON")
	verify := fs.Bool("verify", false, "re-read every extent and check its CRC-32C")
	pos, err := fs.parse(args, 1, "NAME [--verify] [--json] --data DIR")
	if err != nil {
		return err
	}
	s, err := fs.open(true)
	if err != nil {
		return err
	}
	defer s.Close()
	v, err := s.Catalog().Get(pos[0])
	if err != nil {
		return err
	}
	out := inspectJSON{DataDir: fs.dataDir, Volume: volumeDetail{volumeJSON: toJSON(v), CRCs: []string{}}}
	for _, c := range v.CRCs {
		out.Volume.CRCs = append(out.Volume.CRCs, fmt.Sprintf("%08x", c))
	}
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
		err = cli.WriteJSON(stdout, out)
	} else {
		printVolume(stdout, out)
	}
	if err == nil && len(out.BadExtents) > 0 {
		err = fmt.Errorf("volume %s: %d extents fail their checksum", v.Name, len(out.BadExtents))
	}
	return err
}

// volumeRemove runs `blockd volume rm NAME`.
func volumeRemove(ctx context.Context, fs *volumeFlags, args []string, stdout, _ io.Writer) error {
	pos, err := fs.parse(args, 1, "NAME --data DIR")
	if err != nil {
		return err
	}
	s, err := fs.open(false)
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

// volumeListJSON is what `blockd volume list --json` prints (docs/json.md).
type volumeListJSON struct {
	DataDir string       `json:"data_dir"`
	Volumes []volumeJSON `json:"volumes"`
}

// inspectJSON is what `blockd volume inspect --json` prints: Verified
// says whether --verify re-read every extent, and BadExtents, nil without
// --verify, lists those that failed their CRC-32C.
type inspectJSON struct {
	DataDir    string       `json:"data_dir"`
	Volume     volumeDetail `json:"volume"`
	Verified   bool         `json:"verified"`
	BadExtents []int        `json:"bad_extents"`
}

// volumeJSON is a volume as `blockd volume list|inspect --json` print it.
type volumeJSON struct {
	Name            string    `json:"name"`
	SizeBytes       int64     `json:"size_bytes"`
	ExtentSizeBytes int64     `json:"extent_size_bytes"`
	Extents         int       `json:"extents"`
	Generation      uint64    `json:"generation"`
	Backing         string    `json:"backing"`
	Owned           bool      `json:"owned"`
	Created         time.Time `json:"created"`
}

// volumeDetail is a volume with its extents' CRC-32C, 8 hex digits each.
type volumeDetail struct {
	volumeJSON
	CRCs []string `json:"crc32c"`
}

func toJSON(v *catalog.Volume) volumeJSON {
	return volumeJSON{Name: v.Name, SizeBytes: v.Size, ExtentSizeBytes: v.ExtentSize, Extents: v.Extents(),
		Generation: v.Generation, Backing: v.Backing, Owned: v.Owned, Created: v.Created}
}

func printVolume(w io.Writer, out inspectJSON) {
	v := out.Volume
	fmt.Fprintf(w, "name:        %s\nsize:        %d (%s)\nextent size: %s\nextents:     %d\ngeneration:  %d\nbacking:     %s (owned: %v)\ncreated:     %s\n",
		v.Name, v.SizeBytes, cli.FormatBytes(float64(v.SizeBytes)), cli.FormatBytes(float64(v.ExtentSizeBytes)), v.Extents,
		v.Generation, v.Backing, v.Owned, v.Created.Format(time.RFC3339))
	if out.Verified {
		if len(out.BadExtents) == 0 {
			fmt.Fprintf(w, "verify:      all %d extents match their crc32c\n", v.Extents)
		} else {
			fmt.Fprintf(w, "verify:      BAD extents %v\n", out.BadExtents)
		}
	}
}

func keygen(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("blockd keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "key `FILE` to create, mode 0600 (required)")
	if _, err := cli.Parse(fs, args, 0, "-o FILE\n\n"+
		"Writes a new random pre-shared key to FILE, mode 0600; it never overwrites a\n"+
		"file. blockd serve and its clients need the same key (--key-file or $"+cli.KeyEnv+")."); err != nil {
		return cli.UsageErr(err)
	}
	if *out == "" {
		return cli.UsageErr(errors.New("-o FILE is required"))
	}
	return cli.WriteKeyFile(*out)
}
