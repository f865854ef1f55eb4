//go:build !linux

package main

// lockHolder is not known outside Linux.
func lockHolder(string) (pid int, comm string, ok bool) { return 0, "", false }
