//go:build linux && cgo

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/internal/fdcount"
	"github.com/blockxfer/blockxfer/providers"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// owner is a process that owns CUDA memory and shares it
// (testdata/ipc_owner.c), as a client of the engine would.
type owner struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	sock *os.File // receives the fds the owner exports
	done bool
}

// startOwner starts an owner using the driver library lib.
func startOwner(t *testing.T, lib string) *owner {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	local, remote := os.NewFile(uintptr(fds[0]), "owner-sock"), os.NewFile(uintptr(fds[1]), "owner-sock-child")
	defer remote.Close()
	o := &owner{t: t, cmd: exec.Command(ownerPath, lib), sock: local}
	o.cmd.ExtraFiles = []*os.File{remote}
	o.cmd.Stderr = os.Stderr
	if o.in, err = o.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := o.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	o.out = bufio.NewReader(stdout)
	if err := o.cmd.Start(); err != nil {
		local.Close()
		t.Fatal(err)
	}
	t.Cleanup(o.close)
	return o
}

// close ends the owner (end of input) and waits for it.
func (o *owner) close() {
	if o.done {
		return
	}
	o.done = true
	o.in.Close()
	if err := o.cmd.Wait(); err != nil {
		o.t.Errorf("ipc_owner: %v", err)
	}
	o.sock.Close()
}

// do sends a command (and payload) and returns the reply after "ok".
func (o *owner) do(cmd string, payload []byte) string {
	o.t.Helper()
	if _, err := io.WriteString(o.in, cmd+"\n"); err != nil {
		o.t.Fatal(err)
	}
	if _, err := o.in.Write(payload); err != nil {
		o.t.Fatal(err)
	}
	line, err := o.out.ReadString('\n')
	if err != nil {
		o.t.Fatalf("ipc_owner %s: %v", cmd, err)
	}
	line = strings.TrimSuffix(line, "\n")
	if line != "ok" && !strings.HasPrefix(line, "ok ") {
		o.t.Fatalf("ipc_owner %s: %s", cmd, line)
	}
	return strings.TrimPrefix(strings.TrimPrefix(line, "ok"), " ")
}

// alloc allocates n bytes with cuMemAlloc and returns their IPC handle.
func (o *owner) alloc(n int) []byte {
	o.t.Helper()
	h, err := hex.DecodeString(strings.TrimPrefix(o.do(fmt.Sprintf("alloc %d", n), nil), "ipc "))
	if err != nil || len(h) != ipcHandleSize {
		o.t.Fatalf("ipc_owner alloc: handle %x, %v", h, err)
	}
	return h
}

// vmm allocates n bytes of VMM memory and returns the fd it exported.
func (o *owner) vmm(n int) int {
	o.t.Helper()
	o.do(fmt.Sprintf("vmm %d", n), nil)
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(o.sock.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		o.t.Fatal(err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		o.t.Fatalf("ipc_owner vmm: %d control messages, %v", len(msgs), err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		o.t.Fatalf("ipc_owner vmm: fds %v, %v", fds, err)
	}
	return fds[0]
}

func (o *owner) write(off int, data []byte) {
	o.t.Helper()
	o.do(fmt.Sprintf("write %d %d", off, len(data)), data)
}

func (o *owner) read(off, n int) []byte {
	o.t.Helper()
	o.do(fmt.Sprintf("read %d %d", off, n), nil)
	p := make([]byte, n)
	if _, err := io.ReadFull(o.out, p); err != nil {
		o.t.Fatal(err)
	}
	return p
}

func (o *owner) free() {
	o.t.Helper()
	o.do("free", nil)
}

// ownerLib is the driver library for an owner beside a plugin on the
// stand-in (fake) or the real driver.
func ownerLib(fake bool) string {
	if fake {
		return fakeCUDA
	}
	return defaultLibrary
}

// pluginHolds reports whether the plugin maps, and whether it has open, a
// memfd of the stand-in named name.
func pluginHolds(t *testing.T, p *providers.Plugin, name string) (mapped, open bool) {
	t.Helper()
	file := "/memfd:" + name + " (deleted)"
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", p.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(maps), "\n") {
		mapped = mapped || strings.HasSuffix(l, " "+file)
	}
	dir := fmt.Sprintf("/proc/%d/fd", p.Pid())
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		link, _ := os.Readlink(dir + "/" + e.Name())
		open = open || link == file
	}
	return mapped, open
}

// TestImportIPC imports memory another process allocated, by its IPC
// handle: every data call works on it, the owner reads the plugin's bytes
// byte-exact, a sub-range at an unaligned offset shares the open handle,
// ranges past the allocation are refused, Free closes the handle only with
// the last import and leaves the owner's memory intact, and a handle of
// freed memory is refused with what to fix.
func TestImportIPC(t *testing.T) {
	eachDriver(t, func(t *testing.T, p *providers.Plugin, fake bool) {
		ctx := context.Background()
		if !p.Capabilities().CanImport(memory.ImportCUDAIPC) {
			t.Fatalf("ImportKinds %q lack cuda-ipc; Version %q", p.Capabilities().ImportKinds, p.Version())
		}
		fdsBefore := fdcount.Open(t)
		o := startOwner(t, ownerLib(fake))
		const size = 2<<20 + 3*4096
		h := o.alloc(size)
		whole, err := p.Import(ctx, memory.ImportDesc{Kind: memory.ImportCUDAIPC, FD: -1, Handle: h, Size: size})
		if err != nil {
			t.Fatal(err)
		}
		if whole.Size != size || whole.DmabufFD != -1 {
			t.Errorf("Import = %+v", whole)
		}
		if mapped, _ := pluginHolds(t, p, "fakecuda"); fake && !mapped {
			t.Error("the plugin does not map the owner's memory after Import")
		}

		data := pattern(size, 11)
		if err := p.CopyIn(ctx, whole.ID, 0, data); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(o.read(0, size), data) {
			t.Fatal("the owner does not read the bytes the plugin wrote")
		}
		mine := pattern(5000, 77)
		o.write(3000, mine)
		copy(data[3000:], mine)
		got := make([]byte, size)
		if err := p.ReadBack(ctx, whole.ID, 0, got); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("ReadBack: %v (or not the owner's bytes)", err)
		}
		sum, err := p.Checksum(ctx, whole.ID, 0, size)
		if want := crc32.Checksum(data, castagnoli); err != nil || sum != want {
			t.Errorf("Checksum = %#x, %v; want %#x", sum, err, want)
		}
		src, err := p.Alloc(ctx, 8192, false)
		if err != nil {
			t.Fatal(err)
		}
		other := pattern(8192, 200)
		if err := p.CopyIn(ctx, src.ID, 0, other); err != nil {
			t.Fatal(err)
		}
		if err := p.Gather(ctx, []memory.Copy{{Src: src.ID, Dst: whole.ID, DstOff: 1 << 20, Len: 8192}}); err != nil {
			t.Fatal(err)
		}
		if err := p.Free(ctx, src.ID); err != nil {
			t.Fatal(err)
		}
		copy(data[1<<20:], other)
		if !bytes.Equal(o.read(0, size), data) {
			t.Fatal("the owner does not read the gathered bytes")
		}

		// A sub-range at an unaligned offset, from the same handle.
		const off, n = 4097, 10000
		sub, err := p.Import(ctx, memory.ImportDesc{Kind: memory.ImportCUDAIPC, FD: -1, Handle: h, Offset: off, Size: n})
		if err != nil {
			t.Fatal(err)
		}
		part := pattern(n, 5)
		if err := p.CopyIn(ctx, sub.ID, 0, part); err != nil {
			t.Fatal(err)
		}
		copy(data[off:], part)
		if !bytes.Equal(o.read(0, size), data) {
			t.Fatal("the sub-range's bytes are not at its offset in the owner's memory")
		}
		if err := p.CopyIn(ctx, sub.ID, n-1, []byte{1, 2}); !errors.Is(err, memory.ErrOutOfBounds) {
			t.Errorf("CopyIn past the sub-range: %v, want ErrOutOfBounds", err)
		}
		for _, d := range []memory.ImportDesc{{Offset: size - 100, Size: 200}, {Offset: size, Size: 1}} {
			d.Kind, d.FD, d.Handle = memory.ImportCUDAIPC, -1, h
			if _, err := p.Import(ctx, d); !errors.Is(err, memory.ErrOutOfBounds) {
				t.Errorf("Import [%d, +%d) of %d bytes: %v, want ErrOutOfBounds", d.Offset, d.Size, size, err)
			}
		}

		if err := p.Free(ctx, whole.ID); err != nil {
			t.Fatal(err)
		}
		if err := p.ReadBack(ctx, sub.ID, 0, got[:n]); err != nil || !bytes.Equal(got[:n], part) {
			t.Errorf("the sub-range after the whole import's Free: %v (or other bytes)", err)
		}
		if err := p.Free(ctx, sub.ID); err != nil {
			t.Fatal(err)
		}
		if mapped, open := pluginHolds(t, p, "fakecuda"); fake && (mapped || open) {
			t.Errorf("after Free of every import the plugin maps the owner's memory: %v, holds an fd of it: %v", mapped, open)
		}
		if !bytes.Equal(o.read(0, size), data) {
			t.Error("Free changed the owner's memory")
		}

		o.free()
		_, err = p.Import(ctx, memory.ImportDesc{Kind: memory.ImportCUDAIPC, FD: -1, Handle: h, Size: 4096})
		if err == nil || !strings.Contains(err.Error(), "CUDA_ERROR_INVALID_VALUE") || !strings.Contains(err.Error(), "freed by its owner") {
			t.Errorf("Import of freed memory: %v, want CUDA_ERROR_INVALID_VALUE saying the owner freed it", err)
		}
		_, err = p.Import(ctx, memory.ImportDesc{Kind: memory.ImportCUDAIPC, FD: -1, Handle: h[:16], Size: 4096})
		if err == nil || !strings.Contains(err.Error(), "64-byte CUipcMemHandle") {
			t.Errorf("Import of a 16-byte handle: %v", err)
		}
		o.close()
		if n := fdcount.Open(t); n != fdsBefore {
			t.Errorf("%d fds open in the test after the owner ended, %d before", n, fdsBefore)
		}
	})
}

// TestImportVMM imports VMM memory another process exported as a POSIX fd,
// at a sub-range past the first granule: the owner reads the plugin's
// bytes, ranges past the allocation are refused, and Free unmaps it and
// drops the plugin's reference while the owner's memory stays intact.
func TestImportVMM(t *testing.T) {
	eachDriver(t, func(t *testing.T, p *providers.Plugin, fake bool) {
		ctx := context.Background()
		if !p.Capabilities().CanImport(memory.ImportCUDAVMMFD) {
			t.Skipf("no cuda-vmm-fd import here: %s", p.Version())
		}
		fdsBefore := fdcount.Open(t)
		o := startOwner(t, ownerLib(fake))
		const size = 4 << 20
		fd := o.vmm(size)
		const off, n = 2<<20 + 5, 100003
		if _, err := p.Import(ctx, memory.ImportDesc{Kind: memory.ImportCUDAVMMFD, FD: fd, Offset: size - 10, Size: 100}); !errors.Is(err, memory.ErrOutOfBounds) {
			t.Errorf("Import past the allocation's end: %v, want ErrOutOfBounds", err)
		}
		b, err := p.Import(ctx, memory.ImportDesc{Kind: memory.ImportCUDAVMMFD, FD: fd, Offset: off, Size: n})
		unix.Close(fd) // the import holds the memory, not the fd
		if err != nil {
			t.Fatal(err)
		}
		data := pattern(n, 9)
		if err := p.CopyIn(ctx, b.ID, 0, data); err != nil {
			t.Fatal(err)
		}
		if got := o.read(off-1, n+2); got[0] != 0 || got[n+1] != 0 || !bytes.Equal(got[1:n+1], data) {
			t.Fatal("the owner does not read the plugin's bytes at the offset (or bytes around them changed)")
		}
		got := make([]byte, n)
		if err := p.ReadBack(ctx, b.ID, 0, got); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("ReadBack: %v (or other bytes)", err)
		}
		if sum, err := p.Checksum(ctx, b.ID, 0, n); err != nil || sum != crc32.Checksum(data, castagnoli) {
			t.Errorf("Checksum = %#x, %v", sum, err)
		}
		if mapped, _ := pluginHolds(t, p, "fakecuda-vmm"); fake && !mapped {
			t.Error("the plugin does not map the VMM memory after Import")
		}
		if err := p.Free(ctx, b.ID); err != nil {
			t.Fatal(err)
		}
		if mapped, open := pluginHolds(t, p, "fakecuda-vmm"); fake && (mapped || open) {
			t.Errorf("after Free the plugin maps the VMM memory: %v, holds it open: %v", mapped, open)
		}
		if !bytes.Equal(o.read(off, n), data) {
			t.Error("Free changed the owner's memory")
		}
		o.close()
		if got := fdcount.Open(t); got != fdsBefore {
			t.Errorf("%d fds open in the test after the owner ended, %d before", got, fdsBefore)
		}
	})
}

// TestImportReleasedOnKill: when the plugin dies with memory imported, the
// owner's memory is intact and still the owner's to free, calls fail with
// ErrPluginExited, and the test process holds no fd more than before.
func TestImportReleasedOnKill(t *testing.T) {
	ctx := context.Background()
	fdsBefore := fdcount.Open(t)
	p := loadGPU(t, []string{"BLOCKXFER_LIBCUDA=" + fakeCUDA})
	o := startOwner(t, fakeCUDA)
	const size = 1 << 20
	h := o.alloc(size)
	b, err := p.Import(ctx, memory.ImportDesc{Kind: memory.ImportCUDAIPC, FD: -1, Handle: h, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(size, 42)
	if err := p.CopyIn(ctx, b.ID, 0, data); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.Exited()
	if err := p.CopyIn(ctx, b.ID, 0, data[:10]); !errors.Is(err, providers.ErrPluginExited) {
		t.Errorf("CopyIn after the plugin died: %v, want ErrPluginExited", err)
	}
	if !bytes.Equal(o.read(0, size), data) {
		t.Error("the owner's memory changed when the importing plugin died")
	}
	o.free()
	o.close()
	p.Close()
	if n := fdcount.Open(t); n != fdsBefore {
		t.Errorf("%d fds open after the plugin died and was closed, %d before", n, fdsBefore)
	}
}

// TestImportKinds: the stand-in offers both CUDA kinds; a driver without
// cuMemImportFromShareableHandle, or a device whose VMM support cannot be
// read, offers cuda-ipc only and says why in Version; a kind not offered is refused with ErrImportNotSupported by the
// host before any call, and by the provider itself with the reason.
func TestImportKinds(t *testing.T) {
	ctx := context.Background()
	p := loadGPU(t, []string{"BLOCKXFER_LIBCUDA=" + fakeCUDA})
	if got, want := p.Capabilities().ImportKinds, []memory.ImportKind{memory.ImportCUDAIPC, memory.ImportCUDAVMMFD}; !reflect.DeepEqual(got, want) {
		t.Errorf("ImportKinds = %q, want %q", got, want)
	}
	var re *providers.RemoteError
	if _, err := p.Import(ctx, memory.ImportDesc{Kind: memory.ImportFD, FD: 0, Size: 4096}); !errors.Is(err, memory.ErrImportNotSupported) || errors.As(err, &re) {
		t.Errorf("Import of host memory: %v, want ErrImportNotSupported from the host", err)
	}

	old := loadGPU(t, []string{"BLOCKXFER_LIBCUDA=" + fakeOld})
	if got := old.Capabilities().ImportKinds; !reflect.DeepEqual(got, []memory.ImportKind{memory.ImportCUDAIPC}) {
		t.Errorf("old driver: ImportKinds = %q, want cuda-ipc only", got)
	}
	if v := old.Version(); !strings.Contains(v, "no cuda-vmm-fd import") || !strings.Contains(v, "lacks cuMemImportFromShareableHandle") {
		t.Errorf("old driver: Version %q does not say why cuda-vmm-fd is not offered", v)
	}
	if _, err := old.Import(ctx, memory.ImportDesc{Kind: memory.ImportCUDAVMMFD, FD: 0, Size: 4096}); !errors.Is(err, memory.ErrImportNotSupported) {
		t.Errorf("old driver: Import cuda-vmm-fd: %v, want ErrImportNotSupported", err)
	}

	noVMM := loadGPU(t, []string{"BLOCKXFER_LIBCUDA=" + fakeCUDA, fmt.Sprintf("FAKECUDA_NO_ATTR=%d", attrVMMSupported)})
	if got := noVMM.Capabilities().ImportKinds; !reflect.DeepEqual(got, []memory.ImportKind{memory.ImportCUDAIPC}) || !strings.Contains(noVMM.Version(), "cannot tell whether cuda:0 supports VMM memory") {
		t.Errorf("unreadable VMM attribute: ImportKinds %q, Version %q", got, noVMM.Version())
	}

	// In process, the provider's own refusals.
	prov := newProvider(config{library: fakeOld, override: true})
	defer prov.Close()
	_, err := prov.Import(ctx, memory.ImportDesc{Kind: memory.ImportCUDAVMMFD, FD: 0, Size: 4096})
	if !errors.Is(err, memory.ErrImportNotSupported) || !strings.Contains(err.Error(), "lacks cuMemImportFromShareableHandle") {
		t.Errorf("provider Import cuda-vmm-fd on an old driver: %v", err)
	}
	if _, err := prov.Import(ctx, memory.ImportDesc{Kind: memory.ImportDmabuf, FD: 0, Size: 4096}); !errors.Is(err, memory.ErrImportNotSupported) {
		t.Errorf("provider Import dmabuf: %v, want ErrImportNotSupported", err)
	}
}
