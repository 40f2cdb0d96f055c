package bench

import (
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/sys/unix"
)

// Progress draws a progress bar of counted requests on a terminal, and nothing at all
// when its file is not one (piped or redirected output stays clean). Its methods are
// safe for concurrent use; a nil *Progress does nothing.
type Progress struct {
	bar *progressbar.ProgressBar
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// NewProgress returns a Progress drawing on f for a run of total requests (0 or less:
// unknown, for time-limited runs: a counter instead of a bar), or nil when f is not a
// terminal.
func NewProgress(f *os.File, total int64) *Progress {
	if f == nil || !IsTerminal(f) {
		return nil
	}
	if total <= 0 {
		total = -1
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(f),
		progressbar.OptionSetDescription("requests"),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("req"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		// No ticker goroutine for the unknown-length spinner: redraw on requests only.
		progressbar.OptionSetSpinnerChangeInterval(0),
	)
	return &Progress{bar: bar}
}

// Add counts one request; its signature fits Config.OnRequest.
func (p *Progress) Add(Sample) {
	if p != nil {
		p.bar.Add64(1)
	}
}

// Finish clears the bar from the terminal.
func (p *Progress) Finish() {
	if p != nil {
		p.bar.Finish()
		p.bar.Exit()
	}
}
