// Command blockxfer-provider-example is the smallest complete provider
// plugin, written for plugin authors to copy. Its buffers are memfds, and it
// hands each buffer's memfd to the host as the buffer's "dmabuf" fd, so the
// fd passing a real dmabuf exporter does is visible (and testable) on any
// Linux machine. A memfd is not a dmabuf: a NIC cannot be bound to it.
//
// The plugin is host-mappable (providers.HostMapper): the host maps each
// buffer's memfd and the engine receives straight into it. With
// BLOCKXFER_EXAMPLE_NO_HOST_MAP=1 in its environment it is not, and every
// byte goes through staging and the plugin's copy, as for memory the host
// cannot map.
//
// Build it under the name the engine discovers:
//
//	go build -o blockxfer-provider-example ./providers/example
//
// or install it with scripts/install.sh. Run by hand with --version, it prints
// its version and exits.
//
// See docs/providers.md for the protocol.
package main

import (
	"os"

	"github.com/blockxfer/blockxfer/internal/buildinfo"
	"github.com/blockxfer/blockxfer/providers"
)

func main() {
	if buildinfo.VersionRequested(os.Args[1:]) { // run by hand: no handshake
		buildinfo.Read("blockxfer-provider-example").Write(os.Stdout)
		return
	}
	providers.Serve(newProvider(), nil)
}
