package blockproto_test

import (
	"fmt"
	"net"

	"github.com/blockxfer/blockxfer/blockproto"
)

// Example_handshake runs the control-connection handshake between a client
// and a server over an in-memory connection.
func Example_handshake() {
	key := []byte("a pre-shared key of 32 bytes....")
	clientSide, serverSide := net.Pipe()
	defer clientSide.Close()

	go func() { // the server
		defer serverSide.Close()
		if p, err := blockproto.ReadPreamble(serverSide); err != nil || p.Kind != blockproto.KindControl {
			return
		}
		c := blockproto.NewConn(serverSide)
		m, _ := c.ReadMsg()
		hello := m.(*blockproto.Hello)
		nonce, _ := blockproto.NewNonce()
		const session = 7
		c.WriteMsg(&blockproto.Challenge{Caps: blockproto.CapTCP, Nonce: nonce, SessionID: session, Server: "blockd"})
		m, _ = c.ReadMsg()
		want := blockproto.ClientProof(key, hello.Nonce, nonce, session)
		if !blockproto.VerifyProof(m.(*blockproto.Auth).MAC, want) {
			c.WriteMsg(&blockproto.Error{Code: blockproto.CodeAuth, Message: "bad proof"})
			return
		}
		tok, _ := blockproto.NewToken()
		c.WriteMsg(&blockproto.Welcome{
			MAC:    blockproto.ServerProof(key, hello.Nonce, nonce, session),
			Tokens: [][blockproto.TokenLen]byte{tok},
		})
	}()

	// The client.
	blockproto.WriteControlPreamble(clientSide)
	c := blockproto.NewConn(clientSide)
	nonce, _ := blockproto.NewNonce()
	c.WriteMsg(&blockproto.Hello{Caps: blockproto.CapTCP, Nonce: nonce, Client: "example"})
	m, _ := c.ReadMsg()
	ch := m.(*blockproto.Challenge)
	c.WriteMsg(&blockproto.Auth{MAC: blockproto.ClientProof(key, nonce, ch.Nonce, ch.SessionID)})
	m, err := c.ReadMsg()
	if err != nil {
		fmt.Println("handshake:", err)
		return
	}
	if e, ok := m.(*blockproto.Error); ok {
		fmt.Println("refused:", e) // for example "auth: bad proof"
		return
	}
	w := m.(*blockproto.Welcome)
	fmt.Println("server proved the key:", blockproto.VerifyProof(w.MAC, blockproto.ServerProof(key, nonce, ch.Nonce, ch.SessionID)))
	fmt.Println("data connections:", len(w.Tokens))
	// Output:
	// server proved the key: true
	// data connections: 1
}

// ExampleError shows a wire Error used as a Go error.
func ExampleError() {
	var err error = &blockproto.Error{ID: 12, Code: blockproto.CodeNotFound, Message: `no volume "scratch"`}
	fmt.Println(err)
	// Output: not-found: no volume "scratch"
}
