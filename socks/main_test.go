package socks_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"mpath/socks"
	"mpath/socks/sockstest"
)

var testKey = []byte("0123456789abcdef-test-key-0123456")

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := waitNoLeaks(10 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak after all tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// ourGoroutines returns the stacks of goroutines (other than the caller) running code
// from this package or its helpers.
func ourGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 {
			continue // the caller
		}
		if strings.Contains(g, "mpath/socks.") || strings.Contains(g, "mpath/socks/sockstest.") ||
			strings.Contains(g, "things-go/go-socks5") {
			out = append(out, g)
		}
	}
	return out
}

// waitNoLeaks polls until no goroutine of ours is left, or fails with their stacks.
func waitNoLeaks(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		left := ourGoroutines()
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d goroutines left:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

// checkLeaks registers, first, a cleanup that runs after every other cleanup of t (so
// after servers are closed) and fails t if goroutines of ours outlive it.
func checkLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if err := waitNoLeaks(10 * time.Second); err != nil {
			t.Errorf("goroutine leak: %v", err)
		}
	})
}

type server interface {
	Serve(net.Listener) error
	Close() error
}

// serve runs srv on a new loopback listener and returns its address; the cleanup closes
// srv and checks Serve returned ErrServerClosed.
func serve(t testing.TB, srv server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		select {
		case err := <-done:
			if !errors.Is(err, socks.ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after Close")
		}
	})
	return l.Addr().String()
}

// mapResolver resolves the names it holds and nothing else.
type mapResolver map[string][]netip.Addr

func (m mapResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := m[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

var testNames = mapResolver{
	"target.test":  {netip.MustParseAddr("127.0.0.1")},
	"target6.test": {netip.MustParseAddr("::1")},
}

// recordingDialer remembers the targets it was asked for.
type recordingDialer struct {
	d       socks.Dialer
	mu      sync.Mutex
	targets []string
}

func (r *recordingDialer) DialTarget(ctx context.Context, target string) (net.Conn, error) {
	r.mu.Lock()
	r.targets = append(r.targets, target)
	r.mu.Unlock()
	return r.d.DialTarget(ctx, target)
}

func (r *recordingDialer) asked() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.targets...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// stack is the whole chain on loopback: fronts -> TunnelDialer -> kernel TCP "flow" ->
// Exit -> targets.
type stack struct {
	exit      *socks.Exit
	exitAddr  string
	tunnel    *socks.TunnelDialer
	rec       *recordingDialer
	socks     *socks.SOCKSServer
	socksAddr string
	http      *socks.HTTPServer
	httpAddr  string
}

type stackOpts struct {
	users    map[string]string
	exitConf func(*socks.ExitConfig)
}

// newStack builds a stack whose exit may reach loopback (the targets live there) and
// resolves the names in testNames. Tests call checkLeaks before it (and before making
// targets) so the leak check runs after every cleanup.
func newStack(t testing.TB, o stackOpts) *stack {
	t.Helper()
	ec := socks.ExitConfig{
		Key:  testKey,
		Deny: []netip.Prefix{}, AllowLoopback: true, // the default would deny the loopback targets
		Allow:    []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		Resolver: testNames,
	}
	if o.exitConf != nil {
		o.exitConf(&ec)
	}
	exit, err := socks.NewExit(ec)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{exit: exit}
	s.exitAddr = serve(t, exit)
	s.tunnel = &socks.TunnelDialer{Key: testKey, Flow: sockstest.KernelFlow(s.exitAddr), Timeout: 5 * time.Second}
	s.rec = &recordingDialer{d: s.tunnel}
	s.socks, err = socks.NewSOCKSServer(socks.SOCKSConfig{Dialer: s.rec, Users: o.users})
	if err != nil {
		t.Fatal(err)
	}
	s.socksAddr = serve(t, s.socks)
	s.http, err = socks.NewHTTPServer(socks.HTTPConfig{Dialer: s.rec, Users: o.users})
	if err != nil {
		t.Fatal(err)
	}
	s.httpAddr = serve(t, s.http)
	return s
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval on an observable condition
	}
}
