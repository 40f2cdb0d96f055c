package socks_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"mpath/socks"
	"mpath/socks/sockstest"
)

// newExit starts an Exit with cfg (Key filled in when empty) and returns it with its
// address.
func newExit(t *testing.T, cfg socks.ExitConfig) (*socks.Exit, string) {
	t.Helper()
	if cfg.Key == nil {
		cfg.Key = testKey
	}
	e, err := socks.NewExit(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e, serve(t, e)
}

// rawFlow opens a kernel TCP conn to the exit, writes build(the flow's addresses), and
// returns the conn.
func rawFlow(t *testing.T, exitAddr string, build func(socks.FlowAddrs) []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", exitAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	flow := socks.FlowAddrs{Client: c.LocalAddr().(*net.TCPAddr).AddrPort(), Exit: c.RemoteAddr().(*net.TCPAddr).AddrPort()}
	if _, err := c.Write(build(flow)); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// readStatusThenEOF reads the exit's answer to a refused request: one status byte, then
// the close.
func readStatusThenEOF(t *testing.T, c net.Conn) socks.Status {
	t.Helper()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading refusal: %v (got %x): the exit did not close", err, b)
	}
	if len(b) != 1 {
		t.Fatalf("refusal is %x, want exactly one status byte then EOF", b)
	}
	return socks.Status(b[0])
}

// encode returns a builder of the request for target followed by extra; sent keeps the
// last request it built (nil: not kept).
func encode(t *testing.T, key []byte, target string, now time.Time, extra []byte, sent *[]byte) func(socks.FlowAddrs) []byte {
	t.Helper()
	r, err := socks.PrepareRequest(key, target, now, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return func(f socks.FlowAddrs) []byte {
		b := r.Seal(f)
		if sent != nil {
			*sent = b
		}
		return append(b, extra...)
	}
}

// raw is a builder that sends b whatever the flow.
func raw(b []byte) func(socks.FlowAddrs) []byte {
	return func(socks.FlowAddrs) []byte { return b }
}

func TestExitRelaysExactlyAfterRequest(t *testing.T) {
	checkLeaks(t)
	tgt := sockstest.NewTCPTarget(t, "tcp4")
	exit, addr := newExit(t, socks.ExitConfig{Deny: []netip.Prefix{}, AllowLoopback: true})
	// Request and the application's first bytes in one write, as in a SYN with data:
	// the exit must not eat any of them.
	payload, _ := io.ReadAll(sockstest.Payload(300_000, 7))
	c := rawFlow(t, addr, encode(t, testKey, tgt.Addr, time.Now(), append([]byte("echo\n"), payload[:1000]...), nil))
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(payload[1000:])
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		done <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 || got[0] != byte(socks.StatusOK) {
		t.Fatalf("status %x, want OK", got[:min(1, len(got))])
	}
	if !bytes.Equal(got[1:], payload) {
		t.Fatalf("echo differs: %d bytes back, want %d", len(got)-1, len(payload))
	}
	c.Close()
	waitFor(t, 5*time.Second, "flow to end", func() bool { return exit.Stats().Active == 0 })
	st := exit.Stats()
	if st.Relayed != 1 || st.BytesToTarget != uint64(len(payload)+5) || st.BytesFromTarget != uint64(len(payload)) {
		t.Errorf("stats %+v, want 1 relayed, %d bytes to target, %d from", st, len(payload)+5, len(payload))
	}
}

func TestExitRefusals(t *testing.T) {
	checkLeaks(t)
	tgt := sockstest.NewTCPTarget(t, "tcp4")
	var dials []string
	var mu sync.Mutex
	exit, addr := newExit(t, socks.ExitConfig{
		Deny: []netip.Prefix{}, AllowLoopback: true, // loopback targets allowed here
		Dial: func(ctx context.Context, network, a string) (net.Conn, error) {
			mu.Lock()
			dials = append(dials, a)
			mu.Unlock()
			return (&net.Dialer{}).DialContext(ctx, network, a)
		},
	})
	now := time.Now()
	other := []byte("not-the-key-not-the-key-not-the!")

	// Wrong key.
	if st := readStatusThenEOF(t, rawFlow(t, addr, encode(t, other, tgt.Addr, now, nil, nil))); st != socks.StatusBadAuth {
		t.Errorf("wrong key: status %v", st)
	}
	// Stale, both ways.
	for _, skew := range []time.Duration{-31 * time.Second, 31 * time.Second} {
		if st := readStatusThenEOF(t, rawFlow(t, addr, encode(t, testKey, tgt.Addr, now.Add(skew), nil, nil))); st != socks.StatusBadAuth {
			t.Errorf("skew %v: status %v", skew, st)
		}
	}
	// Replay: the same bytes twice; the first is a real flow. The second flow has
	// another client port, which the MAC binds: refused as a bad MAC. (A replay on the
	// same addresses and ports is refused as a replay: TestReplayRejected.)
	var req []byte
	c := rawFlow(t, addr, encode(t, testKey, tgt.Addr, now, []byte("sink\n"), &req))
	c.(*net.TCPConn).CloseWrite()
	if b, err := io.ReadAll(c); err != nil || len(b) == 0 || b[0] != 0 {
		t.Fatalf("first use of the request: %x %v", b, err)
	}
	if st := readStatusThenEOF(t, rawFlow(t, addr, raw(req))); st != socks.StatusBadAuth {
		t.Errorf("replay: status %v", st)
	}
	// Garbage and a truncated request.
	if st := readStatusThenEOF(t, rawFlow(t, addr, raw([]byte("GET / HTTP/1.1\r\n\r\n")))); st != socks.StatusBadRequest {
		t.Errorf("garbage: status %v", st)
	}
	tc := rawFlow(t, addr, raw(req[:40]))
	tc.(*net.TCPConn).CloseWrite()
	if b, err := io.ReadAll(tc); err != nil || len(b) > 1 {
		t.Errorf("truncated: got %x %v, want close", b, err)
	}

	mu.Lock()
	nd := len(dials)
	mu.Unlock()
	if nd != 1 {
		t.Errorf("exit dialled %d times, want once (refused requests must not dial)", nd)
	}
	waitFor(t, 5*time.Second, "flows to end", func() bool { return exit.Stats().Active == 0 })
	got := exit.Stats().Refused
	for reason, want := range map[string]uint64{
		socks.ReasonBadMAC: 2, socks.ReasonStale: 2,
		socks.ReasonMalformed: 1, socks.ReasonTruncated: 1,
	} {
		if got[reason] != want {
			t.Errorf("Refused[%s] = %d, want %d (all: %v)", reason, got[reason], want, got)
		}
	}
}

func TestExitRequestTimeout(t *testing.T) {
	checkLeaks(t)
	exit, addr := newExit(t, socks.ExitConfig{RequestTimeout: 200 * time.Millisecond})
	start := time.Now()
	c := rawFlow(t, addr, raw([]byte("MPX\x02"))) // a start, then silence
	if st := readStatusThenEOF(t, c); st != socks.StatusBadRequest {
		t.Errorf("status %v", st)
	}
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("closed after %v, before the request timeout", el)
	}
	if n := exit.Stats().Refused[socks.ReasonTimeout]; n != 1 {
		t.Errorf("Refused[timeout] = %d, want 1", n)
	}
}

func TestExitDeniedTargets(t *testing.T) {
	checkLeaks(t)
	tgt := sockstest.NewTCPTarget(t, "tcp4")
	_, port, _ := net.SplitHostPort(tgt.Addr)
	var dialled bool
	var mu sync.Mutex
	exit, addr := newExit(t, socks.ExitConfig{
		// Default deny list; a resolver with names that point at denied addresses,
		// among allowed ones (DNS rebinding), and the real one for "localhost".
		Resolver: mapResolver{
			"rebind.test": {netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("127.0.0.1")},
			"ll.test":     {netip.MustParseAddr("fe80::1")},
			"mapped.test": {netip.MustParseAddr("::ffff:127.0.0.1")},
			"localhost":   mustLookup(t, "localhost"),
		},
		Dial: func(ctx context.Context, network, a string) (net.Conn, error) {
			mu.Lock()
			dialled = true
			mu.Unlock()
			return nil, errors.New("must not dial")
		},
	})
	d := &socks.TunnelDialer{Key: testKey, Flow: sockstest.KernelFlow(addr), Timeout: 5 * time.Second}
	targets := []string{
		tgt.Addr, "127.1.2.3:80", "[::1]:" + port, "169.254.169.254:80", "[fd00:ec2::254]:80", "[fe80::1]:80",
		"[::ffff:127.0.0.1]:" + port, "0.0.0.0:" + port, "224.0.0.1:80", "[ff02::1]:80", "[::]:80",
		"localhost:" + port, "rebind.test:80", "ll.test:80", "mapped.test:80",
	}
	for _, target := range targets {
		c, err := d.DialTarget(context.Background(), target)
		if err == nil {
			c.Close()
			t.Errorf("%s: allowed", target)
			continue
		}
		var re *socks.ReplyError
		if !errors.As(err, &re) || re.Code != socks.ReplyNotAllowed {
			t.Errorf("%s: error %v, want reply 02", target, err)
		}
	}
	if dialled {
		t.Error("the exit dialled a denied target")
	}
	if n := exit.Stats().Refused[socks.ReasonDenied]; n != uint64(len(targets)) {
		t.Errorf("Refused[denied] = %d, want %d", n, len(targets))
	}

	// An exit with nothing but a key: the system resolver, the default deny list.
	plain, paddr := newExit(t, socks.ExitConfig{})
	d = &socks.TunnelDialer{Key: testKey, Flow: sockstest.KernelFlow(paddr), Timeout: 5 * time.Second}
	for _, target := range []string{"localhost:" + port, tgt.Addr} {
		_, err := d.DialTarget(context.Background(), target)
		var re *socks.ReplyError
		if !errors.As(err, &re) || re.Code != socks.ReplyNotAllowed {
			t.Errorf("default exit, %s: %v, want reply 02", target, err)
		}
	}
	if n := plain.Stats().Refused[socks.ReasonDenied]; n != 2 {
		t.Errorf("default exit: Refused[denied] = %d, want 2", n)
	}
}

func mustLookup(t *testing.T, name string) []netip.Addr {
	a, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip", name)
	if err != nil || len(a) == 0 {
		t.Skipf("cannot resolve %s here: %v", name, err)
	}
	return a
}

func TestExitAllowList(t *testing.T) {
	checkLeaks(t)
	tgt := sockstest.NewTCPTarget(t, "tcp4")
	_, addr := newExit(t, socks.ExitConfig{
		Deny: []netip.Prefix{}, AllowLoopback: true,
		Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
	})
	d := &socks.TunnelDialer{Key: testKey, Flow: sockstest.KernelFlow(addr)}
	_, err := d.DialTarget(context.Background(), tgt.Addr)
	var re *socks.ReplyError
	if !errors.As(err, &re) || re.Code != socks.ReplyNotAllowed {
		t.Fatalf("target outside the allow list: %v, want reply 02", err)
	}
	e, _ := socks.NewExit(socks.ExitConfig{Key: testKey, Deny: []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}})
	if e.Allowed(netip.MustParseAddr("10.1.2.3")) || e.Allowed(netip.MustParseAddr("::ffff:10.1.2.3")) {
		t.Error("an IPv4-mapped deny prefix does not deny the IPv4 addresses")
	}
	if !e.Allowed(netip.MustParseAddr("169.254.1.1")) {
		t.Error("an explicit deny list still denies link-local: it should replace the default")
	}
	if e.Allowed(netip.MustParseAddr("127.0.0.1")) {
		t.Error("an explicit deny list lifts the loopback refusal")
	}
}

// The target policy: loopback and unspecified always refused, cloud metadata refused
// unless named exactly, private ranges and the host's own addresses reachable by default.
func TestExitTargetPolicy(t *testing.T) {
	type check struct {
		addr string
		want bool
	}
	cases := []struct {
		name   string
		cfg    socks.ExitConfig
		checks []check
	}{
		{"default", socks.ExitConfig{}, []check{
			{"127.0.0.1", false}, {"127.9.9.9", false}, {"::1", false}, {"::ffff:127.0.0.1", false},
			{"0.0.0.0", false}, {"::", false},
			{"169.254.169.254", false}, {"fd00:ec2::254", false}, {"fd20:ce::254", false},
			{"100.100.100.200", false}, {"168.63.129.16", false}, {"::ffff:100.100.100.200", false},
			{"64:ff9b::a9fe:a9fe", false}, // NAT64 form of 169.254.169.254
			{"10.1.2.3", true}, {"172.16.0.1", true}, {"192.168.1.1", true}, {"100.64.0.1", true},
			{"fd12:3456::1", true}, {"192.0.2.1", true}, {"2001:db8::1", true},
		}},
		{"empty deny list", socks.ExitConfig{Deny: []netip.Prefix{}}, []check{
			{"127.0.0.1", false}, {"::1", false}, {"0.0.0.0", false},
			{"169.254.169.254", false}, {"fd00:ec2::254", false}, {"100.100.100.200", false},
			{"169.254.1.1", true},
		}},
		{"allow names metadata exactly", socks.ExitConfig{Allow: []netip.Prefix{
			netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix("fd00:ec2::254/128"),
			netip.MustParsePrefix("100.100.0.0/16"), netip.MustParsePrefix("127.0.0.1/32")}}, []check{
			{"169.254.169.254", true}, {"fd00:ec2::254", true},
			{"100.100.100.200", false}, // inside an allowed prefix, but not named exactly
			{"169.254.170.2", false}, {"127.0.0.1", false},
		}},
		{"deny private ranges", socks.ExitConfig{Deny: append(socks.DefaultDeny(),
			netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"),
			netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("100.64.0.0/10"),
			netip.MustParsePrefix("fc00::/7"))}, []check{
			{"10.1.2.3", false}, {"172.20.0.1", false}, {"192.168.1.1", false}, {"100.64.0.1", false},
			{"fd12::1", false}, {"192.0.2.1", true},
		}},
		{"loopback for tests", socks.ExitConfig{Deny: []netip.Prefix{}, AllowLoopback: true}, []check{
			{"127.0.0.1", true}, {"::1", true}, {"169.254.169.254", false},
		}},
	}
	for _, c := range cases {
		c.cfg.Key = testKey
		e, err := socks.NewExit(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range c.checks {
			if got := e.Allowed(netip.MustParseAddr(k.addr)); got != k.want {
				t.Errorf("%s: Allowed(%s) = %v, want %v", c.name, k.addr, got, k.want)
			}
		}
	}
	for _, a := range socks.MetadataAddrs() {
		e, _ := socks.NewExit(socks.ExitConfig{Key: testKey, Deny: []netip.Prefix{}})
		if e.Allowed(a) {
			t.Errorf("metadata address %s allowed", a)
		}
	}
}

func TestExitResolvesNamesAndMapsDialErrors(t *testing.T) {
	checkLeaks(t)
	tgt := sockstest.NewTCPTarget(t, "tcp4")
	tgt6 := sockstest.NewTCPTarget(t, "tcp6")
	_, port, _ := net.SplitHostPort(tgt.Addr)
	_, port6, _ := net.SplitHostPort(tgt6.Addr)
	// A port that refuses: listen, note it, close.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := l.Addr().String()
	l.Close()
	exit, addr := newExit(t, socks.ExitConfig{
		Deny: []netip.Prefix{}, AllowLoopback: true,
		Resolver: testNames,
	})
	d := &socks.TunnelDialer{Key: testKey, Flow: sockstest.KernelFlow(addr), Timeout: 5 * time.Second}

	for _, target := range []string{"target.test:" + port, "target6.test:" + port6, tgt6.Addr} {
		c, err := d.DialTarget(context.Background(), target)
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		fmt.Fprintf(c, "source 100000 %d\n", len(target))
		c.(interface{ CloseWrite() error }).CloseWrite()
		n, sum, err := sockstest.HashReader(c)
		c.Close()
		if err != nil || n != 100000 || sum != sockstest.PayloadSHA256(100000, uint64(len(target))) {
			t.Errorf("%s: got %d bytes %s %v", target, n, sum, err)
		}
	}
	for target, want := range map[string]byte{
		"nosuch.test:80": socks.ReplyHostUnreachable,
		closed:           socks.ReplyRefused,
	} {
		_, err := d.DialTarget(context.Background(), target)
		var re *socks.ReplyError
		if !errors.As(err, &re) || re.Code != want {
			t.Errorf("%s: %v, want reply %d", target, err, want)
		}
	}
	st := exit.Stats()
	if st.Refused[socks.ReasonResolve] != 1 || st.Refused[socks.ReasonDial] != 1 || st.Relayed != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestWrongKeyFailsFast(t *testing.T) {
	checkLeaks(t)
	tgt := sockstest.NewTCPTarget(t, "tcp4")
	exit, addr := newExit(t, socks.ExitConfig{Deny: []netip.Prefix{}, AllowLoopback: true})
	d := &socks.TunnelDialer{Key: []byte("the-wrong-key-the-wrong-key-!!!!"), Flow: sockstest.KernelFlow(addr)}
	start := time.Now()
	_, err := d.DialTarget(context.Background(), tgt.Addr)
	el := time.Since(start)
	if !errors.Is(err, socks.ErrExitAuth) {
		t.Fatalf("error %v is not ErrExitAuth", err)
	}
	var re *socks.ReplyError
	if !errors.As(err, &re) || re.Code != socks.ReplyNotAllowed {
		t.Fatalf("error %v, want reply 02", err)
	}
	if el >= 10*time.Second {
		t.Errorf("wrong key took %v to fail", el)
	}
	t.Logf("wrong key refused in %v", el)
	if n := exit.Stats().Refused[socks.ReasonBadMAC]; n != 1 {
		t.Errorf("Refused[bad_mac] = %d", n)
	}
	// Clock skew through the dialer too.
	d = &socks.TunnelDialer{Key: testKey, Flow: sockstest.KernelFlow(addr),
		Now: func() time.Time { return time.Now().Add(-31 * time.Second) }}
	if _, err := d.DialTarget(context.Background(), tgt.Addr); !errors.Is(err, socks.ErrExitAuth) {
		t.Errorf("stale: %v", err)
	}
	d.Now = func() time.Time { return time.Now().Add(29 * time.Second) }
	c, err := d.DialTarget(context.Background(), tgt.Addr)
	if err != nil {
		t.Fatalf("29 s ahead: %v", err)
	}
	c.Close()
}

func TestTunnelDialerTimeoutAndNonExit(t *testing.T) {
	checkLeaks(t)
	// A server that accepts and never answers, and one that closes at once.
	silent, _ := net.Listen("tcp", "127.0.0.1:0")
	closer, _ := net.Listen("tcp", "127.0.0.1:0")
	var wg sync.WaitGroup
	var held []net.Conn
	var mu sync.Mutex
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		for {
			c, err := closer.Accept()
			if err != nil {
				return
			}
			io.CopyN(io.Discard, c, 67)
			c.Close()
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		closer.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	d := &socks.TunnelDialer{Key: testKey, Flow: sockstest.KernelFlow(silent.Addr().String()), Timeout: 300 * time.Millisecond}
	start := time.Now()
	_, err := d.DialTarget(context.Background(), "192.0.2.1:80")
	var re *socks.ReplyError
	if !errors.As(err, &re) || re.Code != socks.ReplyTTLExpired {
		t.Errorf("silent exit: %v, want reply 06", err)
	}
	if el := time.Since(start); el < 300*time.Millisecond || el > 5*time.Second {
		t.Errorf("silent exit: gave up after %v", el)
	}
	d.Flow = sockstest.KernelFlow(closer.Addr().String())
	_, err = d.DialTarget(context.Background(), "192.0.2.1:80")
	if !errors.As(err, &re) || re.Code != socks.ReplyGeneralFailure || !strings.Contains(err.Error(), "without a status") {
		t.Errorf("closing exit: %v, want reply 01 without a status", err)
	}
	// Cancelling the context ends the wait at once.
	d.Flow = sockstest.KernelFlow(silent.Addr().String())
	d.Timeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := d.DialTarget(ctx, "192.0.2.1:80"); errc <- err }()
	waitFor(t, 5*time.Second, "flow to reach the silent server", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(held) == 2
	})
	cancel()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("cancelled dial succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Error("cancelled dial did not return")
	}
}

func TestExitIdleTimeout(t *testing.T) {
	checkLeaks(t)
	tgt := sockstest.NewTCPTarget(t, "tcp4")
	exit, addr := newExit(t, socks.ExitConfig{Deny: []netip.Prefix{}, AllowLoopback: true, IdleTimeout: 200 * time.Millisecond})
	d := &socks.TunnelDialer{Key: testKey, Flow: sockstest.KernelFlow(addr)}
	c, err := d.DialTarget(context.Background(), tgt.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "echo\nhello\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if line, err := br.ReadString('\n'); err != nil || line != "hello\n" {
		t.Fatalf("echo: %q %v", line, err)
	}
	start := time.Now()
	// Now idle: the exit must end the flow.
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle flow: read %v, want EOF from the exit's idle close", err)
	}
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Errorf("idle close after %v, before the idle timeout", el)
	}
	waitFor(t, 5*time.Second, "flow to end", func() bool { return exit.Stats().Active == 0 })
}

func TestExitConfigAndShutdown(t *testing.T) {
	checkLeaks(t)
	if _, err := socks.NewExit(socks.ExitConfig{Key: []byte("short")}); err == nil {
		t.Error("NewExit accepted a short key")
	}
	tgt := sockstest.NewTCPTarget(t, "tcp4")
	exit, err := socks.NewExit(socks.ExitConfig{Key: testKey, Deny: []netip.Prefix{}, AllowLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	done := make(chan error, 1)
	go func() { done <- exit.Serve(l) }()
	d := &socks.TunnelDialer{Key: testKey, Flow: sockstest.KernelFlow(l.Addr().String())}
	c, err := d.DialTarget(context.Background(), tgt.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "echo\n")
	// Graceful shutdown waits for the open flow; when its deadline passes the flow is
	// closed.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := exit.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want deadline exceeded (a flow was open)", err)
	}
	if err := <-done; !errors.Is(err, socks.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("flow still open after shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", l.Addr().String()); err == nil {
		t.Error("listener still accepts after Shutdown")
	}
}
