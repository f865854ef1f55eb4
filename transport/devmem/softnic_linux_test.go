//go:build linux

package devmem

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/blockxfer/blockxfer/transport/devmem/internal/uapi"
)

// openSoft opens the software NIC's socket state for c, closed at cleanup.
func openSoft(t *testing.T, nic *SoftNIC, c net.Conn) *softSocket {
	t.Helper()
	s, err := nic.open(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.close() })
	return s.(*softSocket)
}

// tokenOpt encodes toks as a SO_DEVMEM_DONTNEED option (struct
// dmabuf_token array).
func tokenOpt(toks ...uapi.DmabufToken) []byte {
	b := make([]byte, 0, len(toks)*8)
	for _, t := range toks {
		b = binary.NativeEndian.AppendUint32(b, t.TokenStart)
		b = binary.NativeEndian.AppendUint32(b, t.TokenCount)
	}
	return b
}
