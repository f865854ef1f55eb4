package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// lockHolder returns the process holding a flock on the file at path, from
// /proc/locks (whose lines read "1: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE
// 0 EOF", device numbers in hex), and its command name. ok is false if none
// is found, for example when the holder is in another PID namespace.
func lockHolder(path string) (pid int, comm string, ok bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, "", false
	}
	dev := uint64(st.Dev) // not uint64 on every platform
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), st.Ino)
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0, "", false
	}
	for _, line := range strings.Split(string(locks), "\n") {
		f := strings.Fields(line)
		// Waiters are listed as "1: -> FLOCK ..."; skip them.
		if len(f) < 6 || f[1] != "FLOCK" || f[5] != want {
			continue
		}
		p, err := strconv.Atoi(f[4])
		if err != nil || p <= 0 || p == os.Getpid() {
			continue
		}
		name, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p))
		if err != nil {
			return p, "?", true
		}
		return p, strings.TrimSpace(string(name)), true
	}
	return 0, "", false
}
