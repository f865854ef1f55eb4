package main

import (
	"strings"
	"testing"

	"github.com/blockxfer/blockxfer/cmd/internal/clitest"
)

// TestManPage: docs/man/blockd.1 is what 'blockd man' prints.
func TestManPage(t *testing.T) {
	clitest.CheckManPage(t, program, "../../docs/man/blockd.1")
}

// TestHelp: help prints the usage, a command's help or a topic on stdout;
// anything else is a usage error. The commands with subcommands list them
// for -h and help.
func TestHelp(t *testing.T) {
	clitest.CheckHelp(t, "blockd", program(), runBlockd)
	for _, tc := range []struct {
		args         []string
		first, lists string
	}{
		{[]string{"volume", "-h"}, "usage: blockd volume COMMAND", "\n  blockd volume create NAME "},
		{[]string{"help", "volume"}, "usage: blockd volume COMMAND", "\n  blockd volume create NAME "},
		{[]string{"catalog", "help"}, "usage: blockd catalog COMMAND", "\n  blockd catalog check [--verify] "},
	} {
		code, stdout, stderr := runBlockd(t, tc.args...)
		if code != 0 || !strings.HasPrefix(stdout, tc.first) || !strings.Contains(stdout, tc.lists) {
			t.Errorf("%q: exit %d\n%s%s", tc.args, code, stdout, stderr)
		}
	}
	if code, _, stderr := runBlockd(t, "help", "volume", "grow"); code != 2 || !strings.Contains(stderr, "want one of create, import") {
		t.Errorf("help volume grow: exit %d\n%s", code, stderr)
	}
}
