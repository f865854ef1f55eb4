// Command blockxfer-provider-gpu is the CUDA provider plugin: GPU memory
// allocated with cuMemAlloc and exported as a dmabuf with
// cuMemGetHandleForAddressRange, so a NIC can DMA straight into it (devmem
// RX) or out of it (devmem TX).
//
// The CUDA driver API is loaded at run time with dlopen("libcuda.so.1"): no
// CUDA toolkit or header is needed to build it, only cgo. Without a driver
// the plugin still starts and reports itself unusable, with the reason.
//
// # Configuration
//
//   - -device N or BLOCKXFER_GPU_DEVICE=N selects the CUDA device ordinal
//     (default 0; the flag wins).
//   - BLOCKXFER_LIBCUDA=/path/to/libcuda.so.1 loads the driver from a given
//     path (tests point it at a stand-in).
//
// # Operations
//
// CopyIn is cuMemcpyHtoD from the staging buffers, which the plugin pins
// with cuMemHostRegister; ReadBack is cuMemcpyDtoH into them. Gather queues
// one cuMemcpyDtoDAsync per copy on a stream and waits with
// cuStreamSynchronize. Checksum reads back and computes CRC-32C on the host
// (no device kernel): Capabilities says DeviceChecksum false. Dmabuf export
// needs CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED and CUDA 11.7+; without it
// Alloc with dmabuf fails with memory.ErrNoDmabuf and the reason.
//
// Build it under the name the engine discovers:
//
//	go build -o blockxfer-provider-gpu ./providers/gpu
package main

import (
	"flag"
	"os"

	"github.com/blockxfer/blockxfer/providers"
)

func main() {
	fs := flag.NewFlagSet("blockxfer-provider-gpu", flag.ExitOnError)
	device := fs.Int("device", -1, "CUDA device ordinal (default $"+deviceEnv+", else 0)")
	fs.Parse(os.Args[1:])
	providers.Serve(newProvider(resolveConfig(*device, os.Getenv)), nil)
}
