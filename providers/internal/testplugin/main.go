// Command testplugin is a provider plugin for the providers package's tests:
// host memory (hostmem) behind the plugin boundary, with failure hooks set
// through the environment. Alloc with dmabuf exports the buffer's memfd as
// its "dmabuf" fd.
//
//   - TESTPLUGIN_NO_DMABUF=1: serve hostmem as is (Alloc with dmabuf fails
//     with memory.ErrNoDmabuf).
//   - TESTPLUGIN_HOLD_GATHER=<fifo>: Gather writes one byte to the fifo, then
//     blocks until the process is killed.
//   - TESTPLUGIN_UNUSABLE=<reason>: the provider reports itself unusable.
//   - TESTPLUGIN_NAME=<name>: the provider's name (default "testplugin").
//   - TESTPLUGIN_GATHER_NOP=1: Gather returns at once without copying, as
//     a device that only queues the copies would: what is left is the
//     cost of carrying the descriptors (the ring checks them).
//   - TESTPLUGIN_IMPORT_KINDS=<kind,...>: the import kinds Capabilities
//     lists (default "fd,shm", what hostmem imports; listing one hostmem
//     refuses makes the plugin's own refusal cross the boundary).
//   - TESTPLUGIN_HOST_MAP=1: the plugin is host-mappable (HostMapper): the
//     host maps each buffer's memfd. TESTPLUGIN_HOST_MAP=unsealed: the
//     same, but the fd sent is a memfd not sealed against shrinking, which
//     the host must refuse.
//   - TESTPLUGIN_COUNT=<file>: every CopyIn appends "i" to the file and
//     every Checksum "c", so a test can count the data calls that reached
//     the plugin.
package main

import (
	"context"
	"os"
	"strings"

	"github.com/blockxfer/blockxfer/providers"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/internal/memfd"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// provider wraps hostmem with the hooks.
type provider struct {
	*hostmem.Provider
	name   string
	export bool
	hold   string
	why    string
	nop    bool
	kinds  []memory.ImportKind
	host   string
	count  string
}

func (p *provider) Name() string           { return p.name }
func (p *provider) UnusableReason() string { return p.why }
func (p *provider) Version() string        { return "test" }

// Capabilities are hostmem's, with the configured import kinds.
func (p *provider) Capabilities() memory.Capabilities {
	c := p.Provider.Capabilities()
	c.ImportKinds = p.kinds
	return c
}

// Alloc exports the hostmem buffer's memfd as its "dmabuf" fd when asked
// for one, so the host receives an fd per buffer.
func (p *provider) Alloc(ctx context.Context, size int64, dmabuf bool) (memory.Buffer, error) {
	if !p.export {
		return p.Provider.Alloc(ctx, size, dmabuf)
	}
	b, err := p.Provider.Alloc(ctx, size, false)
	if err != nil || !dmabuf {
		return b, err
	}
	if b.DmabufFD, err = p.Provider.FD(b.ID); err != nil {
		p.Provider.Free(ctx, b.ID)
		return memory.Buffer{DmabufFD: -1}, err
	}
	return b, nil
}

// HostMappable reports whether TESTPLUGIN_HOST_MAP is set.
func (p *provider) HostMappable() bool { return p.host != "" }

// HostFD returns the hostmem buffer's memfd, or with
// TESTPLUGIN_HOST_MAP=unsealed a fresh memfd of its size that is not sealed
// (leaked: the host must refuse it before mapping, and the test process is
// short-lived).
func (p *provider) HostFD(id memory.BufferID) (int, error) {
	if p.host != "unsealed" {
		return p.Provider.FD(id)
	}
	b, err := p.Provider.Bytes(id)
	if err != nil {
		return -1, err
	}
	return memfd.Create("testplugin-unsealed", int64(len(b)), 0)
}

// note appends tag to the TESTPLUGIN_COUNT file, if set.
func (p *provider) note(tag string) {
	if p.count == "" {
		return
	}
	if f, err := os.OpenFile(p.count, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
		f.WriteString(tag)
		f.Close()
	}
}

// CopyIn is hostmem's, counted.
func (p *provider) CopyIn(ctx context.Context, dst memory.BufferID, off int64, src []byte) error {
	p.note("i")
	return p.Provider.CopyIn(ctx, dst, off, src)
}

// Checksum is hostmem's, counted.
func (p *provider) Checksum(ctx context.Context, buf memory.BufferID, off, n int64) (uint32, error) {
	p.note("c")
	return p.Provider.Checksum(ctx, buf, off, n)
}

// Gather blocks forever when asked to, after telling the test it has begun.
func (p *provider) Gather(ctx context.Context, copies []memory.Copy) error {
	if p.hold != "" {
		if f, err := os.OpenFile(p.hold, os.O_WRONLY, 0); err == nil {
			f.Write([]byte{1})
			f.Close()
		}
		select {}
	}
	if p.nop {
		return nil
	}
	return p.Provider.Gather(ctx, copies)
}

func main() {
	name := os.Getenv("TESTPLUGIN_NAME")
	if name == "" {
		name = "testplugin"
	}
	kinds := os.Getenv("TESTPLUGIN_IMPORT_KINDS")
	if kinds == "" {
		kinds = string(memory.ImportFD) + "," + string(memory.ImportShm)
	}
	var importKinds []memory.ImportKind
	for _, k := range strings.Split(kinds, ",") {
		importKinds = append(importKinds, memory.ImportKind(k))
	}
	providers.Serve(&provider{
		Provider: hostmem.New(),
		name:     name,
		export:   os.Getenv("TESTPLUGIN_NO_DMABUF") != "1",
		hold:     os.Getenv("TESTPLUGIN_HOLD_GATHER"),
		why:      os.Getenv("TESTPLUGIN_UNUSABLE"),
		nop:      os.Getenv("TESTPLUGIN_GATHER_NOP") == "1",
		kinds:    importKinds,
		host:     os.Getenv("TESTPLUGIN_HOST_MAP"),
		count:    os.Getenv("TESTPLUGIN_COUNT"),
	}, nil)
}
