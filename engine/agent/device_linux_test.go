package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport"
)

// fakeAllocs is the test's "device memory": sealed memfds, each named by
// an IPC handle (its id in the handle's first 8 bytes) and shareable by its
// fd, as a cuMemAlloc allocation and a cuMemCreate one are.
type fakeAllocs struct {
	t     *testing.T
	mu    sync.Mutex
	last  uint64
	fds   map[uint64]int // id -> memfd; deleted when freed
	loads map[int]int    // device -> times its provider was loaded
	gpus  []*fakeGPU
}

func newFakeAllocs(t *testing.T) *fakeAllocs {
	return &fakeAllocs{t: t, fds: map[uint64]int{}, loads: map[int]int{}}
}

// alloc returns an allocation of size bytes: its IPC handle, its fd and
// the test's mapping of it.
func (f *fakeAllocs) alloc(size int) (handle string, fd int, mem []byte) {
	fd, mem = memfd(f.t, size)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last++
	f.fds[f.last] = fd
	h := make([]byte, IPCHandleSize)
	binary.LittleEndian.PutUint64(h, f.last)
	return hex.EncodeToString(h), fd, mem
}

// free forgets the allocation a handle names: importing it fails after.
func (f *fakeAllocs) free(handle string) {
	h, _ := hex.DecodeString(handle)
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.fds, binary.LittleEndian.Uint64(h))
}

// device is Config.Device: devices 0 and 1 exist.
func (f *fakeAllocs) device(_ context.Context, dev int) (memory.Provider, error) {
	if dev > 1 {
		return nil, fmt.Errorf("no CUDA device %d (this machine has 2)", dev)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loads[dev]++
	hm := hostmem.New()
	g := &fakeGPU{Provider: hm, im: hm, allocs: f, dev: dev, live: map[memory.BufferID]bool{}, gone: make(chan struct{})}
	f.gpus = append(f.gpus, g)
	return g, nil
}

// imports counts the imports alive over every device.
func (f *fakeAllocs) imports() int {
	f.mu.Lock()
	gpus := f.gpus
	f.mu.Unlock()
	n := 0
	for _, g := range gpus {
		g.mu.Lock()
		n += len(g.live)
		g.mu.Unlock()
	}
	return n
}

// fakeGPU stands in for the GPU provider of one device. Its imports are
// host-memory imports of the allocations' memfds, behind the
// memory.Provider interface only: the engine cannot map them and moves
// bytes with CopyIn and Checksum, as it does into a GPU.
type fakeGPU struct {
	memory.Provider
	im     memory.Importer
	allocs *fakeAllocs
	dev    int

	gone chan struct{} // closed: the "plugin" exited

	mu     sync.Mutex
	live   map[memory.BufferID]bool
	closed bool
}

// Exited is providers.Plugin.Exited.
func (g *fakeGPU) Exited() <-chan struct{} { return g.gone }

func (g *fakeGPU) Name() string { return "fakegpu" }

func (g *fakeGPU) Capabilities() memory.Capabilities {
	return memory.Capabilities{Kind: memory.GPU, Device: fmt.Sprintf("cuda:%d", g.dev)}
}

func (g *fakeGPU) Import(ctx context.Context, d memory.ImportDesc) (memory.Buffer, error) {
	if err := d.Check(); err != nil {
		return memory.Buffer{}, err
	}
	fd := d.FD
	switch d.Kind {
	case memory.ImportCUDAIPC:
		g.allocs.mu.Lock()
		var ok bool
		fd, ok = g.allocs.fds[binary.LittleEndian.Uint64(d.Handle)]
		g.allocs.mu.Unlock()
		if !ok {
			return memory.Buffer{}, fmt.Errorf("fakegpu: import cuda-ipc: cuIpcOpenMemHandle: CUDA_ERROR_INVALID_VALUE (the memory was freed?)")
		}
	case memory.ImportCUDAVMMFD:
	default:
		return memory.Buffer{}, fmt.Errorf("fakegpu: import %s: %w", d.Kind, memory.ErrImportNotSupported)
	}
	b, err := g.im.Import(ctx, memory.ImportDesc{Kind: memory.ImportFD, FD: fd, Offset: d.Offset, Size: d.Size})
	if err != nil {
		return b, err
	}
	g.mu.Lock()
	g.live[b.ID] = true
	g.mu.Unlock()
	return b, nil
}

func (g *fakeGPU) Free(ctx context.Context, id memory.BufferID) error {
	g.mu.Lock()
	delete(g.live, id)
	g.mu.Unlock()
	return g.Provider.Free(ctx, id)
}

func (g *fakeGPU) Close() error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	return g.Provider.Close()
}

// newDeviceEnv is an env whose agent imports device memory through
// fakeGPUs. When the test ends, it checks that the agent closed them.
func newDeviceEnv(t *testing.T, g *gate) (*env, *fakeAllocs) {
	f := newFakeAllocs(t)
	t.Cleanup(func() { // runs after the agent's Close
		for _, g := range f.gpus {
			if !g.closed {
				t.Errorf("device %d's provider not closed with the agent", g.dev)
			}
		}
	})
	var send transport.SendTransport // nil, not a nil *gate: TCP
	if g != nil {
		send = g
	}
	return newEnvWith(t, send, func(c *Config) { c.Device = f.device }), f
}

func devReg(kind string, dev int, handle string, off, size int) map[string]any {
	m := map[string]any{"op": "register", "kind": kind, "device": dev, "offset": off, "size": size}
	if handle != "" {
		m["ipc_handle"] = handle
	}
	return m
}

// eventuallyIdle waits until the agent holds no connection, registration
// or read, and the fake devices no import.
func eventuallyIdle(t *testing.T, e *env, f *fakeAllocs) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := e.agent.Stats()
		if st.Conns == 0 && st.Registrations == 0 && st.DeviceRegistrations == 0 && st.Reads == 0 && f.imports() == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent still holds %+v and %d device imports after its applications left", st, f.imports())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Reads into device memory registered by IPC handle and by VMM fd land
// byte-exact at their offsets, through a client of their own (keyed by
// server and provider), and unregistering releases the import.
func TestDeviceMemory(t *testing.T) {
	e, f := newDeviceEnv(t, nil)
	want := e.volume("weights", 3<<20+12345)
	c := e.dial(true)
	handle, _, devMem := f.alloc(4 << 20)
	// A sub-range of the allocation, from an offset that is not aligned.
	const regOff = 4096 + 3
	h1 := c.ok(devReg("cuda-ipc", 0, handle, regOff, 3<<20+20000)).Handle
	_, vfd, vmm := f.alloc(1 << 20)
	h2 := c.ok(devReg("cuda-vmm-fd", 1, "", 0, 1<<20), vfd).Handle
	hostFD, host := memfd(t, 1<<20)
	h3 := c.register(hostFD, len(host))
	if st := e.agent.Stats(); st.Registrations != 3 || st.DeviceRegistrations != 2 || st.Devices != 2 || f.imports() != 2 {
		t.Fatalf("stats after registering: %+v, %d imports", st, f.imports())
	}
	ids := c.ok(map[string]any{"op": "submit", "reads": []any{
		rd(e.server, "weights", 0, int64(len(want)), h1, 7, "ipc"),
		rd(e.server, "weights", 100, 5000, h1, 3<<20+15000, "ipc tail"),
		rd(e.server, "weights", 1<<20, 1<<20-1, h2, 1, "vmm"),
		rd(e.server, "weights", 5, 1000, h3, 0, "host"),
	}}).IDs
	comps := c.waitAll(ids)
	for _, id := range ids {
		cp := comps[id]
		if cp.State != "done" || cp.Error != nil || !cp.Verified || cp.Transport == nil || *cp.Transport != "tcp" || cp.FallbackReason != nil || cp.Start == "" {
			t.Errorf("completion %+v", cp)
		}
	}
	if !bytes.Equal(devMem[regOff+7:regOff+7+len(want)], want) {
		t.Error("device memory registered by IPC handle does not hold the volume at its offsets")
	}
	if !bytes.Equal(devMem[regOff+3<<20+15000:regOff+3<<20+20000], want[100:5100]) {
		t.Error("the tail read is not at its dst_offset")
	}
	if !bytes.Equal(devMem[:regOff+7], make([]byte, regOff+7)) {
		t.Error("bytes before the registered range changed")
	}
	if !bytes.Equal(vmm[1:1<<20], want[1<<20:2<<20-1]) || vmm[0] != 0 {
		t.Error("device memory registered by VMM fd does not hold the volume at its offset")
	}
	if !bytes.Equal(host[:1000], want[5:1005]) {
		t.Error("host memory does not hold the volume")
	}
	if st := e.agent.Stats(); st.Servers != 3 {
		t.Errorf("%d clients, want 3: one per server and provider", st.Servers)
	}
	if n := memfdFDs(t); n != 3 {
		t.Errorf("%d fds of the test memfds open, want the test's own 3: the agent kept a passed fd", n)
	}
	// Unregister releases the import.
	if r := c.ok(map[string]any{"op": "unregister", "handle": h1}); r.Cancelled != 0 {
		t.Errorf("unregister: %s", r.Raw)
	}
	if st := e.agent.Stats(); st.DeviceRegistrations != 1 || f.imports() != 1 {
		t.Errorf("after unregister: %+v, %d imports; want 1 of each", st, f.imports())
	}
	// A second registration on a loaded device does not load it again.
	c.ok(devReg("cuda-ipc", 0, handle, 0, 4096))
	if f.loads[0] != 1 || f.loads[1] != 1 {
		t.Errorf("device providers loaded %v times, want once each", f.loads)
	}
	c.c.Close()
	eventuallyIdle(t, e, f)
}

// Bad device registrations are refused with their codes, hold nothing, and
// leave the connection and the others served.
func TestDeviceRefusals(t *testing.T) {
	e, f := newDeviceEnv(t, nil)
	want := e.volume("v", 64<<10)
	other := e.dial(true)
	c := e.dial(true)
	handle, fd, mem := f.alloc(1 << 20)
	for _, tc := range []struct {
		name string
		msg  map[string]any
		fds  []int
		code string
		says string
	}{
		{"malformed hex", devReg("cuda-ipc", 0, strings.Repeat("zz", IPCHandleSize), 0, 4096), nil, CodeBadMessage, "not hex"},
		{"short handle", devReg("cuda-ipc", 0, "abcd", 0, 4096), nil, CodeBadMessage, "128 hex digits"},
		{"no handle", devReg("cuda-ipc", 0, "", 0, 4096), nil, CodeBadMessage, "ipc_handle"},
		{"no device", map[string]any{"op": "register", "kind": "cuda-ipc", "ipc_handle": handle, "size": 4096}, nil, CodeBadMessage, "no device"},
		{"negative device", devReg("cuda-ipc", -1, handle, 0, 4096), nil, CodeBadMessage, "device -1"},
		{"device with fd kind", devReg("fd", 0, "", 0, 4096), []int{fd}, CodeBadMessage, "device applies"},
		{"handle with vmm kind", devReg("cuda-vmm-fd", 0, handle, 0, 4096), []int{fd}, CodeBadMessage, "ipc_handle applies"},
		{"fd with cuda-ipc", devReg("cuda-ipc", 0, handle, 0, 4096), []int{fd}, CodeUnexpectedFD, "want 0"},
		{"vmm without fd", devReg("cuda-vmm-fd", 0, "", 0, 4096), nil, CodeUnexpectedFD, "want 1"},
		{"unknown kind", map[string]any{"op": "register", "kind": "nvme", "size": 4096}, []int{fd}, CodeBadMessage, "unknown kind"},
		{"unknown device", devReg("cuda-ipc", 7, handle, 0, 4096), nil, CodeDevice, "no CUDA device 7"},
		{"past the allocation", devReg("cuda-ipc", 0, handle, 4096, 1<<20), nil, "out-of-range", ""},
		{"dmabuf", map[string]any{"op": "register", "kind": "dmabuf", "size": 4096}, []int{fd}, CodeNotSupported, ""},
	} {
		r := c.call(tc.msg, tc.fds...)
		if r.OK || r.Error == nil || r.Error.Code != tc.code || !strings.Contains(r.Error.Message, tc.says) {
			t.Errorf("%s: reply %s, want error %s saying %q", tc.name, r.Raw, tc.code, tc.says)
		}
	}
	// Freed memory: its handle is refused.
	freed, _, _ := f.alloc(4096)
	f.free(freed)
	if r := c.refused(CodeImport, devReg("cuda-ipc", 0, freed, 0, 4096)); !strings.Contains(r.Error.Message, "freed") {
		t.Errorf("freed memory refused with %q", r.Error.Message)
	}
	if st := e.agent.Stats(); st.Registrations != 0 || f.imports() != 0 || f.loads[7] != 0 {
		t.Errorf("refused registrations hold %+v, %d imports, loads %v", st, f.imports(), f.loads)
	}
	if n := memfdFDs(t); n != 2 {
		t.Errorf("%d fds of the test memfds open, want the test's own 2: the agent kept a refused fd", n)
	}
	// Both connections still serve, into device memory too.
	for _, cl := range []*client{c, other} {
		h := cl.ok(devReg("cuda-ipc", 0, handle, 0, 1<<20)).Handle
		ids := cl.ok(map[string]any{"op": "submit", "reads": []any{rd(e.server, "v", 0, int64(len(want)), h, 0, "")}}).IDs
		if cp := cl.waitAll(ids)[ids[0]]; cp.State != "done" || !bytes.Equal(mem[:len(want)], want) {
			t.Errorf("read after refusals: %+v", cp)
		}
		cl.refused("out-of-range", map[string]any{"op": "submit", "reads": []any{rd(e.server, "v", 0, 10, h, 1<<20-5, "")}})
		cl.ok(map[string]any{"op": "unregister", "handle": h})
	}
}

// An agent without device memory refuses it, saying so.
func TestDeviceMemoryOff(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(true)
	r := c.refused(CodeDevice, devReg("cuda-ipc", 0, strings.Repeat("00", IPCHandleSize), 0, 4096))
	if !strings.Contains(r.Error.Message, "without device memory") {
		t.Errorf("refusal %q does not say why", r.Error.Message)
	}
}

// An application that disconnects mid-read into device memory has its
// read cancelled and its imports released once the engine stopped writing.
func TestDeviceDisconnectMidRead(t *testing.T) {
	g := newGate("held")
	t.Cleanup(g.openAll)
	e, f := newDeviceEnv(t, g)
	e.volume("held", 4<<20)
	c := e.dial(true)
	handle, _, _ := f.alloc(4 << 20)
	h := c.ok(devReg("cuda-ipc", 0, handle, 0, 4<<20)).Handle
	_, vfd, _ := f.alloc(1 << 20)
	c.ok(devReg("cuda-vmm-fd", 0, "", 0, 1<<20), vfd)
	c.ok(map[string]any{"op": "submit", "reads": []any{rd(e.server, "held", 0, 4<<20, h, 0, "")}})
	<-g.held // in flight
	if st := e.agent.Stats(); st.DeviceRegistrations != 2 || st.Reads != 1 || f.imports() != 2 {
		t.Fatalf("before the disconnect: %+v, %d imports", st, f.imports())
	}
	c.c.Close()
	g.open("held")
	eventuallyIdle(t, e, f)
	if n := memfdFDs(t); n != 2 {
		t.Errorf("%d fds of the test memfds open, want the test's own 2", n)
	}
}

// A device provider whose plugin exited is started again on the next
// registration on its device.
func TestDeviceProviderRestarted(t *testing.T) {
	e, f := newDeviceEnv(t, nil)
	want := e.volume("v", 64<<10)
	c := e.dial(true)
	handle, _, mem := f.alloc(1 << 20)
	c.ok(devReg("cuda-ipc", 0, handle, 0, 4096))
	close(f.gpus[0].gone)
	h := c.ok(devReg("cuda-ipc", 0, handle, 0, 1<<20)).Handle
	if f.loads[0] != 2 || !f.gpus[0].closed || f.gpus[1].closed {
		t.Fatalf("device 0 loaded %d times (want 2), the exited provider closed %v, the new one %v", f.loads[0], f.gpus[0].closed, f.gpus[1].closed)
	}
	ids := c.ok(map[string]any{"op": "submit", "reads": []any{rd(e.server, "v", 0, int64(len(want)), h, 0, "")}}).IDs
	if cp := c.waitAll(ids)[ids[0]]; cp.State != "done" || !bytes.Equal(mem[:len(want)], want) {
		t.Errorf("read through the restarted provider: %+v", cp)
	}
}
