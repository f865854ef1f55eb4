package devmem

import "github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"

// A DmabufSync brackets the CPU's writes into a dmabuf's mapping with
// DMA_BUF_IOCTL_SYNC, as the dma-buf uapi asks of every CPU access and as
// ncdevmem does before filling its TX buffer: DMA_BUF_SYNC_START|WRITE
// before the writes, DMA_BUF_SYNC_END|WRITE after, before the NIC reads
// the bytes. On a cache-coherent system (x86) the kernel has nothing to do;
// on a non-coherent one (many arm64 systems) without the bracket the NIC
// may send stale bytes from memory while the new ones sit in the CPU cache.
//
// Set TXConfig.Sync to one for a real dmabuf (a udmabuf TX pool); leave it
// nil for memory that is not a dmabuf (the software NIC's memfd pool).
type DmabufSync struct{ fd int }

// NewDmabufSync returns the bracket for the dmabuf fd. It does not own fd,
// which must stay open while the bracket is in use.
func NewDmabufSync(fd int) *DmabufSync { return &DmabufSync{fd: fd} }

// BeginWrite opens CPU write access (DMA_BUF_SYNC_START|DMA_BUF_SYNC_WRITE).
func (s *DmabufSync) BeginWrite() error {
	return s.sync(uapi.DmaBufSyncStart|uapi.DmaBufSyncWrite, "DMA_BUF_IOCTL_SYNC start write")
}

// EndWrite closes it (DMA_BUF_SYNC_END|DMA_BUF_SYNC_WRITE): after it the
// device reads what the CPU wrote.
func (s *DmabufSync) EndWrite() error {
	return s.sync(uapi.DmaBufSyncEnd|uapi.DmaBufSyncWrite, "DMA_BUF_IOCTL_SYNC end write")
}

func (s *DmabufSync) sync(flags uint64, op string) error {
	if err := dmabufSyncIoctl(s.fd, flags); err != nil {
		return &OpError{Subsystem: "devmem", Op: op, Err: err}
	}
	return nil
}

// dmabufSyncIoctl issues DMA_BUF_IOCTL_SYNC with flags on the dmabuf fd. It
// is a variable so that tests can watch the bracket.
var dmabufSyncIoctl = hostDmabufSync
