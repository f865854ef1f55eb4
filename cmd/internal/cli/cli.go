// Package cli holds what blockd and blockcat share: key files, byte sizes,
// flag parsing with flags after positional arguments, and logging.
package cli

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/blockxfer/blockxfer/catalog"
)

// KeyLen is the length of a generated pre-shared key in bytes.
const KeyLen = 32

// KeyEnv names the environment variable that may give the key file's path.
const KeyEnv = "BLOCKXFER_KEY_FILE"

// NewKey returns a random key, hex-encoded with a trailing newline, as
// written to key files.
func NewKey() ([]byte, error) {
	k := make([]byte, KeyLen)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return []byte(hex.EncodeToString(k) + "\n"), nil
}

// WriteKeyFile writes a new key to path with mode 0600; it refuses to
// overwrite an existing file.
func WriteKeyFile(path string) error {
	k, err := NewKey()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	if _, err := f.Write(k); err != nil {
		f.Close()
		return fmt.Errorf("write key: %w", err)
	}
	return f.Close()
}

// LoadKey reads a key file as written by WriteKeyFile (`blockd keygen`): hex
// digits, surrounding whitespace ignored, decoding to at least 16 bytes. An
// empty path falls back to $BLOCKXFER_KEY_FILE.
//
// Like ssh with a private key, it refuses a key file that is not a regular
// file, or that its group or others may read or write (mode & 0o077 != 0),
// and the message says how to fix the mode.
func LoadKey(path string) ([]byte, error) {
	if path == "" {
		path = os.Getenv(KeyEnv)
	}
	if path == "" {
		return nil, fmt.Errorf("no key: pass --key-file or set %s (create one with 'blockd keygen -o FILE')", KeyEnv)
	}
	// Stat before opening, so that a FIFO is refused instead of blocking
	// the open; the open file is checked again below.
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	if err := checkKeyMode(path, st); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	defer f.Close()
	if st, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	if err := checkKeyMode(path, st); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<16))
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("key file %s: not hex: %w", path, err)
	}
	if len(k) < 16 {
		return nil, fmt.Errorf("key file %s: key has %d bytes, need at least 16", path, len(k))
	}
	return k, nil
}

// checkKeyMode refuses a key file that is not a regular file or that others
// than its owner may access.
func checkKeyMode(path string, st os.FileInfo) error {
	m := st.Mode()
	if !m.IsRegular() {
		return fmt.Errorf("key file %s is not a regular file (%s): give the path of the file 'blockd keygen' wrote", path, catalog.FileKind(m))
	}
	if runtime.GOOS == "windows" {
		return nil // no Unix permission bits
	}
	if perm := m.Perm(); perm&0o077 != 0 {
		how := "readable"
		if perm&0o044 == 0 {
			how = "writable"
		}
		return fmt.Errorf("key file %s is %s by others (mode %04o): run 'chmod 600 %s'", path, how, perm, ShellQuote(path))
	}
	return nil
}

var units = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

// wantSize says what a byte count looks like.
const wantSize = "want a byte count such as 4096, 64KiB or 1GiB"

// ParseSize parses a byte count such as "4096", "64KiB", "256M" or "1GiB"
// (single-letter suffixes are binary).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q: %s", s, wantSize)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q too large", s)
	}
	return n * mult, nil
}

// FormatBytes renders n in binary units, e.g. "256.0 MiB".
func FormatBytes(n float64) string {
	const k = 1024
	for _, u := range []string{"B", "KiB", "MiB", "GiB", "TiB"} {
		if math.Abs(n) < k || u == "TiB" {
			if u == "B" {
				return fmt.Sprintf("%.0f B", n)
			}
			return fmt.Sprintf("%.1f %s", n, u)
		}
		n /= k
	}
	return ""
}

// FormatSize renders a byte count as a size flag takes it, exactly: in the
// largest binary unit that divides it ("64MiB", "4KiB"), else in bytes
// ("1000"), so that -h shows defaults as they are written.
func FormatSize(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// SizeFlag is a flag.Value holding a byte count parsed with ParseSize.
type SizeFlag int64

// String implements flag.Value: the size as FormatSize writes it, so that
// -h shows a default of 64 MiB as 64MiB.
func (s *SizeFlag) String() string {
	if s == nil {
		return "0"
	}
	return FormatSize(int64(*s))
}

// Set implements flag.Value. Its error says what value the flag wants;
// the caller names the flag and the value.
func (s *SizeFlag) Set(v string) error {
	n, err := ParseSize(v)
	*s = SizeFlag(n)
	if err != nil {
		if strings.Contains(err.Error(), "too large") {
			return errors.New("too large")
		}
		return errors.New(wantSize)
	}
	return nil
}

// Parse parses args with fs, allowing flags after positional arguments, and
// returns the positional arguments. want is the number of positional
// arguments required.
//
// usage is the command's synopsis after its name, such as
// "SERVER VOLUME [--json]", optionally followed by a blank line and
// paragraphs about the command. Errors name the synopsis; -h (which wins
// over any other mistake on the command line) prints the synopsis, the
// paragraphs and the flags (WriteHelp), as do `PROG help COMMAND` and the
// man page.
func Parse(fs *flag.FlagSet, args []string, want int, usage string) ([]string, error) {
	return ParseRange(fs, args, want, want, usage)
}

// ParseRange is Parse for commands taking between lo and hi positional
// arguments.
func ParseRange(fs *flag.FlagSet, args []string, lo, hi int, usage string) ([]string, error) {
	if len(args) == 1 && args[0] == describeArg {
		return nil, &describedError{fs: fs, usage: usage} // see DescribeFlags
	}
	if helpRequested(fs, args) {
		PrintUsage(fs, usage)
		return nil, flag.ErrHelp
	}
	var pos []string
	for {
		// A mistake is one *FlagError; the flag package prints nothing.
		if err := parseFlags(fs, args, usage); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) < lo || len(pos) > hi {
		return nil, &FlagError{Cmd: fs.Name(), Err: fmt.Errorf("usage: %s", Synopsis(fs, usage))}
	}
	return pos, nil
}

// NewLogger returns a slog logger writing to w in "text" or "json" format
// at the given level ("debug", "info", "warn", "error").
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad log level %q", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	w = barSafe{w} // a log line never shares a progress bar's line
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("bad log format %q: want text or json", format)
}

// SplitList splits a comma-separated list such as --peers, trimming spaces
// and dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// ShellQuote quotes s for a POSIX shell if it needs quoting, so that a
// command put in a message can be pasted as it is.
func ShellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+=:,@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// WriteJSON writes v to w as indented JSON, as the commands' --json does.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
