package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// ErrUsage marks command-line mistakes; ExitCode maps it to status 2.
var ErrUsage = errors.New("bad usage")

// UsageErr marks err as a command-line mistake. It leaves nil and
// flag.ErrHelp alone.
func UsageErr(err error) error {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return &usageError{err}
}

// usageError is a command-line mistake: its message is err's, and it
// matches ErrUsage.
type usageError struct{ err error }

func (e *usageError) Error() string        { return e.err.Error() }
func (e *usageError) Unwrap() error        { return e.err }
func (e *usageError) Is(target error) bool { return target == ErrUsage }

// ExitCode reports err on stderr under prog's name and returns the exit
// status: 0 for success or -h, 2 for bad usage, 1 for any other failure.
// A mistake found parsing a command's arguments (a *FlagError) is followed
// by a line saying to run that command with -h.
func ExitCode(prog string, err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, ErrUsage):
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		// One line and where to look, never the whole usage.
		if fe := (*FlagError)(nil); errors.As(err, &fe) && fe.Cmd != "" {
			fmt.Fprintf(stderr, "run '%s -h' for help\n", fe.Cmd)
		}
		return 2
	}
	fmt.Fprintf(stderr, "%s: %v\n", prog, err)
	return 1
}
