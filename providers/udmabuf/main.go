// Command blockxfer-provider-udmabuf is the udmabuf provider plugin: host
// memory exported as a dmabuf through /dev/udmabuf, so a NIC can be bound to
// it (devmem RX/TX) without a GPU.
//
// Each buffer is a memfd (MFD_ALLOW_SEALING, sealed F_SEAL_SHRINK) wrapped by
// the UDMABUF_CREATE ioctl; the plugin maps the dmabuf and brackets every CPU
// access with DMA_BUF_IOCTL_SYNC. The plugin is host-mappable
// (providers.HostMapper): the host maps each buffer's memfd and the engine
// receives straight into it, without that bracket, which is sound where the
// device is cache-coherent with the CPU (x86).
//
// # Requirements
//
// The kernel must have CONFIG_UDMABUF (load the module with `modprobe
// udmabuf`) and the plugin must be able to open /dev/udmabuf. One buffer is
// limited to the module parameter size_limit_mb (64 MiB by default); raise
// it with `echo 1024 > /sys/module/udmabuf/parameters/size_limit_mb` or
// `modprobe udmabuf size_limit_mb=1024`. Without the device the plugin still
// starts and reports itself unusable, with the reason.
//
// Build it under the name the engine discovers:
//
//	go build -o blockxfer-provider-udmabuf ./providers/udmabuf
//
// or install it with scripts/install.sh. Run by hand with --version, it prints
// its version and exits.
package main

import (
	"os"

	"github.com/blockxfer/blockxfer/internal/buildinfo"
	"github.com/blockxfer/blockxfer/providers"
)

func main() {
	if buildinfo.VersionRequested(os.Args[1:]) { // run by hand: no handshake
		buildinfo.Read("blockxfer-provider-udmabuf").Write(os.Stdout)
		return
	}
	providers.Serve(newProvider(devicePath, sizeLimitPath), nil)
}
