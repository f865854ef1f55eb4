//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package catalog

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockFile takes the exclusive flock bbolt takes for a read-write open of
// the database at path, without waiting, and returns its release. It fails
// with ErrLocked if another open holds a lock on it.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
