package devmem

import (
	"context"
	"sync"
	"testing"
)

func TestBufferPool(t *testing.T) {
	p, err := NewBufferPool(8192, 10*4096+100, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 10 || p.Free() != 10 || p.BufSize() != 4096 {
		t.Fatalf("Len %d Free %d BufSize %d", p.Len(), p.Free(), p.BufSize())
	}
	c := p.NewCache()
	seen := make(map[uint32]bool)
	var got []Buf
	for {
		b, ok := c.Get()
		if !ok {
			break
		}
		if seen[b.Index] || b.Off != 8192+int64(b.Index)*4096 {
			t.Fatalf("bad buffer %+v", b)
		}
		seen[b.Index] = true
		got = append(got, b)
	}
	if len(got) != 10 || p.Free() != 0 {
		t.Fatalf("got %d buffers, %d free", len(got), p.Free())
	}
	for _, b := range got {
		c.Put(b)
	}
	if c.Cached() != 10 {
		t.Errorf("Cached = %d", c.Cached())
	}
	c.Drain()
	if p.Free() != 10 {
		t.Errorf("Free after Drain = %d", p.Free())
	}
	if _, err := NewBufferPool(0, 100, 4096); err == nil {
		t.Error("pool smaller than one buffer accepted")
	}
}

func TestBufferPoolSpillAndShare(t *testing.T) {
	p, _ := NewBufferPool(0, 1000*4096, 4096)
	a, b := p.NewCache(), p.NewCache()
	var held []Buf
	for i := 0; i < 1000; i++ {
		x, ok := a.Get()
		if !ok {
			t.Fatalf("Get %d failed", i)
		}
		held = append(held, x)
	}
	if _, ok := b.Get(); ok {
		t.Fatal("second cache got a buffer from an empty pool")
	}
	// Returning more than a cache holds spills to the ring.
	for _, x := range held {
		a.Put(x)
	}
	if a.Cached() > poolCacheSize || p.Free()+a.Cached() != 1000 {
		t.Fatalf("cached %d free %d", a.Cached(), p.Free())
	}
	if _, ok := b.Get(); !ok {
		t.Fatal("spilled buffers not visible to another cache")
	}
}

func TestBufferPoolWait(t *testing.T) {
	p, _ := NewBufferPool(0, 4096, 4096)
	c := p.NewCache()
	x, _ := c.Get()
	var wg sync.WaitGroup
	wg.Add(1)
	started := make(chan struct{})
	go func() {
		defer wg.Done()
		close(started)
		if err := p.Wait(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	<-started
	c.Put(x)
	c.Drain()
	wg.Wait()

	y, _ := c.Get()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Wait(ctx); err != context.Canceled {
		t.Errorf("Wait on cancelled ctx = %v", err)
	}
	c.Put(y)
}

func BenchmarkPoolGetPut(b *testing.B) {
	p, _ := NewBufferPool(0, 1024*65536, 65536)
	c := p.NewCache()
	b.ReportAllocs()
	for b.Loop() {
		x, ok := c.Get()
		if !ok {
			b.Fatal("empty")
		}
		c.Put(x)
	}
}
