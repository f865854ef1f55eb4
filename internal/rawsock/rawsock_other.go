//go:build !linux

package rawsock

// supported is false: Wrap returns connections as they are.
const supported = false

// Read is the wrapped connection's; Wrap never makes a Conn here.
func (c *Conn) Read(p []byte) (int, error) { return c.socket.Read(p) }

// Write is the wrapped connection's; Wrap never makes a Conn here.
func (c *Conn) Write(p []byte) (int, error) { return c.socket.Write(p) }
