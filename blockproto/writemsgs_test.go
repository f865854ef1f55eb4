package blockproto

import (
	"bytes"
	"errors"
	"testing"
)

// TestConnWriteMsgs: WriteMsgs writes every frame in one Write, in order,
// each as WriteMsg would; one message that does not encode writes nothing;
// no messages write nothing.
func TestConnWriteMsgs(t *testing.T) {
	rec := &recorder{}
	c := NewConn(rw{bytes.NewReader(nil), rec})
	var ms []Msg
	var want []byte
	for _, s := range samples()[:8] {
		ms = append(ms, s.msg)
		want = append(want, frames(t, s.msg)...)
	}
	if err := c.WriteMsgs(ms); err != nil {
		t.Fatal(err)
	}
	if len(rec.writes) != 1 || !bytes.Equal(rec.writes[0], want) {
		t.Fatalf("%d writes; want one write of the %d frames back to back", len(rec.writes), len(ms))
	}
	if err := c.WriteMsgs([]Msg{&Ping{Seq: 1}, &Read{ID: 1, Volume: "v"}}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("WriteMsgs with a zero-length Read = %v, want ErrMalformed", err)
	}
	if err := c.WriteMsgs(nil); err != nil || len(rec.writes) != 1 {
		t.Fatalf("after an invalid batch and an empty one: %v, %d writes; want nil and still 1", err, len(rec.writes))
	}
	// A read back gets the frames in order.
	r := NewConn(rw{bytes.NewReader(rec.writes[0]), &recorder{}})
	for i, m := range ms {
		got, err := r.ReadMsg()
		if err != nil || !equalMsg(got, m) {
			t.Fatalf("frame %d: %+v, %v; want %+v", i, got, err, m)
		}
	}
}
