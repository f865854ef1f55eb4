package main

import (
	"context"
	"io"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
)

// commands lists blockcat's commands for its completion scripts (version,
// completion and help are added by cli.Completion). Each runs the same
// function as run's dispatch, so the scripts complete the flags that
// command's own flag set defines; main_test checks that this list and the
// usage text agree.
func commands() []cli.Command {
	return []cli.Command{
		{Name: "ls", Summary: "list the volumes of a server", Runs: runs(ls)},
		{Name: "get", Summary: "fetch a volume (or a striped one) into memory or a file", Runs: runs(get, ecGet)},
		{Name: "bench", Summary: "measure random reads of a volume", Runs: runs(bench)},
		{Name: "upload", Summary: "store a file as a volume on a running blockd", Runs: runs(upload)},
		{Name: "put", Summary: "store a file as a striped, erasure-coded volume", Runs: runs(put)},
		{Name: "providers", Summary: "list the memory providers and their plugins", Runs: runs(listProviders)},
		{Name: "agent", Summary: "serve applications on this host over a unix socket (Python client)", Runs: runs(runAgent)},
		{Name: "doctor", Summary: "devmem preflight: kernel, NIC, udmabuf, providers", Runs: runs(
			func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
				return cli.Doctor(ctx, "blockcat doctor", args, stdout, stderr)
			})},
		{Name: "selftest", Summary: "devmem self-test against a blockd: RX, TX, header split, tokens, binding loss", Runs: runs(selftestCmd)},
	}
}

// program describes blockcat for its usage, help and man page: the
// commands, what they share, and the help topics.
func program() *cli.Program {
	return &cli.Program{
		Name:  "blockcat",
		Title: "fetch blockxfer volumes into accelerator or host memory",
		Intro: "blockcat fetches blockxfer volumes into memory (host memory, or GPU or\n" +
			"udmabuf memory through provider plugins), writes them out, checks them and\n" +
			"measures the path.",
		Commands: commands(),
		Notes: `SERVER is HOST[:PORT] ([IPV6]:PORT for an IPv6 address); the port defaults
to 7070, blockd's. With $BLOCKXFER_SERVER set, SERVER may be left out:
'BLOCKXFER_SERVER=host blockcat get VOLUME'.

Common flags: --key-file FILE (or $BLOCKXFER_KEY_FILE), --data-conns N,
--provider host|NAME|PATH (memory to fetch into; plugins are found as
blockxfer-provider-NAME in --plugin-dir), --timeout D, --log-level LEVEL.`,
		Topics:  cli.Topics("blockcat"),
		SeeAlso: "blockd(1); README.md and docs/ in the blockxfer source, docs/json.md for --json.",
	}
}

// runs adapts commands to cli.Command's Runs.
func runs(cmds ...func(ctx context.Context, args []string, stdout, stderr io.Writer) error) []func([]string) error {
	var out []func([]string) error
	for _, c := range cmds {
		out = append(out, func(args []string) error { return c(context.Background(), args, io.Discard, io.Discard) })
	}
	return out
}
