package socks

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// failingConn is a net.Conn whose reads fail (a flow that was reset or timed out) and
// whose writes and Close succeed.
type failingConn struct {
	net.Conn
	closed chan struct{}
}

func (c *failingConn) Read([]byte) (int, error)    { return 0, syscall.ECONNRESET }
func (c *failingConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *failingConn) Close() error {
	select {
	case <-c.closed:
	default:
		close(c.closed)
	}
	return nil
}

// TestRelayErrorEndsBothDirections: when one side fails while the other side is idle
// (a download whose flow died: the client has nothing more to send), the relay must
// close both at once instead of waiting on the idle side forever.
func TestRelayErrorEndsBothDirections(t *testing.T) {
	app, appPeer := net.Pipe() // the application's side; appPeer stays silent
	defer appPeer.Close()
	flow := &failingConn{closed: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- relay(end{c: app, r: app}, end{c: flow, r: flow}, 0, nil, nil) }()
	select {
	case err := <-done:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("relay returned %v, want the flow's reset", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("relay still running 10 s after the flow failed while the application side was idle")
	}
	// The application sees its connection closed.
	appPeer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := appPeer.Read(make([]byte, 1)); err != io.EOF && !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("application side read %v after the relay ended, want EOF/closed", err)
	}
}
