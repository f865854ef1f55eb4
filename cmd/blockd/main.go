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

const usage = `blockd is the blockxfer storage server.

Usage:
  blockd serve --data DIR --listen ADDR [--key-file FILE] [--metrics ADDR] [flags]
  blockd volume create NAME --size SIZE [--extent-size SIZE] [--fill zero|random] --data DIR
  blockd volume import NAME SRC [--link] [--extent-size SIZE] --data DIR
  blockd volume list [--json] --data DIR
  blockd volume inspect NAME [--verify] [--json] --data DIR
  blockd volume rm NAME --data DIR
  blockd catalog check [--verify] --data DIR      check the catalog and every volume's backing
  blockd catalog recover [--extent-size SIZE] [--force] --data DIR   rebuild a damaged catalog from volumes/
  blockd catalog migrate --data DIR               add block CRCs to volumes an older blockd wrote
  blockd catalog backup FILE --data DIR           consistent copy of the catalog (blockd stopped)
  blockd serve ... --etcd ENDPOINTS [--server-id ID] [--advertise ADDR]   join a cluster (registered with a lease)
  blockd scrub (--manifest FILE | --etcd E VOLUME) [--spare ADDR,...]   check and rebuild a striped volume's shards
  blockd keygen -o FILE
  blockd doctor [--if IFACES] [--json]     devmem preflight: kernel, NIC, udmabuf, providers
  blockd version [--json]                  also --version
  blockd completion bash|zsh               print a shell completion script

Addresses are HOST[:PORT] ([IPV6]:PORT for an IPv6 address); the port
defaults to 7070.

Run 'blockd COMMAND -h' for a command's flags.

Environment:
  BLOCKXFER_DATA        the data directory when --data is not given
  BLOCKXFER_KEY_FILE    the key file when --key-file is not given (serve: else DATA/blockd.key)
  BLOCKXFER_PLUGIN_DIR  the plugin directory when --plugin-dir is not given
                        (default: blockd's directory, or ../lib/blockxfer/plugins beside it)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit status: 0 success,
// 1 failure, 2 bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
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
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "blockd: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	return cli.ExitCode("blockd", err, stderr)
}
