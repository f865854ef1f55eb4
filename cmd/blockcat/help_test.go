package main

import (
	"strings"
	"testing"

	"github.com/blockxfer/blockxfer/cmd/internal/clitest"
)

// TestManPage: docs/man/blockcat.1 is what 'blockcat man' prints.
func TestManPage(t *testing.T) {
	clitest.CheckManPage(t, program, "../../docs/man/blockcat.1")
}

// TestHelp: help prints the usage, a command's help or a topic on stdout;
// anything else is a usage error.
func TestHelp(t *testing.T) {
	clitest.CheckHelp(t, "blockcat", program(), runBlockcat)
	// get's help shows both of its forms, and so does get -h.
	_, stdout, _ := runBlockcat(t, "help", "get")
	_, _, stderr := runBlockcat(t, "get", "-h")
	for _, h := range []string{stdout, stderr} {
		for _, want := range []string{"usage: blockcat get SERVER VOLUME", "usage: blockcat get (--manifest FILE", "--shard-timeout", "--window size"} {
			if !strings.Contains(h, want) {
				t.Errorf("get's help lacks %q:\n%s", want, h)
			}
		}
	}
}
