package devmem

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHostDmabufSync issues the real DMA_BUF_IOCTL_SYNC on a file that is
// not a dmabuf: the kernel's answer, ENOTTY, shows the request reached the
// ioctl (a dmabuf would accept it) and comes back as an OpError.
func TestHostDmabufSync(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "not-a-dmabuf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := NewDmabufSync(int(f.Fd()))
	for name, call := range map[string]func() error{"BeginWrite": s.BeginWrite, "EndWrite": s.EndWrite} {
		err := call()
		var op *OpError
		if !errors.Is(err, unix.ENOTTY) || !errors.As(err, &op) || op.Subsystem != "devmem" {
			t.Errorf("%s on a regular file: %v, want a devmem OpError wrapping ENOTTY", name, err)
		}
	}
}
