package socks_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mpath/socks"
)

// countingListener counts the bytes the server reads from its accepted conns.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: l.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingConn) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }

func serveCounting(t *testing.T, srv server, n *atomic.Int64) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(countingListener{l, n})
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// A 128 MiB request header is refused (431) and the connection closed after the front
// read well under 1 MiB of it; the front's heap does not grow with it.
func TestHTTPRequestHeadBounded(t *testing.T) {
	checkLeaks(t)
	hs, err := socks.NewHTTPServer(socks.HTTPConfig{Dialer: &fakeDialer{}})
	if err != nil {
		t.Fatal(err)
	}
	var read atomic.Int64
	addr := serveCounting(t, hs, &read)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	const total = 128 << 20
	wrote := make(chan int64, 1)
	go func() {
		var n int64
		w, _ := io.WriteString(c, "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nX-Big: ")
		n += int64(w)
		chunk := bytes.Repeat([]byte{'a'}, 64<<10)
		for n < total {
			w, err := c.Write(chunk)
			n += int64(w)
			if err != nil {
				break
			}
		}
		wrote <- n
	}()
	resp, rerr := io.ReadAll(io.LimitReader(c, 4096))
	n := <-wrote
	// The response may be lost to the reset the close sends over unread bytes: then the
	// read ends in an error; either way the front must have closed (no deadline).
	if errors.Is(rerr, os.ErrDeadlineExceeded) {
		t.Fatalf("front did not close the connection")
	}
	if len(resp) > 0 && !strings.HasPrefix(string(resp), "HTTP/1.1 431 ") {
		t.Errorf("answer %q, want 431", resp)
	}
	if n >= total {
		t.Errorf("the client wrote all %d bytes: the front never closed", n)
	}
	waitFor(t, 5*time.Second, "handler to end", func() bool { return hs.Stats().Active == 0 })
	if got := read.Load(); got >= 1<<20 {
		t.Errorf("front read %d bytes of the head, want < 1 MiB", got)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grow := after.TotalAlloc - before.TotalAlloc; grow >= 8<<20 {
		t.Errorf("allocated %d bytes while refusing the head, want < 8 MiB", grow)
	}
	t.Logf("client wrote %d bytes, front read %d, allocated %d", n, read.Load(), after.TotalAlloc-before.TotalAlloc)
}

// A head just over the bound gets its 431; one just under it is served.
func TestHTTPRequestHeadLimitEdges(t *testing.T) {
	checkLeaks(t)
	rec := &fakeDialer{err: errors.New("no dialing here")}
	hs, err := socks.NewHTTPServer(socks.HTTPConfig{Dialer: rec})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, hs)
	head := func(size int) string {
		h := "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nX-Pad: "
		return h + strings.Repeat("b", size-len(h)-4) + "\r\n\r\n"
	}
	over := exchange(t, addr, []byte(head(socks.MaxRequestHead+8<<10)), false)
	if !bytes.HasPrefix(over, []byte("HTTP/1.1 431 ")) {
		t.Errorf("head of %d bytes: answer %.40q, want 431", socks.MaxRequestHead+8<<10, over)
	}
	if rec.calls.Load() != 0 {
		t.Errorf("an oversized request reached the dialer")
	}
	under := exchange(t, addr, []byte(head(socks.MaxRequestHead-1024)), false)
	if !bytes.HasPrefix(under, []byte("HTTP/1.1 502 ")) || rec.calls.Load() != 1 {
		t.Errorf("head of %d bytes: answer %.40q, dials %d; want it passed on (502 from the failing dialer)", socks.MaxRequestHead-1024, under, rec.calls.Load())
	}
}

// A target whose response head does not end is cut off at MaxResponseHead: 502.
func TestHTTPResponseHeadBounded(t *testing.T) {
	checkLeaks(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var sent atomic.Int64
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: ")
		chunk := bytes.Repeat([]byte{'z'}, 64<<10)
		for sent.Load() < 64<<20 {
			n, err := c.Write(chunk)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	hs, err := socks.NewHTTPServer(socks.HTTPConfig{Dialer: &fakeDialer{}})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, hs)
	got := exchange(t, addr, []byte("GET http://"+l.Addr().String()+"/ HTTP/1.1\r\nHost: x\r\n\r\n"), false)
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 502 ")) {
		t.Errorf("answer %.60q, want 502", got)
	}
	if n := sent.Load(); n >= 64<<20 {
		t.Errorf("the target sent all of its %d-byte head", n)
	}
}
