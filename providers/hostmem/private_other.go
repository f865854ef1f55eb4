//go:build !linux

package hostmem

import "github.com/blockxfer/blockxfer/internal/syserr"

// mapPrivate fails: host buffers are Linux-only here.
func mapPrivate(size int64) ([]byte, error) {
	return nil, syserr.NotOnThisOS("hostmem private memory")
}
