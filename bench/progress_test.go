package bench

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeClock is a manual clock for SweepProgress.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestSweepProgressPlain(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	var out bytes.Buffer
	p := NewSweepProgress(&out, 4, clk.now)
	if p.Drawn() {
		t.Fatal("a bytes.Buffer is not a terminal: no bar")
	}
	steps := []struct {
		after time.Duration
		want  string
	}{
		{0, "cell 1 of 4, 0s elapsed"},
		{30 * time.Second, "cell 2 of 4, 30s elapsed, about 1m30s left"},
		{90 * time.Second, "cell 3 of 4, 2m00s elapsed, about 2m00s left"},
		{58 * time.Minute, "cell 4 of 4, 1h00m elapsed, about 20m left"},
		{10 * time.Second, "cell 4 of 4, 1h00m elapsed"},
	}
	for i, s := range steps {
		clk.advance(s.after)
		if i > 0 {
			p.Done()
		}
		if got := p.Status(); got != s.want {
			t.Errorf("after %d cells: %q, want %q", i, got, s.want)
		}
	}
	p.Printf("table %s\n", "4.8")
	p.Finish()
	if out.String() != "table 4.8\n" {
		t.Errorf("plain output %q: want the lines as written and nothing else", out.String())
	}
	var nilP *SweepProgress
	nilP.Done()
	nilP.Printf("x")
	if nilP.Status() != "" || nilP.Drawn() {
		t.Error("nil SweepProgress must do nothing")
	}
}

// TestSweepProgressTerminal draws on a pseudo-terminal: the bar carries the status and
// the run's own lines come through.
func TestSweepProgressTerminal(t *testing.T) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("skipping: no pseudo-terminals: %v", err)
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("skipping: unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("skipping: ptsname: %v", err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("skipping: open pts: %v", err)
	}
	got := make(chan string, 1)
	go func() {
		var b bytes.Buffer
		io.Copy(&b, master) // ends with EIO once the slave is closed
		got <- b.String()
	}()
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	p := NewSweepProgress(slave, 3, clk.now)
	if !p.Drawn() {
		t.Fatal("a pseudo-terminal should get a bar")
	}
	clk.advance(20 * time.Second)
	p.Printf("measured cell 1\n")
	p.Done()
	p.Finish()
	slave.Close()
	s := <-got
	for _, want := range []string{"measured cell 1", "cell 2 of 3, 20s elapsed, about 40s left"} {
		if !strings.Contains(s, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, s)
		}
	}
}
