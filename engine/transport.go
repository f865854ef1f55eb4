package engine

import (
	"github.com/blockxfer/blockxfer/blockproto"
	"github.com/blockxfer/blockxfer/transport"
)

// transportCaps is what a server announces in its Challenge for the
// transport it sends with.
func transportCaps(name string) blockproto.Caps {
	switch name {
	case transport.Devmem:
		return blockproto.CapTCP | blockproto.CapDevmemTX
	case transport.DevmemEmulated:
		return blockproto.CapTCP | blockproto.CapDevmemTX | blockproto.CapEmulated
	}
	return blockproto.CapTCP
}

// capsTransport names the send transport a server announced.
func capsTransport(c blockproto.Caps) string {
	switch {
	case c&blockproto.CapDevmemTX != 0 && c&blockproto.CapEmulated != 0:
		return transport.DevmemEmulated
	case c&blockproto.CapDevmemTX != 0:
		return transport.Devmem
	}
	return transport.TCP
}

// dataKind is the kind a client declares for a data connection received
// with the transport named name.
func dataKind(name string) blockproto.DataKind {
	switch name {
	case transport.Devmem:
		return blockproto.DataDevmem
	case transport.DevmemEmulated:
		return blockproto.DataDevmemEmulated
	}
	return blockproto.DataPlain
}
