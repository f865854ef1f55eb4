package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/blockxfer/blockxfer/catalog"
	"github.com/blockxfer/blockxfer/cmd/internal/cli"
)

// catalogError is a catalog error with what the user can do about it.
type catalogError struct {
	msg string
	err error
}

func (e *catalogError) Error() string { return e.msg }
func (e *catalogError) Unwrap() error { return e.err }

// explainCatalog returns err with the fix in its message when it says the
// catalog of the data directory dir is damaged ([catalog.ErrCorrupt]) or
// locked by another process ([catalog.ErrLocked]); other errors, and nil,
// come back unchanged. The commands it names use dir as the user gave it.
func explainCatalog(dir string, err error) error {
	if err == nil {
		return nil
	}
	var ce *catalogError
	if errors.As(err, &ce) {
		return err
	}
	path := filepath.Join(dir, "catalog.db")
	qdir := cli.ShellQuote(dir)
	switch {
	case errors.Is(err, catalog.ErrCorrupt):
		return &catalogError{err: err, msg: fmt.Sprintf(
			"catalog %s is damaged: %s; the volume files are separate and were not touched: run "+
				"'blockd catalog check --data %s' for details, 'blockd catalog recover --data %s' to rebuild it from volumes/, "+
				"or restore a backup", path, errDetail(err, path), qdir, qdir)}
	case errors.Is(err, catalog.ErrLocked):
		holder := "another process"
		if pid, comm, ok := lockHolder(path); ok {
			holder = fmt.Sprintf("process %d (%s)", pid, comm)
		}
		return &catalogError{err: err, msg: fmt.Sprintf(
			"catalog %s is locked by %s: a running 'blockd serve' holds the lock until it stops, and reading "+
				"or rebuilding the catalog behind its back is not safe. Stop that blockd and run this again; "+
				"to add or list volumes without stopping it, use 'blockcat upload ADDR NAME FILE' or 'blockcat ls ADDR'",
			path, holder)}
	}
	return err
}

// errDetail returns err's message without the "catalog: " and "open PATH: "
// prefixes that repeat what the caller's message says.
func errDetail(err error, path string) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "catalog: ")
	if abs, aerr := filepath.Abs(path); aerr == nil {
		msg = strings.TrimPrefix(msg, "open "+abs+": ")
		msg = strings.TrimPrefix(msg, "check "+abs+": ")
	}
	return msg
}

// joined returns the errors err joins (errors.Join), looking through
// wrappers with one cause, or err alone.
func joined(err error) []error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			return j.Unwrap()
		}
	}
	return []error{err}
}
