// Package choose picks the transport a blockd or blockcat runs with, from
// the --devmem mode and what this machine can do, and says why whenever the
// answer is not devmem (a fallback is never silent).
//
// Modes:
//   - off: plain TCP, no question asked;
//   - auto: devmem when every requirement holds, else TCP with the reason;
//   - require: devmem or an error naming the unmet requirement;
//   - emulate: devmem through the software NIC (transport/devmem.SoftNIC)
//     over ordinary sockets, labelled devmem-emulated everywhere.
//
// Fallback reasons start with a short code (loopback, provider-cannot-export,
// no-udmabuf, no-interface, nic-setup, no-binding) followed by the detail.
package choose

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/blockxfer/blockxfer/providers/memory"
)

// Mode is the --devmem setting.
type Mode string

// The --devmem modes.
const (
	Off     Mode = "off"
	Auto    Mode = "auto"
	Require Mode = "require"
	Emulate Mode = "emulate"
)

// ParseMode parses a --devmem value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Off, Auto, Require, Emulate:
		return m, nil
	}
	return "", fmt.Errorf("bad --devmem %q: want auto, off, require or emulate", s)
}

// ErrUnavailable is returned in require mode when devmem cannot run; the
// error names the reason.
var ErrUnavailable = errors.New("devmem unavailable")

// undoStack holds what a path set up, to be released in reverse order.
type undoStack []func() error

func (u *undoStack) push(f func() error) { *u = append(*u, f) }

// Close runs every undo step, last first, and empties the stack.
func (u *undoStack) Close() error {
	var errs []error
	for i := len(*u) - 1; i >= 0; i-- {
		errs = append(errs, (*u)[i]())
	}
	*u = nil
	return errors.Join(errs...)
}

// fallback is a reason to use TCP instead of devmem, and the error behind
// it when a call failed (a *devmem.OpError keeps the kernel's errno and
// extack).
type fallback struct {
	code, detail string
	err          error
}

func (f *fallback) String() string { return f.code + ": " + f.detail }

func fallbackf(code, format string, args ...any) *fallback {
	return &fallback{code: code, detail: fmt.Sprintf(format, args...)}
}

// fallbackErr is fallbackf for a fallback caused by err, which it keeps.
func fallbackErr(code string, err error, format string, args ...any) *fallback {
	fb := fallbackf(code, format, args...)
	fb.err = err
	return fb
}

// decide turns a devmem attempt into the outcome for mode: the devmem
// transport, TCP with a reason, or (require) an error.
func decide(mode Mode, fb *fallback) (reason string, err error) {
	switch {
	case fb == nil:
		return "", nil
	case mode == Require:
		return "", fmt.Errorf("%w: %s", ErrUnavailable, fb)
	}
	return fb.String(), nil
}

// ifaceFor returns the interface that owns ip.
func ifaceFor(ip net.IP) (*net.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for i := range ifs {
		addrs, err := ifs[i].Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return &ifs[i], nil
			}
		}
	}
	return nil, fmt.Errorf("no interface has address %s", ip)
}

// routeTo returns the local address and interface the kernel would use to
// reach addr. Connecting a UDP socket sends nothing.
func routeTo(addr string) (net.IP, *net.Interface, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	ip := c.LocalAddr().(*net.UDPAddr).IP
	ifc, err := ifaceFor(ip)
	return ip, ifc, err
}

// loopback reports a device that cannot carry devmem: loopback and veth
// skbs are not devmem-capable (Documentation/networking/devmem.rst).
func loopback(ifc *net.Interface) *fallback {
	if ifc.Flags&net.FlagLoopback != 0 {
		return fallbackf("loopback", "%s is a loopback device, which cannot carry devmem", ifc.Name)
	}
	return nil
}

// fdProvider is a provider whose buffers have a mappable fd (hostmem's
// memfds), which the software NIC binds in place of a dmabuf.
type fdProvider interface {
	FD(id memory.BufferID) (int, error)
}

// arenaFD allocates size bytes of p and returns the buffer and an fd the
// software NIC can bind: the exported dmabuf when the provider has one,
// else the buffer's own mappable fd.
func arenaFD(p memory.Provider, alloc func(dmabuf bool) (memory.Buffer, error)) (memory.Buffer, int, error) {
	if p.Capabilities().DmabufExport {
		b, err := alloc(true)
		return b, b.DmabufFD, err
	}
	fp, ok := p.(fdProvider)
	if !ok {
		return memory.Buffer{}, -1, fmt.Errorf("provider %s neither exports dmabufs nor has mappable buffers", p.Name())
	}
	b, err := alloc(false)
	if err != nil {
		return b, -1, err
	}
	fd, err := fp.FD(b.ID)
	return b, fd, err
}

// oneLine flattens an error for a reason string.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }
