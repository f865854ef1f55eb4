//go:build !linux

package hostmem

import (
	"github.com/blockxfer/blockxfer/internal/syserr"
	"github.com/blockxfer/blockxfer/providers/memory"
)

// importKinds: none on this OS.
var importKinds []memory.ImportKind

// MapImport fails: importing by fd is Linux-only here.
func MapImport(d memory.ImportDesc) (mapping, mem []byte, err error) {
	return nil, nil, syserr.NotOnThisOS("hostmem import")
}
