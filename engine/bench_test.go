package engine_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

var benchSize = flag.Int64("bench.size", 1<<30, "volume size for BenchmarkFetch")

// benchVolume is one random volume shared by the fetch benchmarks.
var benchVolume struct {
	once  sync.Once
	dir   string
	store *catalog.Store
	path  string
	err   error
}

func openBenchVolume(b *testing.B) (*catalog.Store, string) {
	benchVolume.once.Do(func() {
		benchVolume.dir, benchVolume.err = os.MkdirTemp("", "blockxfer-bench")
		if benchVolume.err != nil {
			return
		}
		benchVolume.store, benchVolume.err = catalog.OpenStore(benchVolume.dir, nil)
		if benchVolume.err != nil {
			return
		}
		var v *catalog.Volume
		v, benchVolume.err = benchVolume.store.Create(context.Background(), "bench", *benchSize, 0, catalog.FillRandom)
		if v != nil {
			benchVolume.path = v.Backing
		}
	})
	if benchVolume.err != nil {
		b.Fatal(benchVolume.err)
	}
	return benchVolume.store, benchVolume.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchVolume.dir != "" {
		benchVolume.store.Close()
		os.RemoveAll(benchVolume.dir)
	}
	os.Exit(code)
}

// BenchmarkFetch fetches a whole volume (1 GiB by default, -bench.size)
// over loopback into host memory, beside a raw single-stream TCP copy of the
// same file into a buffer of the same size, measured in the same run.
func BenchmarkFetch(b *testing.B) {
	store, path := openBenchVolume(b)
	b.Run("raw-tcp-1stream", func(b *testing.B) { benchRawTCP(b, path) })
	for _, conns := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("engine-tcp-conns=%d", conns), func(b *testing.B) { benchEngine(b, store, conns) })
	}
}

// benchRawTCP sends the file with sendfile on one connection and reads it
// into one buffer: the same bytes and destination as a fetch, no protocol.
// Like iperf3, it keeps one connection for the whole run; each iteration
// asks for the file with one byte.
func benchRawTCP(b *testing.B, path string) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	size := st.Size()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// The same sendfile(2) sender the engine uses, without a protocol.
		snd, err := (&tcp.Transport{}).NewSender(c)
		if err != nil {
			return
		}
		for one := make([]byte, 1); ; {
			if _, err := c.Read(one); err != nil {
				return
			}
			if err := snd.SendExtent(f, 0, size); err != nil {
				return
			}
		}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	p := hostmem.New()
	defer p.Close()
	buf, err := p.Alloc(context.Background(), size, false)
	if err != nil {
		b.Fatal(err)
	}
	mem, _ := p.Bytes(buf.ID)
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write([]byte{1}); err != nil {
			b.Fatal(err)
		}
		// Read in 128 KiB pieces, iperf3's default length.
		for off := 0; off < len(mem); off += 128 << 10 {
			if _, err := io.ReadFull(c, mem[off:min(off+128<<10, len(mem))]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// benchServe serves store on loopback and returns a session to it with
// conns data connections (0: the default), receiving into host memory from
// the returned provider; all of it ends with the benchmark.
func benchServe(b *testing.B, store *catalog.Store, conns int) (*engine.Session, *hostmem.Provider) {
	srv, err := engine.NewServer(engine.ServerConfig{Key: testKey, Volumes: store, Transport: &tcp.Transport{}})
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	p := hostmem.New()
	b.Cleanup(func() { p.Close() })
	s, err := engine.Dial(context.Background(), l.Addr().String(),
		engine.Config{Key: testKey, Provider: p, Transport: &tcp.Transport{}, DataConns: conns})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s, p
}

func benchEngine(b *testing.B, store *catalog.Store, conns int) {
	s, p := benchServe(b, store, conns)
	buf, err := p.Alloc(context.Background(), *benchSize, false)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(*benchSize)
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Read(context.Background(), "bench", []engine.Range{{0, *benchSize}}, buf); err != nil {
			b.Fatal(err)
		}
	}
}
