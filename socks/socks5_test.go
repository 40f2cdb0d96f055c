package socks_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"mpath/socks"
	"mpath/socks/sockstest"
)

// fakeDialer answers every DialTarget with err (or, when err is nil, dials target with
// the kernel) and counts calls.
type fakeDialer struct {
	err   error
	calls atomic.Int32
}

func (f *fakeDialer) DialTarget(ctx context.Context, target string) (net.Conn, error) {
	f.calls.Add(1)
	if f.err != nil {
		return nil, f.err
	}
	return (&socks.DirectDialer{}).DialTarget(ctx, target)
}

func newSOCKS(t *testing.T, cfg socks.SOCKSConfig) (*socks.SOCKSServer, string) {
	t.Helper()
	s, err := socks.NewSOCKSServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, serve(t, s)
}

// exchange sends b to a fresh connection to addr, half-closes when closeWrite is set,
// and reads everything the server sends until it closes. It fails t if the server does
// not close within 5 s.
func exchange(t *testing.T, addr string, b []byte, closeWrite bool) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	if closeWrite {
		c.(*net.TCPConn).CloseWrite()
	}
	got, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("input %x: server did not close (got %x)", b, got)
	}
	return got
}

func socksRequest(cmd byte, atyp byte, addr []byte, port uint16) []byte {
	b := []byte{5, cmd, 0, atyp}
	if atyp == 3 {
		b = append(b, byte(len(addr)))
	}
	b = append(b, addr...)
	return append(b, byte(port>>8), byte(port))
}

func reply(code byte) []byte { return []byte{5, code, 0, 1, 0, 0, 0, 0, 0, 0} }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestSOCKSBadInput(t *testing.T) {
	checkLeaks(t)
	d := &fakeDialer{err: errors.New("must not be reached")}
	s, addr := newSOCKS(t, socks.SOCKSConfig{Dialer: d})
	noAuth := []byte{5, 1, 0}
	ok := []byte{5, 0}
	for _, tc := range []struct {
		name string
		in   []byte
		want []byte
	}{
		{"SOCKS4 request", []byte{4, 1, 0, 80, 127, 0, 0, 1, 'u', 0}, []byte{5, 0xff}},
		{"HTTP instead of SOCKS", []byte("GET / HTTP/1.0\r\n\r\n"), []byte{5, 0xff}},
		{"no methods", []byte{5, 0}, []byte{5, 0xff}},
		{"only user/pass offered", []byte{5, 1, 2}, []byte{5, 0xff}},
		{"only GSSAPI offered", []byte{5, 2, 1, 3}, []byte{5, 0xff}},
		{"bad address type", cat(noAuth, []byte{5, 1, 0, 9, 1, 2, 3, 4, 0, 80}), cat(ok, reply(8))},
		{"domain length 0", cat(noAuth, socksRequest(1, 3, nil, 80)), cat(ok, reply(1))},
		{"port 0", cat(noAuth, socksRequest(1, 1, []byte{192, 0, 2, 1}, 0)), cat(ok, reply(1))},
		{"BIND", cat(noAuth, socksRequest(2, 1, []byte{192, 0, 2, 1}, 80)), cat(ok, reply(7))},
		{"UDP ASSOCIATE", cat(noAuth, socksRequest(3, 1, []byte{0, 0, 0, 0}, 0)), cat(ok, reply(7))},
		{"unknown command", cat(noAuth, socksRequest(9, 1, []byte{192, 0, 2, 1}, 80)), cat(ok, reply(7))},
		{"request with version 4", cat(noAuth, []byte{4, 1, 0, 1, 192, 0, 2, 1, 0, 80}), ok},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Both with the client still sending (the server must answer and close on
			// its own) and half-closed.
			for _, cw := range []bool{false, true} {
				if got := exchange(t, addr, tc.in, cw); !bytes.Equal(got, tc.want) {
					t.Errorf("closeWrite=%v: got %x, want %x then close", cw, got, tc.want)
				}
			}
		})
	}
	if n := d.calls.Load(); n != 0 {
		t.Errorf("the Dialer was called %d times on bad input", n)
	}
	waitFor(t, 5*time.Second, "handlers to end", func() bool { return s.Stats().Active == 0 })
	st := s.Stats()
	if st.HandshakeFailed == 0 || st.Relayed != 0 || st.DialFailed != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestSOCKSTruncated cuts valid handshakes after every byte: the server must close
// without a request reply and without dialing.
func TestSOCKSTruncated(t *testing.T) {
	checkLeaks(t)
	d := &fakeDialer{err: errors.New("must not be reached")}
	_, addr := newSOCKS(t, socks.SOCKSConfig{Dialer: d})
	_, authAddr := newSOCKS(t, socks.SOCKSConfig{Dialer: d, Users: map[string]string{"user": "secret"}})
	for _, tc := range []struct {
		name, addr string
		msgs       [][]byte // client messages
		replies    [][]byte // the server's reply to each whole message
	}{
		{"no auth, domain", addr,
			[][]byte{{5, 1, 0}, socksRequest(1, 3, []byte("example.com"), 443)},
			[][]byte{{5, 0}, nil}},
		{"no auth, IPv6", addr,
			[][]byte{{5, 2, 2, 0}, socksRequest(1, 4, net.ParseIP("2001:db8::1"), 80)},
			[][]byte{{5, 0}, nil}},
		{"user/pass, IPv4", authAddr,
			[][]byte{{5, 2, 0, 2}, {1, 4, 'u', 's', 'e', 'r', 6, 's', 'e', 'c', 'r', 'e', 't'}, socksRequest(1, 1, []byte{192, 0, 2, 1}, 80)},
			[][]byte{{5, 2}, {1, 0}, nil}},
	} {
		full := bytes.Join(tc.msgs, nil)
		for cut := 0; cut < len(full); cut++ {
			var want []byte
			sent := 0
			for i, m := range tc.msgs {
				if sent+len(m) > cut {
					break
				}
				sent += len(m)
				want = append(want, tc.replies[i]...)
			}
			got := exchange(t, tc.addr, full[:cut], true)
			if !bytes.Equal(got, want) {
				t.Errorf("%s cut at %d: got %x, want %x then close", tc.name, cut, got, want)
			}
		}
	}
	if n := d.calls.Load(); n != 0 {
		t.Errorf("the Dialer was called %d times on truncated input", n)
	}
}

func TestSOCKSHandshakeTimeout(t *testing.T) {
	checkLeaks(t)
	s, addr := newSOCKS(t, socks.SOCKSConfig{Dialer: &fakeDialer{}, HandshakeTimeout: 200 * time.Millisecond})
	for _, partial := range [][]byte{nil, {5}, {5, 1, 0}, {5, 1, 0, 5, 1, 0, 3, 20, 'a'}} {
		start := time.Now()
		got := exchange(t, addr, partial, false) // fails if no close within 5 s
		if el := time.Since(start); el < 200*time.Millisecond {
			t.Errorf("partial %x: closed after %v, before the handshake timeout", partial, el)
		}
		if len(got) > 2 {
			t.Errorf("partial %x: got %x", partial, got)
		}
	}
	waitFor(t, 5*time.Second, "handlers to end", func() bool { return s.Stats().Active == 0 })
	if st := s.Stats(); st.HandshakeFailed != 4 {
		t.Errorf("HandshakeFailed = %d, want 4", st.HandshakeFailed)
	}
}

func TestSOCKSAuth(t *testing.T) {
	checkLeaks(t)
	tgt := sockstest.NewTCPTarget(t, "tcp4")
	s, addr := newSOCKS(t, socks.SOCKSConfig{Dialer: &socks.DirectDialer{}, Users: map[string]string{"user": "secret"},
		AuthFailDelay: 10 * time.Millisecond}) // TestSOCKSAuthThrottle covers the delays
	up := func(u, p string) []byte {
		return cat([]byte{1, byte(len(u))}, []byte(u), []byte{byte(len(p))}, []byte(p))
	}
	for _, tc := range []struct{ name, user, pass string }{
		{"wrong password", "user", "secreT"}, {"wrong user", "usr", "secret"},
		{"empty", "", ""}, {"prefix", "user", "secre"},
	} {
		got := exchange(t, addr, cat([]byte{5, 1, 2}, up(tc.user, tc.pass)), false)
		if want := []byte{5, 2, 1, 1}; !bytes.Equal(got, want) {
			t.Errorf("%s: got %x, want %x (failure status) then close", tc.name, got, want)
		}
	}
	// Wrong subnegotiation version: closed.
	if got := exchange(t, addr, []byte{5, 1, 2, 5, 4, 'u', 's', 'e', 'r', 6, 's', 'e', 'c', 'r', 'e', 't'}, false); !bytes.Equal(got, []byte{5, 2}) {
		t.Errorf("auth version 5: got %x", got)
	}
	// Right password: a real connection through.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	host, port, _ := net.SplitHostPort(tgt.Addr)
	var p uint16
	fmt.Sscan(port, &p)
	c.Write(cat([]byte{5, 1, 2}, up("user", "secret"), socksRequest(1, 1, net.ParseIP(host).To4(), p), []byte("echo\nping")))
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4+10+4 || !bytes.Equal(got[:5], []byte{5, 2, 1, 0, 5}) || got[5] != 0 || string(got[14:]) != "ping" {
		t.Errorf("authenticated CONNECT: got %x", got)
	}
	waitFor(t, 5*time.Second, "handlers to end", func() bool { return s.Stats().Active == 0 })
	if st := s.Stats(); st.AuthFailed != 4 || st.Relayed != 1 {
		t.Errorf("stats %+v: want 4 auth failures, 1 relayed", st)
	}
}

func TestSOCKSReplyCodes(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		err  error
		want byte
	}{
		{&socks.ReplyError{Code: socks.ReplyNotAllowed}, 2},
		{&socks.ReplyError{Code: socks.ReplyNetUnreachable}, 3},
		{&socks.ReplyError{Code: socks.ReplyHostUnreachable}, 4},
		{&socks.ReplyError{Code: socks.ReplyRefused}, 5},
		{&socks.ReplyError{Code: socks.ReplyTTLExpired}, 6},
		{fmt.Errorf("wrapped: %w", &socks.ReplyError{Code: socks.ReplyRefused}), 5},
		{errors.New("something else"), 1},
		{context.DeadlineExceeded, 6},
	} {
		_, addr := newSOCKS(t, socks.SOCKSConfig{Dialer: &fakeDialer{err: tc.err}})
		got := exchange(t, addr, cat([]byte{5, 1, 0}, socksRequest(1, 3, []byte("example.com"), 80)), false)
		if want := cat([]byte{5, 0}, reply(tc.want)); !bytes.Equal(got, want) {
			t.Errorf("dialer error %v: got %x, want %x", tc.err, got, want)
		}
	}
}

func TestSOCKSMaxConns(t *testing.T) {
	checkLeaks(t)
	s, addr := newSOCKS(t, socks.SOCKSConfig{Dialer: &fakeDialer{}, MaxConns: 2})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	waitFor(t, 5*time.Second, "two active connections", func() bool { return s.Stats().Active == 2 })
	// The third is closed at once, before any byte.
	start := time.Now()
	if got := exchange(t, addr, []byte{5, 1, 0}, false); len(got) != 0 {
		t.Errorf("over the limit: got %x, want an immediate close", got)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("over-limit close took %v", el)
	}
	if st := s.Stats(); st.OverLimit != 1 {
		t.Errorf("OverLimit = %d, want 1", st.OverLimit)
	}
	held[0].Close()
	waitFor(t, 5*time.Second, "a slot to free", func() bool { return s.Stats().Active == 1 })
	if got := exchange(t, addr, []byte{5, 1, 0}, true); !bytes.Equal(got, []byte{5, 0}) {
		t.Errorf("after a slot freed: got %x", got)
	}
}

func TestSOCKSConfig(t *testing.T) {
	if _, err := socks.NewSOCKSServer(socks.SOCKSConfig{}); err == nil {
		t.Error("NewSOCKSServer without a Dialer succeeded")
	}
	if _, err := socks.NewHTTPServer(socks.HTTPConfig{}); err == nil {
		t.Error("NewHTTPServer without a Dialer succeeded")
	}
}

// FuzzSOCKSHandshake throws arbitrary client bytes at a SOCKS front (with
// authentication, so both sub-protocols are reached): the server must answer with
// SOCKS5 bytes or nothing and close, never hang or panic.
func FuzzSOCKSHandshake(f *testing.F) {
	d := &fakeDialer{err: &socks.ReplyError{Code: socks.ReplyRefused}}
	s, err := socks.NewSOCKSServer(socks.SOCKSConfig{Dialer: d, Users: map[string]string{"u": "p"},
		HandshakeTimeout: 2 * time.Second})
	if err != nil {
		f.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go s.Serve(l)
	f.Cleanup(func() { s.Close() })
	auth := []byte{1, 1, 'u', 1, 'p'}
	f.Add([]byte{5, 1, 2})
	f.Add(cat([]byte{5, 1, 2}, auth, socksRequest(1, 3, []byte("example.com"), 80)))
	f.Add(cat([]byte{5, 1, 2}, auth, socksRequest(1, 4, net.ParseIP("2001:db8::1"), 443)))
	f.Add(cat([]byte{5, 1, 2}, auth, socksRequest(3, 1, []byte{0, 0, 0, 0}, 0)))
	f.Add(cat([]byte{5, 1, 2}, []byte{1, 0, 0}))
	f.Add([]byte{4, 1, 0, 80})
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(in)
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("input %x: no close", in)
		}
		if len(got) > 0 && got[0] != 5 {
			t.Fatalf("input %x: answer %x is not SOCKS5", in, got)
		}
	})
}
