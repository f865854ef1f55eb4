package agent

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// peer is who is on the other end of a connection (SO_PEERCRED).
type peer struct {
	pid      int32
	uid, gid uint32
}

// peerOf reads the peer's credentials, as the kernel recorded them when
// it connected.
func peerOf(uc *net.UnixConn) (peer, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return peer{}, err
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peer{}, err
	}
	if serr != nil {
		return peer{}, fmt.Errorf("agent: %w", os.NewSyscallError("getsockopt SO_PEERCRED", serr))
	}
	return peer{pid: cred.Pid, uid: cred.Uid, gid: cred.Gid}, nil
}
