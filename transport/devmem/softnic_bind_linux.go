//go:build linux

package devmem

import (
	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
	"github.com/blockxfer/blockxfer/transport/devmem/netdev"
)

// The software NIC's bindings: bind-rx and bind-tx over a mappable fd,
// binding ids, unbinding, and the page pool of 4096-byte chunks that an RX
// binding feeds.

const chunkSize = uapi.DevmemPageSize

type softBinding struct {
	id     uint32
	kind   BindingKind
	queues []uint32
	fd     int
	mem    []byte

	// Page pool (RX): chunk i is mem[i*chunkSize:(i+1)*chunkSize].
	free     []int32
	refs     []int32
	wake     chan struct{} // closed when a chunk is freed; armed by waiters
	armed    bool
	unbound  bool
	busy     int  // system calls in progress on mem
	released bool // memory handed to release
	done     chan struct{}
}

type bindingCloser struct {
	nic *SoftNIC
	b   *softBinding
}

func (c bindingCloser) Close() error {
	c.nic.unbind(c.b)
	return nil
}

// BindRX binds the buffer behind fd (any file that can be mapped shared,
// such as a memfd) to RX queues. The checks and errnos are the kernel's
// for a device that supports devmem.
func (n *SoftNIC) BindRX(ifindex, fd int, queues []uint32) (*Binding, error) {
	const op = "bind-rx"
	if ifindex != n.cfg.Ifindex {
		return nil, &OpError{Subsystem: "devmem", Op: op, Err: unix.ENODEV}
	}
	if len(queues) == 0 {
		return nil, &OpError{Subsystem: "devmem", Op: op, Err: unix.EINVAL}
	}
	n.mu.Lock()
	for _, q := range queues {
		if int(q) >= n.cfg.RXQueues {
			n.mu.Unlock()
			return nil, &OpError{Subsystem: "devmem", Op: op, Err: unix.ERANGE, Message: "rx queue index out of range"}
		}
		if n.queues[q] != nil {
			n.mu.Unlock()
			return nil, &OpError{Subsystem: "devmem", Op: op, Err: unix.EEXIST, Message: "designated queue already memory provider bound"}
		}
	}
	n.mu.Unlock()
	b, err := n.mapBinding(op, fd, BindingRX)
	if err != nil {
		return nil, err
	}
	chunks := len(b.mem) / chunkSize
	if chunks == 0 {
		_ = n.release(b)
		return nil, &OpError{Subsystem: "devmem", Op: op, Err: unix.EINVAL, Message: "dmabuf smaller than a page"}
	}
	b.refs = make([]int32, chunks)
	b.free = make([]int32, chunks)
	for i := range b.free {
		b.free[i] = int32(chunks - 1 - i) // pop from the end: chunk 0 first
	}
	b.queues = append([]uint32(nil), queues...)
	n.mu.Lock()
	for _, q := range queues {
		if n.queues[q] != nil {
			n.mu.Unlock()
			_ = n.release(b)
			return nil, &OpError{Subsystem: "devmem", Op: op, Err: unix.EEXIST, Message: "designated queue already memory provider bound"}
		}
	}
	n.registerLocked(b)
	for _, q := range queues {
		n.queues[q] = b
	}
	n.mu.Unlock()
	return netdev.NewBinding(b.id, ifindex, BindingRX, queues, bindingCloser{n, b}), nil
}

// BindTX binds the buffer behind fd for devmem TX.
func (n *SoftNIC) BindTX(ifindex, fd int) (*Binding, error) {
	const op = "bind-tx"
	if ifindex != n.cfg.Ifindex {
		return nil, &OpError{Subsystem: "devmem", Op: op, Err: unix.ENODEV}
	}
	b, err := n.mapBinding(op, fd, BindingTX)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.registerLocked(b)
	n.mu.Unlock()
	return netdev.NewBinding(b.id, ifindex, BindingTX, nil, bindingCloser{n, b}), nil
}

// mapBinding takes a reference on fd (as dma_buf_get does) and maps it.
func (n *SoftNIC) mapBinding(op string, fd int, kind BindingKind) (*softBinding, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, &OpError{Subsystem: "devmem", Op: op, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(dup, &st); err != nil {
		_ = unix.Close(dup)
		return nil, &OpError{Subsystem: "devmem", Op: op, Err: err}
	}
	if st.Size <= 0 {
		_ = unix.Close(dup)
		return nil, &OpError{Subsystem: "devmem", Op: op, Err: unix.EINVAL, Message: "empty dmabuf"}
	}
	mem, err := unix.Mmap(dup, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		_ = unix.Close(dup)
		return nil, &OpError{Subsystem: "devmem", Op: op, Err: err, Message: "cannot map the dmabuf"}
	}
	return &softBinding{kind: kind, fd: dup, mem: mem, done: make(chan struct{})}, nil
}

// registerLocked gives b the next free id, cyclically from 1 (the kernel's
// xa_alloc_cyclic with XA_FLAGS_ALLOC1 over one space for RX and TX).
func (n *SoftNIC) registerLocked(b *softBinding) {
	id := n.lastID
	for {
		id++
		if id == 0 {
			id = 1
		}
		if _, used := n.bindings[id]; !used {
			break
		}
	}
	n.lastID = id
	b.id = id
	n.bindings[id] = b
}

// unbind removes the binding: its id is no longer valid, its queues revert
// to host memory, and its memory is released once no frag uses it.
func (n *SoftNIC) unbind(b *softBinding) {
	n.mu.Lock()
	if b.unbound {
		n.mu.Unlock()
		return
	}
	b.unbound = true
	delete(n.bindings, b.id)
	for _, q := range b.queues {
		if n.queues[q] == b {
			n.queues[q] = nil
		}
	}
	close(b.done)
	b.wakeLocked()
	release := b.takeIdleLocked()
	n.mu.Unlock()
	if release {
		_ = n.release(b)
	}
}

// takeIdleLocked reports, once, that an unbound binding's memory is no longer
// used by any frag or system call; the caller then releases it.
func (b *softBinding) takeIdleLocked() bool {
	if b.released || !b.unbound || b.busy != 0 || len(b.free) != len(b.refs) {
		return false
	}
	b.released = true
	return true
}

func (n *SoftNIC) release(b *softBinding) error {
	err := unix.Munmap(b.mem)
	b.mem = nil
	if cerr := unix.Close(b.fd); err == nil {
		err = cerr
	}
	return err
}

func (b *softBinding) wakeLocked() {
	if b.armed {
		close(b.wake)
		b.armed = false
	}
}

func (b *softBinding) waitChanLocked() <-chan struct{} {
	if !b.armed {
		b.wake = make(chan struct{})
		b.armed = true
	}
	return b.wake
}

// unrefLocked drops one reference on a chunk; a chunk without references
// returns to the page pool. It reports whether b's memory can now be
// released.
func (b *softBinding) unrefLocked(chunk int32) bool {
	b.refs[chunk]--
	if b.refs[chunk] == 0 {
		b.free = append(b.free, chunk)
		b.wakeLocked()
	}
	return b.takeIdleLocked()
}

func (n *SoftNIC) rxBindingLocked(flow string) *softBinding {
	q, ok := n.flows[flow]
	if !ok {
		return nil
	}
	return n.queues[q]
}
