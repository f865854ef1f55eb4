package providers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/blockxfer/blockxfer/internal/fdcount"
	"github.com/blockxfer/blockxfer/providers/internal/memfd"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// sharedMemfd returns a sealed memfd named name of size bytes, mapped here,
// as a caller owning memory to import would hold it.
func sharedMemfd(t *testing.T, name string, size int64) (int, []byte) {
	t.Helper()
	fd, err := memfd.Create(name, size, memfd.SealShrink|memfd.SealGrow)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := memfd.Map(fd, size)
	if err != nil {
		memfd.Close(fd)
		t.Fatal(err)
	}
	t.Cleanup(func() { memfd.Unmap(mem) })
	return fd, mem
}

// pluginHolds reports whether the plugin process maps, and whether it has
// open, the memfd named name.
func pluginHolds(t *testing.T, p *Plugin, name string) (mapped, open bool) {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", p.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	mapped = strings.Contains(string(maps), "/memfd:"+name+" ")
	dir := fmt.Sprintf("/proc/%d/fd", p.Pid())
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if link, err := os.Readlink(dir + "/" + e.Name()); err == nil && strings.HasPrefix(link, "/memfd:"+name+" ") {
			open = true
		}
	}
	return mapped, open
}

// TestImportThroughPlugin imports caller-owned host memory into the test
// plugin by fd, over the ring and over the RPCs: the plugin's writes land
// in the caller's pages at a non-page-aligned offset, every data call works
// on the imported buffer, the plugin keeps no fd, and Free unmaps it while
// the caller's memory stays intact.
func TestImportThroughPlugin(t *testing.T) {
	for _, noRing := range []bool{false, true} {
		t.Run(fmt.Sprintf("noRing=%v", noRing), func(t *testing.T) {
			ctx := context.Background()
			p := load(t, testPath, &LoadOptions{NoRing: noRing})
			if got, want := p.Capabilities().ImportKinds, []memory.ImportKind{memory.ImportFD, memory.ImportShm}; !reflect.DeepEqual(got, want) {
				t.Fatalf("ImportKinds = %q, want %q", got, want)
			}
			const size, off, n = 3 << 20, 4097, 1<<20 + 3
			name := "import-test-" + fmt.Sprint(noRing)
			fd, mem := sharedMemfd(t, name, size)
			before := fdcount.Open(t)
			b, err := p.Import(ctx, memory.ImportDesc{Kind: memory.ImportFD, FD: fd, Offset: off, Size: n})
			memfd.Close(fd) // the import holds the mapping, not the fd
			if err != nil {
				t.Fatal(err)
			}
			if b.Size != n || b.DmabufFD != -1 {
				t.Errorf("Import = %+v, want %d bytes and no dmabuf", b, n)
			}
			if got := fdcount.Open(t); got != before-1 {
				t.Errorf("%d fds open after Import and closing the memfd, want %d", got, before-1)
			}
			if mapped, open := pluginHolds(t, p, name); !mapped || open {
				t.Errorf("plugin maps the memfd: %v, keeps an fd of it: %v; want mapped, no fd", mapped, open)
			}

			data := pattern(n, 3)
			if err := p.CopyIn(ctx, b.ID, 0, data); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(mem[off:off+n], data) {
				t.Fatal("the caller's mapping does not show the bytes the plugin wrote at the offset")
			}
			if mem[off-1] != 0 || mem[off+n] != 0 {
				t.Error("bytes outside the imported range were written")
			}
			// Gather from an allocated buffer into the import, read back and
			// sum in the plugin.
			src, err := p.Alloc(ctx, 8192, false)
			if err != nil {
				t.Fatal(err)
			}
			other := pattern(8192, 99)
			if err := p.CopyIn(ctx, src.ID, 0, other); err != nil {
				t.Fatal(err)
			}
			if err := p.Gather(ctx, []memory.Copy{{Src: src.ID, Dst: b.ID, DstOff: 100, Len: 8192}}); err != nil {
				t.Fatal(err)
			}
			copy(data[100:], other)
			if !bytes.Equal(mem[off:off+n], data) {
				t.Fatal("gathered bytes not in the caller's memory")
			}
			got := make([]byte, n)
			if err := p.ReadBack(ctx, b.ID, 0, got); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("ReadBack: %v (or other bytes)", err)
			}
			sum, err := p.Checksum(ctx, b.ID, 0, n)
			if want := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)); err != nil || sum != want {
				t.Errorf("Checksum = %#x, %v; want %#x", sum, err, want)
			}
			if err := p.CopyIn(ctx, b.ID, n-10, make([]byte, 20)); !errors.Is(err, memory.ErrOutOfBounds) {
				t.Errorf("CopyIn past the import's end: %v, want ErrOutOfBounds", err)
			}

			if err := p.Free(ctx, b.ID); err != nil {
				t.Fatal(err)
			}
			if mapped, open := pluginHolds(t, p, name); mapped || open {
				t.Errorf("after Free the plugin maps the memfd: %v, has it open: %v", mapped, open)
			}
			if !bytes.Equal(mem[off:off+n], data) {
				t.Error("Free changed the caller's memory")
			}
			if err := p.CopyIn(ctx, b.ID, 0, data[:10]); !errors.Is(err, memory.ErrUnknownBuffer) {
				t.Errorf("CopyIn after Free: %v, want ErrUnknownBuffer", err)
			}
		})
	}
}

// TestImportErrors checks the refusals: a kind the plugin does not list
// fails on the host with ErrImportNotSupported before any call to the
// plugin; the plugin's own refusals (a range past the file's end, a kind it
// lists but its provider refuses) cross the boundary with their sentinels;
// a failed import leaves no fd behind in the plugin; an unusable plugin
// refuses with ErrUnusable.
func TestImportErrors(t *testing.T) {
	ctx := context.Background()
	p := load(t, testPath, &LoadOptions{Env: []string{"TESTPLUGIN_IMPORT_KINDS=fd,dmabuf"}})
	fd, _ := sharedMemfd(t, "import-errors", 1<<16)
	defer memfd.Close(fd)

	_, err := p.Import(ctx, memory.ImportDesc{Kind: memory.ImportCUDAIPC, FD: -1, Handle: make([]byte, 64), Size: 4096})
	var re *RemoteError
	if !errors.Is(err, memory.ErrImportNotSupported) || errors.As(err, &re) {
		t.Errorf("import of a kind not offered: %v, want ErrImportNotSupported from the host", err)
	}
	_, err = p.Import(ctx, memory.ImportDesc{Kind: memory.ImportDmabuf, FD: fd, Size: 4096})
	if !errors.Is(err, memory.ErrImportNotSupported) || !errors.As(err, &re) {
		t.Errorf("import the provider refuses: %v, want the plugin's ErrImportNotSupported", err)
	}
	_, err = p.Import(ctx, memory.ImportDesc{Kind: memory.ImportFD, FD: fd, Offset: 1 << 15, Size: 1<<15 + 1})
	if !errors.Is(err, memory.ErrOutOfBounds) || !errors.As(err, &re) {
		t.Errorf("import past the file's end: %v, want the plugin's ErrOutOfBounds", err)
	}
	_, err = p.Import(ctx, memory.ImportDesc{Kind: memory.ImportFD, FD: fd, Size: 0})
	if err == nil || errors.As(err, &re) {
		t.Errorf("import of 0 bytes: %v, want the host's refusal", err)
	}
	if mapped, open := pluginHolds(t, p, "import-errors"); mapped || open {
		t.Errorf("after failed imports the plugin maps the memfd: %v, has it open: %v", mapped, open)
	}

	unusable := load(t, testPath, &LoadOptions{Env: []string{"TESTPLUGIN_UNUSABLE=no device here"}})
	if _, err := unusable.Import(ctx, memory.ImportDesc{Kind: memory.ImportFD, FD: fd, Size: 4096}); !errors.Is(err, ErrUnusable) || !strings.Contains(err.Error(), "no device here") {
		t.Errorf("import into an unusable plugin: %v, want ErrUnusable with its reason", err)
	}
}

// TestImportStatusMapping: ErrImportNotSupported survives the status
// round trip.
func TestImportStatusMapping(t *testing.T) {
	got := fromStatus("p", "import", toStatus(fmt.Errorf("no: %w", memory.ErrImportNotSupported)))
	if !errors.Is(got, memory.ErrImportNotSupported) {
		t.Errorf("ErrImportNotSupported did not survive the round trip: %v", got)
	}
}
