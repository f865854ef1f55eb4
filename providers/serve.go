package providers

import (
	"os"

	"github.com/hashicorp/go-hclog"
)

// sideFD is the side socket's fd number in a plugin: the first of
// exec.Cmd.ExtraFiles.
const sideFD = 3

// LogLevelEnv names the environment variable that sets a plugin's log level
// (trace, debug, info, warn, error; default info). Plugin logs go to stderr
// as hclog JSON and the host re-logs them.
const LogLevelEnv = "BLOCKXFER_PROVIDER_LOG"

// ServeConfig configures Serve. A nil *ServeConfig is the zero value.
type ServeConfig struct {
	// Logger is the plugin's logger. Nil: hclog JSON on stderr at the level
	// in LogLevelEnv. It must not write to stdout, which belongs to the
	// go-plugin handshake.
	Logger hclog.Logger
}

// logger returns the configured logger or the default one.
func (c *ServeConfig) logger(name string) hclog.Logger {
	if c != nil && c.Logger != nil {
		return c.Logger
	}
	level := hclog.LevelFromString(os.Getenv(LogLevelEnv))
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      level,
		Output:     os.Stderr,
		JSONFormat: true,
	})
}
