package main

import (
	"context"
	"io"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
)

// commands lists blockd's commands for its completion scripts (version,
// completion and help are added by cli.Completion). Each runs the same
// function as run's dispatch, so the scripts complete the flags that
// command's own flag set defines; main_test checks that this list and the
// usage text agree.
func commands() []cli.Command {
	return []cli.Command{
		{Name: "serve", Summary: "serve the volumes of a data directory", Runs: runs(
			func(ctx context.Context, args []string, _, stderr io.Writer) error { return serve(ctx, args, stderr) })},
		{Name: "volume", Summary: "create, import, list, inspect and remove volumes", Sub: []cli.Command{
			{Name: "create", Summary: "create a volume of zeros or random bytes", Runs: runs(sub(volume, "create"))},
			{Name: "import", Summary: "import a file or block device as a volume", Runs: runs(sub(volume, "import"))},
			{Name: "list", Summary: "list the volumes", Runs: runs(sub(volume, "list"))},
			{Name: "inspect", Summary: "show a volume, optionally checking its CRCs", Runs: runs(sub(volume, "inspect"))},
			{Name: "rm", Summary: "remove a volume", Runs: runs(sub(volume, "rm"))},
		}},
		{Name: "catalog", Summary: "check, recover, migrate and back up the catalog", Sub: []cli.Command{
			{Name: "check", Summary: "check the catalog and every volume's backing", Runs: runs(sub(catalogCmd, "check"))},
			{Name: "recover", Summary: "rebuild a damaged catalog from volumes/", Runs: runs(sub(catalogCmd, "recover"))},
			{Name: "migrate", Summary: "add block CRCs to volumes an older blockd wrote", Runs: runs(sub(catalogCmd, "migrate"))},
			{Name: "backup", Summary: "write a consistent copy of the catalog", Runs: runs(sub(catalogCmd, "backup"))},
		}},
		{Name: "scrub", Summary: "check and rebuild a striped volume's shards", Runs: runs(scrub)},
		{Name: "keygen", Summary: "write a new pre-shared key file", Runs: runs(
			func(_ context.Context, args []string, _, stderr io.Writer) error { return keygen(args, stderr) })},
		{Name: "doctor", Summary: "devmem preflight: kernel, NIC, udmabuf, providers", Runs: runs(
			func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
				return cli.Doctor(ctx, "blockd doctor", args, stdout, stderr)
			})},
	}
}

// program describes blockd for its usage, help and man page: the
// commands, what they share, and the help topics.
func program() *cli.Program {
	return &cli.Program{
		Name:  "blockd",
		Title: "the blockxfer storage server",
		Intro: "blockd is the blockxfer storage server: it keeps a catalog of volumes in a\n" +
			"data directory and serves them to blockcat and other blockxfer clients.",
		Commands: commands(),
		Notes: `Addresses are HOST[:PORT] ([IPV6]:PORT for an IPv6 address); the port
defaults to 7070. --data defaults to $BLOCKXFER_DATA. While blockd serve runs
it holds the catalog's lock: the volume and catalog commands refuse to run
on its data directory until it stops (add volumes to a running blockd with
'blockcat upload').`,
		Topics: cli.Topics("blockd"),
		SeeAlso: "blockcat(1); README.md and docs/ in the blockxfer source: docs/catalog.md\n" +
			"for the data directory, docs/json.md for --json.",
	}
}

// group returns the command of blockd with subcommands named name (volume,
// catalog), for their help.
func group(name string) cli.Command {
	c, _ := program().Find(name)
	return c
}

// command is the signature of blockd's command functions.
type command = func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// sub returns the subcommand name of a command with subcommands.
func sub(cmd command, name string) command {
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return cmd(ctx, append([]string{name}, args...), stdout, stderr)
	}
}

// runs adapts commands to cli.Command's Runs.
func runs(cmds ...command) []func([]string) error {
	var out []func([]string) error
	for _, c := range cmds {
		out = append(out, func(args []string) error { return c(context.Background(), args, io.Discard, io.Discard) })
	}
	return out
}
