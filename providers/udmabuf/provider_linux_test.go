package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/blockxfer/blockxfer/providers"
	"github.com/blockxfer/blockxfer/providers/internal/memfd"
	"github.com/blockxfer/blockxfer/providers/memory"
)

var pluginPath string // built once by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "udmabuf-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginPath = filepath.Join(dir, providers.ExecutablePrefix+"udmabuf")
	cmd := exec.Command("go", "build", "-o", pluginPath, ".")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the plugin:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireDevice skips unless /dev/udmabuf can be opened.
func requireDevice(t *testing.T) *provider {
	t.Helper()
	p := newProvider(devicePath, sizeLimitPath)
	if why := p.UnusableReason(); why != "" {
		t.Skip("udmabuf unavailable: " + why)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestMemfdForUdmabuf checks the memfd a udmabuf is made from: sealable,
// sealed against shrinking, not against writing, close-on-exec.
func TestMemfdForUdmabuf(t *testing.T) {
	fd, err := memfd.Create("blockxfer-udmabuf", 1<<16, memfd.SealShrink)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if seals&unix.F_SEAL_SHRINK == 0 {
		t.Error("memfd not sealed against shrinking: UDMABUF_CREATE would fail with EINVAL")
	}
	if seals&(unix.F_SEAL_WRITE|unix.F_SEAL_FUTURE_WRITE) != 0 {
		t.Error("memfd sealed against writing: UDMABUF_CREATE would fail with EINVAL")
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Size != 1<<16 {
		t.Errorf("memfd size = %d, %v", st.Size, err)
	}
	if err := unix.Ftruncate(fd, 4096); err == nil {
		t.Error("shrinking a shrink-sealed memfd succeeded")
	}
}

func TestMissingDevice(t *testing.T) {
	p := newProvider(filepath.Join(t.TempDir(), "udmabuf"), filepath.Join(t.TempDir(), "size_limit_mb"))
	defer p.Close()
	why := p.UnusableReason()
	for _, want := range []string{"not found", "CONFIG_UDMABUF", "modprobe udmabuf"} {
		if !strings.Contains(why, want) {
			t.Errorf("UnusableReason() = %q, want it to mention %q", why, want)
		}
	}
	_, err := p.Alloc(context.Background(), 4096, true)
	if !errors.Is(err, providers.ErrUnusable) || !strings.Contains(err.Error(), "modprobe udmabuf") {
		t.Errorf("Alloc without the device: %v, want ErrUnusable with the fix", err)
	}
	if c := p.Capabilities(); c.MaxAlloc != 0 || c.Kind != memory.Udmabuf || !c.DmabufExport {
		t.Errorf("Capabilities() = %+v", c)
	}
}

// TestSizeLimit checks that an allocation over size_limit_mb is refused
// before the ioctl, with the way to raise the limit. /dev/null stands in for
// the device: the ioctl is never reached.
func TestSizeLimit(t *testing.T) {
	limit := filepath.Join(t.TempDir(), "size_limit_mb")
	if err := os.WriteFile(limit, []byte("64\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := newProvider("/dev/null", limit)
	defer p.Close()
	if p.UnusableReason() != "" {
		t.Fatalf("unusable: %s", p.UnusableReason())
	}
	if c := p.Capabilities(); c.MaxAlloc != 64<<20 {
		t.Errorf("MaxAlloc = %d, want 64 MiB", c.MaxAlloc)
	}
	_, err := p.Alloc(context.Background(), 64<<20+1, true)
	if err == nil {
		t.Fatal("allocation over size_limit_mb succeeded")
	}
	for _, want := range []string{"size_limit_mb=64", "echo 65 > " + sizeLimitPath, "modprobe udmabuf size_limit_mb=65"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestUdmabuf(t *testing.T) {
	ctx := context.Background()
	p := requireDevice(t)
	b, err := p.Alloc(ctx, 3*4096+1, true)
	if err != nil {
		t.Fatal(err)
	}
	if b.DmabufFD < 0 {
		t.Fatal("no dmabuf fd")
	}
	data := []byte("bytes through a udmabuf")
	if err := p.CopyIn(ctx, b.ID, 100, data); err != nil {
		t.Fatal(err)
	}
	// A second mapping of the dmabuf sees the bytes.
	mem, err := unix.Mmap(b.DmabufFD, 0, 4*4096, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	if !bytes.Equal(mem[100:100+len(data)], data) {
		t.Error("dmabuf mapping does not show the copied-in bytes")
	}
	if err := p.Gather(ctx, []memory.Copy{{Src: b.ID, SrcOff: 100, Dst: b.ID, DstOff: 8192, Len: int64(len(data))}}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := p.ReadBack(ctx, b.ID, 8192, got); err != nil || !bytes.Equal(got, data) {
		t.Errorf("ReadBack after gather = %q, %v", got, err)
	}
	sum, err := p.Checksum(ctx, b.ID, 100, int64(len(data)))
	if want := crc32.Checksum(data, castagnoli); err != nil || sum != want {
		t.Errorf("Checksum = %#x, %v; want %#x", sum, err, want)
	}
	if err := p.CopyIn(ctx, b.ID, b.Size, []byte{1}); !errors.Is(err, memory.ErrOutOfBounds) {
		t.Errorf("CopyIn past the end: %v", err)
	}
	if err := p.Free(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if err := p.Free(ctx, b.ID); !errors.Is(err, memory.ErrUnknownBuffer) {
		t.Errorf("second Free: %v", err)
	}
}

// TestPlugin loads the plugin as a process. Without /dev/udmabuf it must
// report itself unusable with the fix; with it, the dmabuf fd must reach the
// host and show the bytes the plugin wrote.
func TestPlugin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pl, err := providers.Load(ctx, pluginPath, &providers.LoadOptions{Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	if pl.Name() != "udmabuf" || pl.Capabilities().Kind != memory.Udmabuf {
		t.Errorf("Name, Kind = %q, %q", pl.Name(), pl.Capabilities().Kind)
	}
	local := newProvider(devicePath, sizeLimitPath)
	local.Close()
	if why := local.UnusableReason(); why != "" {
		if pl.Unusable() != why {
			t.Errorf("plugin Unusable() = %q, want %q", pl.Unusable(), why)
		}
		if _, err := pl.Alloc(ctx, 4096, true); !errors.Is(err, providers.ErrUnusable) || !strings.Contains(err.Error(), "CONFIG_UDMABUF") {
			t.Errorf("Alloc on the unusable plugin: %v, want ErrUnusable naming CONFIG_UDMABUF", err)
		}
		t.Skip("udmabuf unavailable (checked the plugin's unusable report only): " + why)
	}
	if pl.Unusable() != "" {
		t.Fatalf("plugin unusable: %s", pl.Unusable())
	}
	b, err := pl.Alloc(ctx, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("udmabuf!"), 1<<17)
	if err := pl.CopyIn(ctx, b.ID, 0, data); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(b.DmabufFD, 0, 1<<20, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mapping the received dmabuf: %v", err)
	}
	defer unix.Munmap(mem)
	if !bytes.Equal(mem, data) {
		t.Error("received dmabuf does not show the bytes the plugin wrote")
	}
	if err := pl.Free(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
}
