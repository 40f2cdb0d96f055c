package tcp_test

import (
	"crypto/rand"
	"crypto/sha256"
	"io"
	"testing"

	"mpath/tcp"
)

// TestConnPaths: a connection's per-path byte counts add up to what went through it,
// on the sender (Sent) and on the receiver (Received), live and after Close.
func TestConnPaths(t *testing.T) {
	c1, c2, stop, err := enginePipe(t)()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	data := make([]byte, 1<<20)
	rand.Read(data)
	go func() {
		c1.Write(data)
		c1.(*tcp.Conn).CloseWrite()
	}()
	got, err := io.ReadAll(c2)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("received %d bytes, not what was sent", len(got))
	}
	sum := func(ps []tcp.PathBytes) (sent, recv uint64) {
		if len(ps) != 2 || ps[0].Name != "p0" || ps[1].Name != "p1" {
			t.Fatalf("paths %+v", ps)
		}
		for _, p := range ps {
			sent, recv = sent+p.Sent, recv+p.Received
		}
		return sent, recv
	}
	if sent, _ := sum(c1.(*tcp.Conn).Paths()); sent < uint64(len(data)) {
		t.Errorf("sender: %d bytes sent over the paths, wrote %d", sent, len(data))
	}
	if _, recv := sum(c2.(*tcp.Conn).Paths()); recv < uint64(len(data)) {
		t.Errorf("receiver: %d bytes received over the paths, read %d", recv, len(data))
	}
	c1.Close()
	c2.Close()
	if sent, _ := sum(c1.(*tcp.Conn).Paths()); sent < uint64(len(data)) {
		t.Errorf("after close: %d bytes sent over the paths", sent)
	}
}
