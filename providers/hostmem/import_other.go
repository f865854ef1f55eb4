//go:build !linux

package hostmem

import (
	"github.com/blockxfer/blockxfer/internal/syserr"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// mapImport fails: importing by fd is Linux-only here.
func mapImport(d memory.ImportDesc) (mapping, mem []byte, err error) {
	return nil, nil, syserr.NotOnThisOS("hostmem import")
}
