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
// A NIC writes exported buffers (the devmem RX arena) over PCIe. Where the
// GPU does not order those writes for its own reads
// (CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WRITES_ORDERING below OWNER:
// pre-Hopper GPUs, some C2C platforms), a Gather, ReadBack or Checksum
// reading an exported buffer first calls cuFlushGPUDirectRDMAWrites (when
// CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS offers the host
// flush). Version says which applies.
//
// Import (memory.Importer) makes CUDA memory another process owns a
// buffer: by the IPC handle of a cuMemAlloc allocation (cuda-ipc,
// cuIpcOpenMemHandle_v2) or by the POSIX fd of a VMM allocation (cuda-vmm-fd,
// cuMemImportFromShareableHandle, then reserved, mapped and made accessible
// here). Free closes or unmaps it, never freeing the owner's memory.
// Capabilities lists the kinds the driver and device support; Version says
// why one is missing.
//
// The exported dmabufs cannot be mapped by the CPU (the NVIDIA exporter
// refuses mmap of video memory): they serve NIC binding only, not the
// software NIC of --devmem emulate nor blockd's TX pool, which is filled
// through a CPU mapping.
//
// Build it under the name the engine discovers:
//
//	go build -o blockxfer-provider-gpu ./providers/gpu
//
// or install it with scripts/install.sh. Run by hand with --version, it prints
// its version and exits.
package main

import (
	"flag"
	"os"

	"github.com/blockxfer/blockxfer/internal/buildinfo"
	"github.com/blockxfer/blockxfer/providers"
)

func main() {
	if buildinfo.VersionRequested(os.Args[1:]) { // run by hand: no handshake
		buildinfo.Read("blockxfer-provider-gpu").Write(os.Stdout)
		return
	}
	fs := flag.NewFlagSet("blockxfer-provider-gpu", flag.ExitOnError)
	device := fs.Int("device", -1, "CUDA device ordinal (default $"+deviceEnv+", else 0)")
	fs.Parse(os.Args[1:])
	providers.Serve(newProvider(resolveConfig(*device, os.Getenv)), nil)
}
