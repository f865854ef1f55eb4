//go:build !linux

package tcp

import (
	"net"

	"github.com/blockxfer/blockxfer/engine"
)

func newSender(conn net.Conn) (engine.Sender, error) { return &copySender{conn: conn}, nil }
