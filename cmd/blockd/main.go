// Command blockd is the blockxfer storage server. It keeps a catalog of
// volumes in a data directory and serves them to blockcat and other engine
// clients.
//
//	blockd keygen -o FILE
//	blockd volume create NAME --size SIZE [--fill zero|random] --data DIR
//	blockd volume import NAME SRC [--link] --data DIR
//	blockd volume list|inspect|rm ... --data DIR
//	blockd catalog check|recover|migrate|backup ... --data DIR
//	blockd serve --data DIR --listen ADDR [--key-file FILE] [--metrics ADDR]
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/blockxfer/blockxfer/cmd/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit status: 0 success,
// 1 failure, 2 bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		program().WriteUsage(stderr)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], stderr)
	case "scrub":
		err = scrub(ctx, args[1:], stdout, stderr)
	case "volume":
		err = volume(ctx, args[1:], stdout, stderr)
	case "catalog":
		err = catalogCmd(ctx, args[1:], stdout, stderr)
	case "keygen":
		err = keygen(args[1:], stderr)
	case "doctor":
		err = cli.Doctor(ctx, "blockd doctor", args[1:], stdout, stderr)
	case "version", "--version", "-version":
		err = cli.Version("blockd", args[1:], stdout, stderr)
	case "completion":
		err = cli.Completion("blockd", commands(), args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		err = cli.Help(program(), args[1:], stdout, stderr)
	case "man":
		err = cli.Man(program(), args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "blockd: unknown command %q: run 'blockd help' for the commands\n", args[0])
		return 2
	}
	return cli.ExitCode("blockd", err, stderr)
}
