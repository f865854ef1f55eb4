// Package fdpass moves file descriptors between the engine and a provider
// plugin over a side SOCK_SEQPACKET socketpair, one SCM_RIGHTS record per fd.
//
// A record is 16 bytes — magic "BXFD", a Kind and a 64-bit tag — plus exactly
// one fd in an SCM_RIGHTS control message. SOCK_SEQPACKET keeps each record
// and its fd together. The tag correlates the fd with a gRPC call: for
// KindDmabuf it is the Allocate request id, for KindStaging the staging id.
//
// Receiving is hardened like runc's RecvFile: MSG_CMSG_CLOEXEC, MSG_CTRUNC
// rejected, every SCM_RIGHTS message parsed and every fd of a bad record
// closed. A Conn only accepts records of one Kind.
package fdpass

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/blockxfer/blockxfer/internal/syserr"
)

// Kind says what a record's fd is.
type Kind uint32

// Record kinds.
const (
	// KindDmabuf: plugin to host, a buffer's dmabuf fd tagged with the
	// Allocate request id.
	KindDmabuf Kind = 1
	// KindStaging: host to plugin, a staging memfd tagged with its staging id.
	KindStaging Kind = 2
)

// String names the kind.
func (k Kind) String() string {
	switch k {
	case KindDmabuf:
		return "dmabuf"
	case KindStaging:
		return "staging"
	}
	return fmt.Sprintf("kind(%d)", uint32(k))
}

// Errors.
var (
	// ErrClosed: the Conn was closed, or its peer closed the other end.
	ErrClosed = errors.New("fdpass: connection closed")
	// ErrNotSupported: fd passing is Linux-only here. It is
	// syserr.ErrNotSupported, named for this package.
	ErrNotSupported = syserr.NotOnThisOS("fdpass")
)

// RecordSize is the size of a record's data part.
const RecordSize = 16

// magic starts every record.
var magic = [4]byte{'B', 'X', 'F', 'D'}

// encodeRecord writes a record header.
func encodeRecord(b *[RecordSize]byte, kind Kind, tag uint64) {
	copy(b[0:4], magic[:])
	binary.LittleEndian.PutUint32(b[4:8], uint32(kind))
	binary.LittleEndian.PutUint64(b[8:16], tag)
}

// decodeRecord parses a record header.
func decodeRecord(b []byte) (Kind, uint64, error) {
	if len(b) != RecordSize {
		return 0, 0, fmt.Errorf("fdpass: record of %d bytes, want %d", len(b), RecordSize)
	}
	if [4]byte(b[0:4]) != magic {
		return 0, 0, fmt.Errorf("fdpass: bad record magic %q", b[0:4])
	}
	return Kind(binary.LittleEndian.Uint32(b[4:8])), binary.LittleEndian.Uint64(b[8:16]), nil
}
