package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/cmd/internal/cli"
)

// catalogCmd runs `blockd catalog SUBCOMMAND`.
func catalogCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return cli.UsageErr(&cli.FlagError{Cmd: "blockd catalog", Err: errors.New("catalog: want check, recover, migrate or backup")})
	}
	var cmd func(context.Context, *catalogFlags, []string, io.Writer, io.Writer) error
	var synopsis, about string
	switch args[0] {
	case "check":
		cmd, synopsis = catalogCheck, "[--verify] --data DIR"
		about = `Checks the catalog (every page, every record) and every volume's backing
file: there, a regular file or block device, of the volume's size. --verify
also re-reads every volume against its extent CRCs. Opens the catalog
read-only. Exits 0 if healthy, 1 with a report of each problem.`
	case "recover":
		cmd, synopsis = catalogRecover, "[--extent-size SIZE] [--force] --data DIR"
		about = `Rebuilds a damaged or lost catalog.db from the files in DIR/volumes: every
NAME.vol becomes an owned volume NAME with a new generation, its extent CRCs
computed from the file as it is now. The old catalog.db is moved to
catalog.db.damaged-TIME, never deleted. Linked volumes (backing outside
volumes/) cannot be found this way: re-import them with
'blockd volume import --link'. blockd must not be running on DIR.`
	case "migrate":
		cmd, synopsis = catalogMigrate, "--data DIR"
		about = `Adds block CRCs to volumes written by a blockd that stored only extent CRCs,
so that reads of part of an extent read and check only the blocks at its
edges instead of the whole extent. Each such volume is read once and checked
against its extent CRCs first; one that no longer matches them is reported
and left as it is. blockd must not be running on DIR.`
	case "backup":
		cmd, synopsis = catalogBackup, "FILE --data DIR"
		about = `Writes a consistent copy of DIR/catalog.db to FILE, a new file (mode 0600),
fsynced and checked. It needs the catalog's lock, which a running blockd
serve holds: stop blockd first. To restore, stop blockd and copy FILE to
DIR/catalog.db.`
	case "help", "-h", "-help", "--help":
		return program().WriteGroupHelp(stdout, group("catalog"))
	default:
		return cli.UsageErr(fmt.Errorf("catalog: unknown command %q: want check, recover, migrate or backup", args[0]))
	}
	fs := newCatalogFlags(args[0], synopsis, about, stderr)
	return cmd(ctx, fs, args[1:], stdout, stderr)
}

// catalogFlags is the flag set of one `blockd catalog` subcommand, with the
// --data flag they all take.
type catalogFlags struct {
	*flag.FlagSet
	dataDir string
	usage   string // synopsis and about, for cli.Parse
}

func newCatalogFlags(sub, synopsis, about string, stderr io.Writer) *catalogFlags {
	f := &catalogFlags{FlagSet: flag.NewFlagSet("blockd catalog "+sub, flag.ContinueOnError), usage: synopsis + "\n\n" + about}
	f.SetOutput(stderr)
	cli.DataDirFlag(f.FlagSet, &f.dataDir, "data directory holding catalog.db and volumes/")
	return f
}

// parse parses the subcommand's arguments; want positional arguments are
// required. --data is required too.
func (f *catalogFlags) parse(args []string, want int) ([]string, error) {
	pos, err := cli.Parse(f.FlagSet, args, want, f.usage)
	if err != nil {
		return nil, cli.UsageErr(err)
	}
	if f.dataDir == "" {
		return nil, cli.UsageErr(cli.ErrNoDataDir)
	}
	return pos, nil
}

// catalogCheck runs `blockd catalog check`.
func catalogCheck(ctx context.Context, fs *catalogFlags, args []string, stdout, stderr io.Writer) error {
	verify := fs.Bool("verify", false, "re-read every volume and check its extent CRCs")
	if _, err := fs.parse(args, 0); err != nil {
		return err
	}
	dir := fs.dataDir
	dbPath := filepath.Join(dir, "catalog.db")
	if _, err := os.Lstat(dbPath); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stdout, "catalog %s: MISSING\n", dbPath)
		printVolumeFiles(stdout, dir)
		return fmt.Errorf("catalog check: %s does not exist: 'blockd catalog recover --data %s' rebuilds it from volumes/, or restore a backup",
			dbPath, cli.ShellQuote(dir))
	}
	s, err := catalog.OpenStore(dir, &catalog.Options{ReadOnly: true})
	switch {
	case errors.Is(err, catalog.ErrCorrupt):
		fmt.Fprintf(stdout, "catalog %s: DAMAGED: %s\n", dbPath, errDetail(err, dbPath))
		printVolumeFiles(stdout, dir)
		return fmt.Errorf("catalog check: %s is damaged: 'blockd catalog recover --data %s' rebuilds it from volumes/, or restore a backup",
			dbPath, cli.ShellQuote(dir))
	case errors.Is(err, catalog.ErrNewerSchema):
		fmt.Fprintf(stdout, "catalog %s: NEWER: %s\n", dbPath, errDetail(err, dbPath))
		return fmt.Errorf("catalog check: %s was written by a newer blockd; upgrade blockd", dbPath)
	case err != nil:
		return explainCatalog(dir, err)
	}
	defer s.Close()

	var problems int
	problem := func(format string, args ...any) {
		problems++
		fmt.Fprintf(stdout, format+"\n", args...)
	}
	if err := s.Catalog().Check(); err != nil {
		fmt.Fprintf(stdout, "catalog %s: DAMAGED\n", dbPath)
		for _, e := range joined(err) {
			problem("  %s", errDetail(e, dbPath))
		}
	}
	vols, err := s.List()
	if err != nil {
		problem("volumes not checked: %s", errDetail(err, dbPath))
	} else if problems == 0 {
		fmt.Fprintf(stdout, "catalog %s: ok, %d volumes\n", dbPath, len(vols))
	}
	named := map[string]bool{}
	for _, v := range vols {
		named[v.Backing] = true
		how := "linked"
		if v.Owned {
			how = "owned"
		}
		if err := s.CheckBacking(v.Name); err != nil {
			problem("volume %s: %s", v.Name, errDetail(err, dbPath))
			continue
		}
		if *verify {
			bar := cli.NewBar(stderr, v.Size, "verify "+v.Name)
			bad, err := s.Verify(ctx, v.Name, catalog.WithProgress(bar.Progress))
			bar.Finish(err)
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case err != nil:
				problem("volume %s: %s", v.Name, errDetail(err, dbPath))
				continue
			case len(bad) > 0:
				problem("volume %s: %d of %d extents fail their crc32c: %v", v.Name, len(bad), v.Extents(), bad)
				continue
			}
		}
		verified := ""
		if *verify {
			verified = ", every extent matches its crc32c"
		}
		fmt.Fprintf(stdout, "volume %s: ok (%s, %s, %s%s)\n", v.Name, cli.FormatBytes(float64(v.Size)), how, v.Backing, verified)
	}
	// Files in volumes/ that no volume uses are harmless; say so.
	if files, skipped, err := catalog.ScanVolumes(dir); err == nil {
		for _, f := range files {
			if !named[f.Path] {
				fmt.Fprintf(stdout, "note: %s is not in the catalog (left by an interrupted create, replace or remove; the next create or upload of %s replaces it)\n",
					f.Path, f.Name)
			}
		}
		for _, sk := range skipped {
			fmt.Fprintf(stdout, "note: %s: %s\n", sk.Path, sk.Reason)
		}
	}
	if problems > 0 {
		return fmt.Errorf("catalog check: %s: problems found: %d (see above)", dir, problems)
	}
	fmt.Fprintln(stdout, "healthy")
	return nil
}

// printVolumeFiles says what `blockd catalog recover` would find in
// dir/volumes.
func printVolumeFiles(w io.Writer, dir string) {
	files, skipped, err := catalog.ScanVolumes(dir)
	if err != nil {
		fmt.Fprintf(w, "volumes: %v\n", err)
		return
	}
	var total int64
	var names []string
	for _, f := range files {
		total += f.Size
		names = append(names, filepath.Base(f.Path))
	}
	fmt.Fprintf(w, "volume files in %s: %d (%s)", filepath.Join(dir, "volumes"), len(files), cli.FormatBytes(float64(total)))
	if len(names) > 0 {
		fmt.Fprintf(w, ": %s", strings.Join(names, " "))
	}
	fmt.Fprintln(w)
	if len(skipped) > 0 {
		fmt.Fprintf(w, "other files there, not volumes: %d\n", len(skipped))
	}
}

// catalogRecover runs `blockd catalog recover`.
func catalogRecover(ctx context.Context, fs *catalogFlags, args []string, stdout, stderr io.Writer) error {
	var extent cli.SizeFlag
	fs.Var(&extent, "extent-size", "extent size of the recovered volumes (default: as in the old catalog where it can be read, else 4MiB)")
	force := fs.Bool("force", false, "rebuild even a catalog that is healthy or from a newer blockd (it is moved aside, not deleted)")
	if _, err := fs.parse(args, 0); err != nil {
		return err
	}
	dir := fs.dataDir
	bar := cli.NewBar(stderr, -1, "recover")
	rep, err := catalog.Recover(ctx, dir, &catalog.RecoverOptions{ExtentSize: int64(extent), Force: *force},
		catalog.WithProgress(bar.Progress))
	bar.Finish(err)
	switch {
	case errors.Is(err, catalog.ErrHealthy):
		return fmt.Errorf("%s is healthy: nothing to recover ('blockd catalog check --data %s' checks the volume files too); --force rebuilds it anyway",
			filepath.Join(dir, "catalog.db"), cli.ShellQuote(dir))
	case errors.Is(err, catalog.ErrNewerSchema):
		return fmt.Errorf("%w; upgrade blockd rather than rebuild it (--force rebuilds it anyway, losing its linked volumes)", err)
	case err != nil:
		return explainCatalog(dir, err)
	}
	printRecoverReport(stdout, dir, rep)
	return nil
}

// printRecoverReport prints what recover did.
func printRecoverReport(w io.Writer, dir string, rep *catalog.RecoverReport) {
	switch {
	case rep.Damage != nil:
		fmt.Fprintf(w, "old catalog: %s\n", errDetail(rep.Damage, rep.Catalog))
	case rep.MovedTo != "":
		fmt.Fprintln(w, "old catalog: healthy, replaced (--force)")
	default:
		fmt.Fprintln(w, "old catalog: none (catalog.db did not exist)")
	}
	if rep.MovedTo != "" {
		fmt.Fprintf(w, "old catalog kept as %s\n", rep.MovedTo)
	}
	fmt.Fprintf(w, "recovered %d volumes (%s) into %s:\n", len(rep.Recovered), cli.FormatBytes(float64(rep.Bytes)), rep.Catalog)
	for _, rv := range rep.Recovered {
		var old string
		switch {
		case rv.Old == nil:
			old = "no old record found"
		case !rv.Compared:
			old = fmt.Sprintf("old record of %d bytes in extents of %d: not compared", rv.Old.Size, rv.Old.ExtentSize)
		case len(rv.Changed) == 0:
			old = fmt.Sprintf("matches the old record (generation %d)", rv.Old.Generation)
		default:
			old = fmt.Sprintf("DIFFERS from the old record (generation %d) in %d extents: %v", rv.Old.Generation, len(rv.Changed), rv.Changed)
		}
		fmt.Fprintf(w, "  %s: %s, %d extents of %s, generation %d, %s; %s\n", rv.Name, cli.FormatBytes(float64(rv.Size)),
			rv.Extents(), cli.FormatBytes(float64(rv.ExtentSize)), rv.Generation, rv.Backing, old)
	}
	if len(rep.Skipped) > 0 {
		fmt.Fprintf(w, "skipped %d files in volumes/ (left in place):\n", len(rep.Skipped))
		for _, sk := range rep.Skipped {
			fmt.Fprintf(w, "  %s: %s\n", sk.Path, sk.Reason)
		}
	}
	if len(rep.Missing) > 0 {
		fmt.Fprintf(w, "owned volumes of the old catalog with no file in volumes/ (removed before, or lost):")
		for _, v := range rep.Missing {
			fmt.Fprintf(w, " %s", v.Name)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "NOTE: the extent CRCs were computed from the volume files as they are now, so they bless whatever")
	fmt.Fprintln(w, "  is on disk: damage done to a file before this recovery will no longer be detected (--verify")
	fmt.Fprintln(w, "  passes). Where an old record was found its CRCs are compared above; otherwise check the data")
	fmt.Fprintln(w, "  against checksums kept elsewhere. Clients see new generations.")
	fmt.Fprintln(w, "NOTE: linked volumes (imported with --link, backing outside volumes/) cannot be found in volumes/")
	fmt.Fprintln(w, "  and were not recovered.")
	switch {
	case rep.MovedTo == "":
		fmt.Fprintln(w, "  There was no old catalog to read them from: re-import any with")
		fmt.Fprintf(w, "  'blockd volume import NAME PATH --link --data %s'.\n", cli.ShellQuote(dir))
	case len(rep.Linked) == 0:
		fmt.Fprintf(w, "  None was found in the old catalog %s", rep.MovedTo)
		if rep.Scanned {
			fmt.Fprint(w, " (its damaged parts cannot be read)")
		}
		fmt.Fprintf(w, ": re-import any with 'blockd volume import NAME PATH --link --data %s'.\n", cli.ShellQuote(dir))
	default:
		fmt.Fprintf(w, "  Found in the old catalog %s", rep.MovedTo)
		if rep.Scanned {
			fmt.Fprint(w, " (from its readable parts: it may list volumes removed before, and miss some)")
		}
		fmt.Fprintln(w, "; re-import them with:")
		for _, v := range rep.Linked {
			extent := ""
			if v.ExtentSize != catalog.DefaultExtentSize {
				extent = fmt.Sprintf(" --extent-size %dKiB", v.ExtentSize>>10)
			}
			fmt.Fprintf(w, "    blockd volume import %s %s --link%s --data %s\n", v.Name, cli.ShellQuote(v.Backing), extent, cli.ShellQuote(dir))
		}
	}
}

// catalogBackup runs `blockd catalog backup FILE`.
func catalogBackup(_ context.Context, fs *catalogFlags, args []string, stdout, _ io.Writer) error {
	pos, err := fs.parse(args, 1)
	if err != nil {
		return err
	}
	dir := fs.dataDir
	s, err := catalog.OpenStore(dir, &catalog.Options{ReadOnly: true})
	if err != nil {
		return explainCatalog(dir, err)
	}
	defer s.Close()
	vols, err := s.List()
	if err != nil {
		return explainCatalog(dir, err)
	}
	n, err := s.Catalog().Backup(pos[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backed up %s (%d volumes, %s) to %s\n", s.Catalog().Path(), len(vols), cli.FormatBytes(float64(n)), pos[0])
	return nil
}

// catalogMigrate runs `blockd catalog migrate`: block CRCs for every volume
// that lacks them.
func catalogMigrate(ctx context.Context, fs *catalogFlags, args []string, stdout, stderr io.Writer) error {
	if _, err := fs.parse(args, 0); err != nil {
		return err
	}
	dir := fs.dataDir
	store, err := catalog.OpenStore(dir, nil)
	if err != nil {
		return explainCatalog(dir, err)
	}
	defer store.Close()
	names, err := store.Catalog().WithoutBlocks()
	if err != nil {
		return explainCatalog(dir, err)
	}
	if len(names) == 0 {
		fmt.Fprintln(stdout, "every volume has its block CRCs: nothing to migrate")
		return nil
	}
	var failed []string
	for _, name := range names {
		bar := cli.NewBar(stderr, -1, "migrate "+name)
		b, err := store.AddBlocks(ctx, name, catalog.WithProgress(bar.Progress))
		bar.Finish(err)
		switch {
		case err != nil:
			fmt.Fprintf(stdout, "volume %s: NOT migrated: %v\n", name, err)
			failed = append(failed, name)
		default:
			fmt.Fprintf(stdout, "volume %s: %d block CRCs of %s stored\n", name, len(b.CRCs), cli.FormatBytes(float64(b.Size)))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d volumes not migrated (%s): their partial reads keep checking whole extents; 'blockd volume inspect NAME --verify' shows which extents are damaged",
			len(failed), len(names), strings.Join(failed, ", "))
	}
	return nil
}
