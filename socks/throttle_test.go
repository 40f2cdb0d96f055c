package socks

import (
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

func key(s string) clientKey { return clientKey{addr: netip.MustParseAddr(s), uid: -1} }

func TestAuthThrottleSchedule(t *testing.T) {
	base := 100 * time.Millisecond
	th := newAuthThrottle(base)
	t0 := time.Unix(1000, 0)
	a, b := key("192.0.2.1"), key("192.0.2.2")
	if d := th.acquire(a, t0); d != 0 {
		t.Fatalf("first attempt waits %v", d)
	}
	// Failures 1..7: the next attempt right after waits 100, 200, 400, ... ms, capped.
	now := t0
	for n := 1; n <= 7; n++ {
		th.failed(a, now)
		want := min(base<<(n-1), maxAuthFailDelay)
		if d := th.acquire(a, now); d != want {
			t.Errorf("after %d failures: wait %v, want %v", n, d, want)
		}
		now = now.Add(20 * time.Second) // past every reservation made so far
	}
	if d := th.acquire(b, now); d != 0 {
		t.Errorf("another client waits %v", d)
	}
	// Concurrent attempts queue: three at once after one failure wait 0.1, 0.2, 0.3 s.
	th2 := newAuthThrottle(base)
	th2.failed(b, t0)
	for i := 1; i <= 3; i++ {
		if d := th2.acquire(b, t0); d != time.Duration(i)*base {
			t.Errorf("concurrent attempt %d: wait %v, want %v", i, d, time.Duration(i)*base)
		}
	}
	// A success forgets; so does time.
	th2.succeeded(b)
	if d := th2.acquire(b, t0); d != 0 {
		t.Errorf("after success: wait %v", d)
	}
	th2.failed(b, t0)
	if d := th2.acquire(b, t0.Add(authFailMemory+time.Second)); d != 0 || th2.size() != 0 {
		t.Errorf("after %v: wait %v, %d remembered", authFailMemory, d, th2.size())
	}
	// Off.
	off := newAuthThrottle(0)
	off.failed(a, t0)
	if d := off.acquire(a, t0); d != 0 || off.size() != 0 {
		t.Errorf("disabled throttle: wait %v, %d remembered", d, off.size())
	}
}

func TestAuthThrottleBounded(t *testing.T) {
	th := newAuthThrottle(time.Second)
	t0 := time.Unix(1000, 0)
	k := func(i int) clientKey {
		return clientKey{addr: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uid: -1}
	}
	first := k(0)
	for i := 0; i < 3*authThrottleEntries; i++ {
		k := k(i)
		th.failed(k, t0.Add(time.Duration(i)*time.Millisecond))
		if th.size() > authThrottleEntries {
			t.Fatalf("%d clients remembered, bound %d", th.size(), authThrottleEntries)
		}
	}
	if d := th.acquire(first, t0.Add(time.Duration(3*authThrottleEntries)*time.Millisecond)); d != 0 {
		t.Errorf("the oldest client was not evicted")
	}
	last := k(3*authThrottleEntries - 1)
	if d := th.acquire(last, t0.Add(3*authThrottleEntries*time.Millisecond)); d == 0 {
		t.Errorf("the newest client is not throttled")
	}
}

type addrConn struct {
	net.Conn
	local, remote net.Addr
}

func (c addrConn) LocalAddr() net.Addr  { return c.local }
func (c addrConn) RemoteAddr() net.Addr { return c.remote }

func tcpAddr(s string) *net.TCPAddr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

func TestClientOf(t *testing.T) {
	uids := map[uint16]uint32{40001: 1000, 40002: 1001}
	peerUID := func(_, remote netip.AddrPort) (uint32, bool) {
		u, ok := uids[remote.Port()]
		return u, ok
	}
	for _, tc := range []struct {
		local, remote string
		want          clientKey
	}{
		{"127.0.0.1:1080", "127.0.0.1:40001", clientKey{netip.MustParseAddr("127.0.0.1"), 1000}},
		{"127.0.0.1:1080", "127.0.0.1:40002", clientKey{netip.MustParseAddr("127.0.0.1"), 1001}},
		{"127.0.0.1:1080", "127.0.0.1:40003", clientKey{netip.MustParseAddr("127.0.0.1"), -1}},
		{"192.0.2.1:1080", "192.0.2.1:40001", clientKey{netip.MustParseAddr("192.0.2.1"), 1000}},
		{"192.0.2.1:1080", "192.0.2.7:40001", clientKey{netip.MustParseAddr("192.0.2.7"), -1}},
		{"[2001:db8::1]:1080", "[2001:db8:1:2:3:4:5:6]:40001", clientKey{netip.MustParseAddr("2001:db8:1:2::"), -1}},
		{"[::ffff:192.0.2.1]:1080", "[::ffff:192.0.2.9]:40001", clientKey{netip.MustParseAddr("192.0.2.9"), -1}},
	} {
		c := addrConn{local: tcpAddr(tc.local), remote: tcpAddr(tc.remote)}
		if got := clientOf(c, peerUID); got != tc.want {
			t.Errorf("%s -> %s: %v, want %v", tc.remote, tc.local, got, tc.want)
		}
	}
}

// The kernel tells who owns the other end of a loopback connection.
func TestLocalPeerUID(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	la, _ := addrPortOf(s.LocalAddr())
	ra, _ := addrPortOf(s.RemoteAddr())
	uid, ok := localPeerUID(la, ra)
	if !ok || uid != uint32(os.Getuid()) {
		t.Errorf("localPeerUID = %d, %v; want %d", uid, ok, os.Getuid())
	}
	if _, ok := localPeerUID(la, netip.AddrPortFrom(ra.Addr(), ra.Port()+1)); ok && ra.Port() != 65535 {
		t.Logf("a port nobody uses has an owner (a socket of another test?)")
	}
}
