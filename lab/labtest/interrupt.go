package labtest

import (
	"bufio"
	"bytes"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// Interrupt runs cmd, sends it SIGINT as soon as a line of its standard output contains
// marker (the command has reached the stage the test wants to interrupt), and waits
// for it. It returns what the command printed and Wait's error; the test fails at once
// if the marker never appeared.
func Interrupt(t testing.TB, cmd *exec.Cmd, marker string) (stdout, stderr string, err error) {
	t.Helper()
	var errBuf bytes.Buffer
	cmd.Stderr = &errBuf
	pipe, perr := cmd.StdoutPipe()
	if perr != nil {
		t.Fatal(perr)
	}
	if serr := cmd.Start(); serr != nil {
		t.Fatal(serr)
	}
	var out strings.Builder
	sc := bufio.NewScanner(pipe)
	signalled := false
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if !signalled && strings.Contains(sc.Text(), marker) {
			if serr := cmd.Process.Signal(syscall.SIGINT); serr != nil {
				t.Fatal(serr)
			}
			signalled = true
		}
	}
	_, _ = io.Copy(io.Discard, pipe)
	err = cmd.Wait()
	t.Logf("output:\n%s\nstderr:\n%s", out.String(), errBuf.String())
	if !signalled {
		t.Fatalf("the command never printed a line containing %q", marker)
	}
	return out.String(), errBuf.String(), err
}
