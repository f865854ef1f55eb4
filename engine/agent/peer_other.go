//go:build !linux

package agent

import (
	"net"

	"github.com/blockxfer/blockxfer/internal/syserr"
)

// peer is who is on the other end of a connection (SO_PEERCRED).
type peer struct {
	pid      int32
	uid, gid uint32
}

// peerOf fails: SO_PEERCRED is Linux-only, and so is the agent.
func peerOf(uc *net.UnixConn) (peer, error) {
	return peer{}, syserr.NotOnThisOS("agent peer credentials")
}
