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

// One client cannot hold more than MaxConnsPerClient connections.
func TestFrontPerClientLimit(t *testing.T) {
	checkLeaks(t)
	s, addr := newSOCKS(t, socks.SOCKSConfig{Dialer: &fakeDialer{}, MaxConnsPerClient: 2})
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	waitFor(t, 5*time.Second, "two active connections", func() bool { return s.Stats().Active == 2 })
	if got := exchange(t, addr, []byte{5, 1, 0}, false); len(got) != 0 {
		t.Errorf("third connection from the client: got %x, want a close", got)
	}
	if st := s.Stats(); st.OverClientLimit != 1 || st.OverLimit != 0 {
		t.Errorf("stats %+v: want 1 over the per-client limit", st)
	}
	held[0].Close()
	held = held[1:]
	waitFor(t, 5*time.Second, "one active connection", func() bool { return s.Stats().Active == 1 })
	if got := exchange(t, addr, []byte{5, 1, 0}, true); !bytes.Equal(got, []byte{5, 0}) {
		t.Errorf("after one closed: got %x, want the method reply", got)
	}
}

// After a failed RFC 1929 authentication the same client's next attempt is checked
// only after the delay; the failure is on the record before the client hears of it.
func TestSOCKSAuthThrottle(t *testing.T) {
	checkLeaks(t)
	const delay = 300 * time.Millisecond
	s, addr := newSOCKS(t, socks.SOCKSConfig{Dialer: &fakeDialer{}, Users: map[string]string{"u": "right"}, AuthFailDelay: delay})
	attempt := func(pass string) ([]byte, time.Duration) {
		start := time.Now()
		got := exchange(t, addr, cat([]byte{5, 1, 2, 1, 1, 'u', byte(len(pass))}, []byte(pass)), true)
		return got, time.Since(start)
	}
	if got, _ := attempt("wrong"); !bytes.Equal(got, []byte{5, 2, 1, 1}) {
		t.Fatalf("wrong password: %x", got)
	}
	got, took := attempt("wrong")
	if !bytes.Equal(got, []byte{5, 2, 1, 1}) || took < delay/2 {
		t.Errorf("second attempt: %x after %v, want a failure after >= %v", got, took, delay/2)
	}
	got, took = attempt("right")
	if !bytes.Equal(got, []byte{5, 2, 1, 0}) || took < 3*delay/2 {
		t.Errorf("third attempt (right password): %x after %v, want success after >= %v", got, took, 3*delay/2)
	}
	if st := s.Stats(); st.AuthFailed != 2 {
		t.Errorf("AuthFailed = %d, want 2", st.AuthFailed)
	}
}

// The same for Proxy-Authorization, on one keep-alive connection. The throttle counts
// from the server's failure, which the client learns a little later, so the bounds are
// half a delay short of the schedule (without a throttle the attempts take ~1 ms).
func TestHTTPAuthThrottle(t *testing.T) {
	checkLeaks(t)
	const delay = 300 * time.Millisecond
	hs, err := socks.NewHTTPServer(socks.HTTPConfig{Dialer: &fakeDialer{err: errors.New("no dial")},
		Users: map[string]string{"u": "right"}, AuthFailDelay: delay})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, hs)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	ask := func(user, pass string) (int, time.Duration) {
		start := time.Now()
		req, _ := http.NewRequest("GET", "http://example.com/", nil)
		req.SetBasicAuth(user, pass)
		req.Header["Proxy-Authorization"] = req.Header["Authorization"]
		delete(req.Header, "Authorization")
		if err := req.WriteProxy(c); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, time.Since(start)
	}
	if code, _ := ask("u", "wrong"); code != 407 {
		t.Fatalf("wrong password: %d", code)
	}
	if code, took := ask("u", "wrong"); code != 407 || took < delay/2 {
		t.Errorf("second attempt: %d after %v, want 407 after >= %v", code, took, delay/2)
	}
	if code, took := ask("u", "right"); code != 502 || took < 3*delay/2 {
		t.Errorf("right password: %d after %v, want through (502 from the dialer) after >= %v", code, took, 3*delay/2)
	}
}
