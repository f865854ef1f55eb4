package cli

import (
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Bar is a progress bar drawn on a terminal; elsewhere it draws nothing.
type Bar struct{ pb *progressbar.ProgressBar }

// NewBar returns a bar for total bytes (-1: unknown) described by what.
// It draws only when w is a terminal.
func NewBar(w io.Writer, total int64, what string) *Bar {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return &Bar{}
	}
	return &Bar{pb: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish())}
}

// Progress sets the bar to done of total bytes.
func (b *Bar) Progress(done, total int64) {
	if b.pb == nil {
		return
	}
	if b.pb.GetMax64() != total {
		b.pb.ChangeMax64(total)
	}
	b.pb.Set64(done)
}

// Finish completes the bar, or abandons it when err is set.
func (b *Bar) Finish(err error) {
	if b.pb == nil {
		return
	}
	if err == nil {
		b.pb.Finish()
	} else {
		b.pb.Exit()
	}
}
