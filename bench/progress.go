package bench

import (
	"fmt"
	"io"
	"os"
	"sync"
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

// SweepProgress reports how far a long run of measurements (a lab sweep) has got:
// "cell k of N", the time elapsed and an estimate of the time left (the mean time per
// finished cell so far, times the cells left). On a terminal it keeps a bar on the last
// line, redrawn after each cell, with the run's own output scrolling above it; anywhere
// else (a pipe, a log file) it draws nothing and Status is meant to prefix the run's
// plain lines. Its methods are safe for concurrent use; a nil *SweepProgress does
// nothing and its Status is "".
type SweepProgress struct {
	mu    sync.Mutex // guards the fields below and the writes to w
	w     io.Writer
	bar   *progressbar.ProgressBar // nil: plain lines
	total int
	done  int
	start time.Time
	now   func() time.Time
}

// NewSweepProgress starts counting total cells at now(). The bar is drawn when w is a
// terminal (*os.File); now is time.Now outside tests.
func NewSweepProgress(w io.Writer, total int, now func() time.Time) *SweepProgress {
	p := &SweepProgress{w: w, total: total, now: now, start: now()}
	if f, ok := w.(*os.File); ok && IsTerminal(f) {
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(f),
			progressbar.OptionSetWidth(30),
			progressbar.OptionSetDescription(p.statusLocked()),
			progressbar.OptionShowDescriptionAtLineEnd(),
			progressbar.OptionSetRenderBlankState(true),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionThrottle(0),
			progressbar.OptionSetSpinnerChangeInterval(0),
		)
	}
	return p
}

// Printf writes the run's own output; on a terminal the bar is lifted out of the way
// and drawn again below it.
func (p *SweepProgress) Printf(format string, a ...any) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar == nil {
		fmt.Fprintf(p.w, format, a...)
		return
	}
	p.bar.Clear()
	fmt.Fprintf(p.w, format, a...)
	p.bar.RenderBlank()
}

// Done counts one finished cell.
func (p *SweepProgress) Done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done++
	if p.bar != nil {
		p.bar.Describe(p.statusLocked())
		p.bar.Add(1)
	}
}

// Status reads "cell k of N, 3m12s elapsed, about 10m left", k being the cell now
// running (the one after the last Done).
func (p *SweepProgress) Status() string {
	if p == nil {
		return ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.statusLocked()
}

func (p *SweepProgress) statusLocked() string {
	elapsed := p.now().Sub(p.start)
	k := min(p.done+1, p.total)
	s := fmt.Sprintf("cell %d of %d, %s elapsed", k, p.total, roundDuration(elapsed))
	if p.done > 0 && p.done < p.total {
		left := elapsed / time.Duration(p.done) * time.Duration(p.total-p.done)
		s += ", about " + roundDuration(left) + " left"
	}
	return s
}

// Drawn reports whether the progress is drawn as a bar (on a terminal), so the run's
// lines need no Status of their own.
func (p *SweepProgress) Drawn() bool { return p != nil && p.bar != nil }

// Finish removes the bar from the terminal.
func (p *SweepProgress) Finish() {
	if p == nil || p.bar == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bar.Clear()
	p.bar.Exit()
}

// roundDuration prints d to the second below ten minutes and to the minute above
// ("4m07s", "1h12m").
func roundDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second).Seconds()))
	case d < 10*time.Minute:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	default:
		d = d.Round(time.Minute)
		if d < time.Hour {
			return fmt.Sprintf("%dm", int(d/time.Minute))
		}
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
}
