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
	return fmt.Errorf("%w: %w", ErrUsage, err)
}

// ExitCode reports err on stderr under prog's name and returns the exit
// status: 0 for success or -h, 2 for bad usage, 1 for any other failure.
func ExitCode(prog string, err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, ErrUsage):
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 2
	}
	fmt.Fprintf(stderr, "%s: %v\n", prog, err)
	return 1
}
