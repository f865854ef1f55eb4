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
		{Name: "doctor", Summary: "devmem preflight: kernel, NIC, udmabuf, providers", Runs: runs(
			func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
				return cli.Doctor(ctx, "blockcat doctor", args, stdout, stderr)
			})},
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
