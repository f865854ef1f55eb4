package engine_test

import (
	"context"
	"fmt"
	"log"

	"github.com/blockxfer/blockxfer/engine"
	"github.com/blockxfer/blockxfer/providers/hostmem"
	"github.com/blockxfer/blockxfer/providers/memory"
	"github.com/blockxfer/blockxfer/transport/tcp"
)

// Fetch a whole volume into host memory and report how it travelled.
func ExampleSession_Read() {
	ctx := context.Background()
	p := hostmem.New()
	defer p.Close()
	s, err := engine.Dial(ctx, "storage1:7070", engine.Config{
		Key:       []byte("the pre-shared key from blockd keygen"),
		Provider:  p,
		Transport: &tcp.Transport{},
		Verify:    engine.VerifyRequire,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	vol, err := s.Stat(ctx, "weights")
	if err != nil {
		log.Fatal(err)
	}
	buf, err := p.Alloc(ctx, int64(vol.Size), false)
	if err != nil {
		log.Fatal(err)
	}
	res, err := s.Read(ctx, "weights", []engine.Range{{Offset: 0, Length: int64(vol.Size)}}, buf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d bytes in %s over %s\n", res[0].Bytes, res[0].Duration(), res[0].Transport)
}

// Keep several reads in flight and collect them as they finish.
func ExampleSession_Submit() {
	var s *engine.Session // from engine.Dial
	var buf memory.Buffer // from Provider.Alloc, 64 MiB
	ctx, cancel := context.WithTimeout(context.Background(), 30e9)
	defer cancel()
	reqs := make([]engine.Request, 4)
	for i := range reqs {
		off := int64(i) * 16 << 20
		reqs[i] = engine.Request{Volume: "weights", Offset: off, Length: 16 << 20, Dst: buf, DstOff: off}
	}
	for _, h := range s.Submit(ctx, reqs) {
		<-h.Done()
		r := h.Result()
		fmt.Println(r.State, r.Bytes, r.Err)
	}
}
