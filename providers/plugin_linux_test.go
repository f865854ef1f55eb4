package providers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/internal/fdcount"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/providers/providerpb"
)

func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed ^ byte(i) ^ byte(i>>8) ^ byte(i>>16)
	}
	return p
}

func TestLoadExample(t *testing.T) {
	p := load(t, examplePath, nil)
	if p.Name() != "example" || p.Version() != "1.0.0" {
		t.Errorf("Name, Version = %q, %q; want example, 1.0.0", p.Name(), p.Version())
	}
	want := memory.Capabilities{Kind: "memfd-example", DmabufExport: true, CPUMappable: true, Gather: true, DeviceChecksum: true}
	if got := p.Capabilities(); !reflect.DeepEqual(got, want) {
		t.Errorf("Capabilities() = %+v, want %+v", got, want)
	}
	if p.Unusable() != "" {
		t.Errorf("Unusable() = %q", p.Unusable())
	}
	if p.Pid() <= 0 || p.Path() != examplePath {
		t.Errorf("Pid, Path = %d, %q", p.Pid(), p.Path())
	}
	// The plugin runs in its own process group.
	if pgid, err := unix.Getpgid(p.Pid()); err != nil || pgid != p.Pid() {
		t.Errorf("plugin pgid = %d, %v; want its own group %d", pgid, err, p.Pid())
	}
}

// TestDmabufFDPassing checks that a buffer's fd reaches the host through
// SCM_RIGHTS: the host maps the fd it received and reads the bytes the
// plugin wrote, and the plugin sees the bytes the host writes through it.
func TestDmabufFDPassing(t *testing.T) {
	ctx := context.Background()
	p := load(t, examplePath, nil)
	const size = 1 << 16
	b, err := p.Alloc(ctx, size, true)
	if err != nil {
		t.Fatal(err)
	}
	if b.DmabufFD < 0 || b.Size != size {
		t.Fatalf("Alloc = %+v, want a dmabuf fd", b)
	}
	if flags, err := unix.FcntlInt(uintptr(b.DmabufFD), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("received fd flags = %#x, %v; want FD_CLOEXEC", flags, err)
	}
	mem, err := unix.Mmap(b.DmabufFD, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mapping the received fd: %v", err)
	}
	defer unix.Munmap(mem)

	data := pattern(5000, 7)
	if err := p.CopyIn(ctx, b.ID, 1000, data); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mem[1000:6000], data) {
		t.Fatal("host mapping of the received fd does not show the bytes the plugin wrote")
	}
	// Device-side gather in the plugin, seen through the host mapping.
	if err := p.Gather(ctx, []memory.Copy{{Src: b.ID, SrcOff: 1000, Dst: b.ID, DstOff: 40000, Len: 5000}}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mem[40000:45000], data) {
		t.Fatal("gathered bytes not visible through the host mapping")
	}
	// Host writes through the fd; the plugin reads them back and sums them.
	copy(mem[50000:], "written by the host")
	got := make([]byte, 19)
	if err := p.ReadBack(ctx, b.ID, 50000, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != "written by the host" {
		t.Fatalf("plugin read back %q", got)
	}
	sum, err := p.Checksum(ctx, b.ID, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	if want := crc32.Checksum(mem, crc32.MakeTable(crc32.Castagnoli)); sum != want {
		t.Errorf("Checksum = %#x, want %#x", sum, want)
	}

	before := fdcount.Open(t)
	if err := p.Free(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if n := fdcount.Open(t); n != before-1 {
		t.Errorf("%d fds open after Free, want %d: the dmabuf fd was not closed", n, before-1)
	}
}

func TestStagingPipeline(t *testing.T) {
	ctx := context.Background()
	// Small slots so a copy spans many chunks and two slots are shared.
	p := load(t, examplePath, &LoadOptions{StagingSlotSize: 64 << 10, StagingSlots: 2})
	const size = 1<<20 + 12345
	b, err := p.Alloc(ctx, size, false)
	if err != nil {
		t.Fatal(err)
	}
	if b.DmabufFD != -1 {
		t.Errorf("DmabufFD = %d without dmabuf", b.DmabufFD)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			off := int64(g) * (size / 4)
			data := pattern(size/4, byte(g))
			if err := p.CopyIn(ctx, b.ID, off, data); err != nil {
				t.Error(err)
				return
			}
			got := make([]byte, len(data))
			if err := p.ReadBack(ctx, b.ID, off, got); err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(got, data) {
				t.Errorf("goroutine %d: read back differs from copied in", g)
			}
			sum, err := p.Checksum(ctx, b.ID, off, int64(len(data)))
			if err != nil {
				t.Error(err)
			} else if want := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)); sum != want {
				t.Errorf("goroutine %d: checksum %#x, want %#x", g, sum, want)
			}
		})
	}
	wg.Wait()
	if n := p.client.stage.created; n != 2 {
		t.Errorf("%d staging slots created, want the 2 allowed", n)
	}
}

// TestAcquireStaging checks the zero-copy path: with a single staging slot
// lent out, CopyIn and ReadBack on slices of it must still work (they use
// the lent slot directly), while a CopyIn from other memory has no slot.
func TestAcquireStaging(t *testing.T) {
	ctx := context.Background()
	p := load(t, examplePath, &LoadOptions{StagingSlotSize: 1 << 16, StagingSlots: 1})
	b, err := p.Alloc(ctx, 1<<16, false)
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.AcquireStaging(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Bytes) != 1<<16 {
		t.Fatalf("staging of %d bytes, want %d", len(st.Bytes), 1<<16)
	}
	copy(st.Bytes[100:], "straight from staging")
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.CopyIn(tctx, b.ID, 5000, st.Bytes[100:121]); err != nil {
		t.Fatalf("CopyIn from the lent staging: %v", err)
	}
	if err := p.ReadBack(tctx, b.ID, 5000, st.Bytes[2000:2021]); err != nil {
		t.Fatalf("ReadBack into the lent staging: %v", err)
	}
	if got := string(st.Bytes[2000:2021]); got != "straight from staging" {
		t.Fatalf("read back %q", got)
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if err := p.CopyIn(short, b.ID, 0, []byte("needs a slot")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("CopyIn from other memory with the only slot lent: %v, want DeadlineExceeded", err)
	}
	st.Release()
	st.Release()
	got := make([]byte, 21)
	if err := p.ReadBack(ctx, b.ID, 5000, got); err != nil || string(got) != "straight from staging" {
		t.Errorf("ReadBack after Release = %q, %v", got, err)
	}
}

func TestGatherThroughPlugin(t *testing.T) {
	ctx := context.Background()
	p := load(t, examplePath, nil)
	src, err := p.Alloc(ctx, 1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := p.Alloc(ctx, 1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(1<<20, 3)
	if err := p.CopyIn(ctx, src.ID, 0, data); err != nil {
		t.Fatal(err)
	}
	// Reverse the 4 KiB pages.
	copies := make([]memory.Copy, 256)
	for i := range copies {
		copies[i] = memory.Copy{Src: src.ID, SrcOff: int64(255-i) * 4096, Dst: dst.ID, DstOff: int64(i) * 4096, Len: 4096}
	}
	if err := p.Gather(ctx, copies); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1<<20)
	if err := p.ReadBack(ctx, dst.ID, 0, got); err != nil {
		t.Fatal(err)
	}
	for i := range 256 {
		if !bytes.Equal(got[i*4096:(i+1)*4096], data[(255-i)*4096:(256-i)*4096]) {
			t.Fatalf("page %d not gathered", i)
		}
	}
}

// TestErrorsCrossBoundary checks that the engine sentinels survive the
// trip through gRPC, both from the host's own checks and from the plugin.
func TestErrorsCrossBoundary(t *testing.T) {
	ctx := context.Background()
	p := load(t, testPath, nil)
	b, err := p.Alloc(ctx, 4096, false)
	if err != nil {
		t.Fatal(err)
	}

	// Checked in the host.
	if err := p.CopyIn(ctx, b.ID, 4000, make([]byte, 100)); !errors.Is(err, memory.ErrOutOfBounds) {
		t.Errorf("CopyIn past the end: %v, want ErrOutOfBounds", err)
	}
	if err := p.Gather(ctx, []memory.Copy{{Src: 99, Dst: b.ID, Len: 1}}); !errors.Is(err, memory.ErrUnknownBuffer) {
		t.Errorf("Gather from unknown buffer: %v, want ErrUnknownBuffer", err)
	}

	// Returned by the plugin.
	var re *RemoteError
	if err := p.Free(ctx, 99); !errors.Is(err, memory.ErrUnknownBuffer) || !errors.As(err, &re) {
		t.Errorf("Free(99): %v, want a RemoteError wrapping ErrUnknownBuffer", err)
	}
	_, err = p.client.rpc.CopyIn(ctx, &providerpb.CopyInRequest{Dst: uint64(b.ID), DstOff: 4090, StagingId: 1, Len: 0})
	if err != nil {
		t.Fatalf("empty CopyIn at 4090: %v", err)
	}
	_, err = p.client.rpc.Checksum(ctx, &providerpb.ChecksumRequest{BufferId: uint64(b.ID), Off: []int64{4000}, Len: []int64{200}})
	if err := p.client.callErr(ctx, "checksum", err); !errors.Is(err, memory.ErrOutOfBounds) {
		t.Errorf("plugin-side checksum past the end: %v, want ErrOutOfBounds", err)
	}
	_, err = p.client.rpc.Checksum(ctx, &providerpb.ChecksumRequest{BufferId: 12345, Off: []int64{0}, Len: []int64{1}})
	if err := p.client.callErr(ctx, "checksum", err); !errors.Is(err, memory.ErrUnknownBuffer) || !strings.Contains(err.Error(), "hostmem") {
		t.Errorf("plugin-side unknown buffer: %v, want hostmem's ErrUnknownBuffer", err)
	}
	_, err = p.client.rpc.Gather(ctx, &providerpb.GatherRequest{Copies: make([]byte, 41)})
	if err := p.client.callErr(ctx, "gather", err); err == nil || !strings.Contains(err.Error(), "not a multiple of 40") {
		t.Errorf("malformed gather: %v", err)
	}

	ctxCancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := p.Alloc(ctxCancelled, 4096, false); !errors.Is(err, context.Canceled) {
		t.Errorf("Alloc with cancelled ctx: %v, want context.Canceled", err)
	}
}

func TestNoDmabufAndUnusable(t *testing.T) {
	ctx := context.Background()
	// hostmem, served as is, cannot export: its ErrNoDmabuf reaches the host.
	nd := load(t, testPath, &LoadOptions{Env: []string{"TESTPLUGIN_NO_DMABUF=1"}})
	if _, err := nd.Alloc(ctx, 4096, true); !errors.Is(err, memory.ErrNoDmabuf) || !strings.Contains(err.Error(), "hostmem") {
		t.Errorf("Alloc(dmabuf) from hostmem: %v, want hostmem's ErrNoDmabuf", err)
	}
	if b, err := nd.Alloc(ctx, 4096, false); err != nil || b.DmabufFD != -1 {
		t.Errorf("Alloc without dmabuf = %+v, %v", b, err)
	}

	p := load(t, testPath, &LoadOptions{Env: []string{"TESTPLUGIN_UNUSABLE=no such device: modprobe it"}})
	if p.Unusable() != "no such device: modprobe it" {
		t.Errorf("Unusable() = %q", p.Unusable())
	}
	_, err := p.Alloc(ctx, 4096, false)
	if !errors.Is(err, ErrUnusable) || !strings.Contains(err.Error(), "modprobe it") {
		t.Errorf("Alloc on an unusable provider: %v, want ErrUnusable with the reason", err)
	}
}

func TestStatusMapping(t *testing.T) {
	for _, sentinel := range []error{memory.ErrNoDmabuf, memory.ErrUnknownBuffer, memory.ErrOutOfBounds, ErrUnusable} {
		wrapped := errors.New("detail")
		wrapped = errors.Join(wrapped, sentinel)
		got := fromStatus("p", "op", toStatus(wrapped))
		if !errors.Is(got, sentinel) {
			t.Errorf("%v did not survive the round trip: %v", sentinel, got)
		}
		if !strings.Contains(got.Error(), "detail") {
			t.Errorf("message lost: %v", got)
		}
	}
	if got := fromStatus("p", "op", toStatus(errors.New("plain"))); got.Err != nil {
		t.Errorf("plain error mapped to %v", got.Err)
	}
}

// TestCrashMidGather kills the plugin while a Gather is blocked inside it:
// the call fails with ErrPluginExited naming the plugin and its exit status,
// the fds received from it are closed, and another plugin keeps working.
func TestCrashMidGather(t *testing.T) {
	ctx := context.Background()
	other := load(t, examplePath, nil)
	ob, err := other.Alloc(ctx, 4096, true)
	if err != nil {
		t.Fatal(err)
	}

	before := fdcount.Open(t)
	fifo := filepath.Join(t.TempDir(), "gather-started")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	p := load(t, testPath, &LoadOptions{Env: []string{"TESTPLUGIN_HOLD_GATHER=" + fifo}})
	b, err := p.Alloc(ctx, 8192, true)
	if err != nil {
		t.Fatal(err)
	}
	if b.DmabufFD < 0 {
		t.Fatal("test plugin sent no fd")
	}
	if err := p.CopyIn(ctx, b.ID, 0, []byte("warm up staging")); err != nil {
		t.Fatal(err)
	}
	var dmabufStat unix.Stat_t
	if err := unix.Fstat(b.DmabufFD, &dmabufStat); err != nil {
		t.Fatal(err)
	}

	gatherErr := make(chan error, 1)
	go func() {
		gatherErr <- p.Gather(ctx, []memory.Copy{{Src: b.ID, Dst: b.ID, DstOff: 4096, Len: 4096}})
	}()
	// Opening the fifo blocks until the plugin opens it inside Gather.
	f, err := os.Open(fifo)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	err = <-gatherErr
	if !errors.Is(err, ErrPluginExited) {
		t.Fatalf("Gather after kill -9: %v, want ErrPluginExited", err)
	}
	for _, want := range []string{"testplugin", "signal: killed", filepath.Base(testPath)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	<-p.Exited()
	if err := p.ExitErr(); !errors.Is(err, ErrPluginExited) {
		t.Errorf("ExitErr() = %v", err)
	}
	// The dmabuf fd received from the dead plugin is closed by now (its
	// number is free, or reused by another file).
	var st unix.Stat_t
	if err := unix.Fstat(b.DmabufFD, &st); err == nil && st.Dev == dmabufStat.Dev && st.Ino == dmabufStat.Ino {
		t.Error("the crashed plugin's dmabuf fd is still open")
	}
	// Calls after the crash fail fast, with the same error.
	if _, err := p.Alloc(ctx, 4096, false); !errors.Is(err, ErrPluginExited) {
		t.Errorf("Alloc after crash: %v, want ErrPluginExited", err)
	}
	if err := p.Free(ctx, b.ID); !errors.Is(err, ErrPluginExited) {
		t.Errorf("Free after crash: %v, want ErrPluginExited", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close after crash: %v", err)
	}
	if n := fdcount.Open(t); n != before {
		t.Errorf("%d fds open after the crash and Close, want %d (the crashed plugin's fds leaked)", n, before)
	}

	// The other plugin is unaffected.
	data := pattern(4096, 9)
	if err := other.CopyIn(ctx, ob.ID, 0, data); err != nil {
		t.Fatalf("other plugin after the crash: %v", err)
	}
	got := make([]byte, 4096)
	if err := other.ReadBack(ctx, ob.ID, 0, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("other plugin round trip after the crash: %v", err)
	}
}

// TestPluginExitsOnSideSocketEOF closes the host's end of the side socket
// and waits for the plugin to exit by itself.
func TestPluginExitsOnSideSocketEOF(t *testing.T) {
	p := load(t, testPath, nil)
	p.client.fds.Close()
	select {
	case <-p.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("plugin still running 20s after its side socket closed")
	}
	if err := p.ExitErr(); err == nil || !strings.Contains(err.Error(), "exit status 0") {
		t.Errorf("ExitErr() = %v, want a clean exit", err)
	}
}

// TestPluginDiesWithHost runs a host in a child process (this test binary),
// kills the host with SIGKILL and waits, through a pidfd, for its plugin to
// die too.
func TestPluginDiesWithHost(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "PROVIDERS_TEST_HOST=1", "PROVIDERS_TEST_PLUGIN="+testPath)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	var pid int
	buf := make([]byte, 32)
	n, err := out.Read(buf)
	if err != nil {
		cmd.Process.Kill()
		t.Fatalf("reading the plugin pid from the helper host: %v", err)
	}
	if _, err := fmt.Sscan(string(buf[:n]), &pid); err != nil || pid <= 0 {
		cmd.Process.Kill()
		t.Fatalf("helper host printed %q", buf[:n])
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		cmd.Process.Kill()
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	defer unix.Close(pidfd)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 20000)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("plugin %d still alive 20s after its host was killed", pid)
		}
		break
	}
}

func TestDiscover(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(ExecutablePrefix+"b", 0o755)
	write(ExecutablePrefix+"a", 0o700)
	write(ExecutablePrefix+"noexec", 0o644)
	write(ExecutablePrefix, 0o755)
	write("other-tool", 0o755)
	if err := os.Mkdir(filepath.Join(dir, ExecutablePrefix+"dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, ExecutablePrefix+"b"), filepath.Join(dir, ExecutablePrefix+"link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "missing"), filepath.Join(dir, ExecutablePrefix+"dangling")); err != nil {
		t.Fatal(err)
	}
	got, err := Discover(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range got {
		names = append(names, filepath.Base(p))
	}
	want := []string{ExecutablePrefix + "a", ExecutablePrefix + "b", ExecutablePrefix + "link"}
	if !slices.Equal(names, want) {
		t.Errorf("Discover = %q, want %q", names, want)
	}
	if _, err := Discover(filepath.Join(dir, "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Discover(missing dir): %v, want fs.ErrNotExist", err)
	}
}

func TestLoadErrors(t *testing.T) {
	before := fdcount.Open(t)
	ctx := context.Background()
	opts := &LoadOptions{Logger: testLogger(t), StartTimeout: 10 * time.Second}
	if _, err := Load(ctx, filepath.Join(t.TempDir(), "missing"), opts); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing): %v, want fs.ErrNotExist", err)
	}
	noexec := filepath.Join(t.TempDir(), "plugin")
	if err := os.WriteFile(noexec, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(ctx, noexec, opts); err == nil || !strings.Contains(err.Error(), "not an executable") {
		t.Errorf("Load(non-executable): %v", err)
	}
	// A program that is not a plugin exits without the handshake.
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(ctx, truePath, opts); err == nil {
		t.Error("Load(true) succeeded")
	} else if !strings.Contains(err.Error(), "provider handshake") && !strings.Contains(err.Error(), "exited before") {
		t.Errorf("Load(true): %v, want a handshake failure", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Load(cctx, examplePath, opts); !errors.Is(err, context.Canceled) {
		t.Errorf("Load with cancelled ctx: %v, want context.Canceled", err)
	}
	if n := fdcount.Open(t); n != before {
		t.Errorf("%d fds open after failed Loads, want %d", n, before)
	}
}

// TestServeRefusesDirectRun runs a plugin binary by hand: it must explain
// itself on stderr, write nothing to stdout and exit 1.
func TestServeRefusesDirectRun(t *testing.T) {
	cmd := exec.Command(examplePath)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("direct run: %v, want exit status 1", err)
	}
	if stdout.Len() != 0 {
		t.Errorf("plugin wrote %q to stdout", stdout.String())
	}
	if !strings.Contains(stderr.String(), "blockxfer provider plugin") {
		t.Errorf("stderr %q does not explain what the binary is", stderr.String())
	}

	// With the cookie but no side socket on fd 3.
	cmd = exec.Command(examplePath)
	cmd.Env = append(os.Environ(), Handshake.MagicCookieKey+"="+Handshake.MagicCookieValue)
	stdout.Reset()
	stderr.Reset()
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err == nil {
		t.Error("plugin ran without a side socket")
	}
	if stdout.Len() != 0 || !strings.Contains(stderr.String(), "side socket") {
		t.Errorf("no side socket: stdout %q, stderr %q", stdout.String(), stderr.String())
	}
}

func TestCloseFailsCalls(t *testing.T) {
	ctx := context.Background()
	before := fdcount.Open(t)
	p := load(t, examplePath, nil)
	b, err := p.Alloc(ctx, 4096, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CopyIn(ctx, b.ID, 0, []byte("staging too")); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	<-p.Exited()
	if err := p.CopyIn(ctx, b.ID, 0, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("CopyIn after Close: %v, want ErrClosed", err)
	}
	if n := fdcount.Await(t, before); n != before {
		t.Errorf("%d fds open after Close, want %d as before Load", n, before)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
