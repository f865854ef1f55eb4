//go:build !linux

package tcp

import (
	"net"

	"github.com/blockxfer/blockxfer/transport"
)

func newSender(conn net.Conn) (transport.Sender, error) { return &copySender{byteWriter{conn}}, nil }
