package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"mpath/socks"
	"mpath/socks/sockstest"
)

// recordingDialer dials with the kernel and records the targets the front asked for.
type recordingDialer struct {
	mu      sync.Mutex
	targets []string
	d       socks.DirectDialer
}

func (r *recordingDialer) DialTarget(ctx context.Context, target string) (net.Conn, error) {
	r.mu.Lock()
	r.targets = append(r.targets, target)
	r.mu.Unlock()
	return r.d.DialTarget(ctx, target)
}

func (r *recordingDialer) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.targets...)
}

type front interface {
	Serve(net.Listener) error
	Close() error
	Stats() socks.FrontStats
}

// startFront serves f on a loopback port and returns its address.
func startFront(t *testing.T, f front) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { f.Serve(ln); close(done) }()
	t.Cleanup(func() { f.Close(); <-done })
	return ln.Addr().String()
}

func TestRunThroughProxies(t *testing.T) {
	const size = 256 << 10
	target := sockstest.NewHTTPTarget(t, false)
	tlsTarget := sockstest.NewHTTPTarget(t, true)
	_, port, _ := net.SplitHostPort(target.Addr)
	_, tlsPort, _ := net.SplitHostPort(tlsTarget.Addr)
	path := "/bytes?n=262144&seed=9"
	sum := sockstest.PayloadSHA256(size, 9)
	pool := x509.NewCertPool()
	pool.AddCert(tlsTarget.Certificate())
	users := map[string]string{"bench": "s3cret"}

	tests := []struct {
		name       string
		http       bool   // HTTP front, else SOCKS5
		auth       bool   // the front wants users
		scheme     string // proxy URL scheme
		url        string
		user       string
		keepAlive  bool
		wantTarget string // what the front was asked to dial
		wantFail   FailureCounts
		wantNon2xx int64
	}{
		{name: "socks5h sends the name", scheme: "socks5h", url: "http://localhost:" + port + path,
			wantTarget: "localhost:" + port},
		{name: "socks5 resolves here", scheme: "socks5", url: "http://localhost:" + port + path,
			wantTarget: "127.0.0.1:" + port},
		{name: "socks5 keep-alive", scheme: "socks5", url: "http://127.0.0.1:" + port + path, keepAlive: true,
			wantTarget: "127.0.0.1:" + port},
		{name: "socks5 auth", scheme: "socks5h", auth: true, user: "bench:s3cret",
			url: "http://127.0.0.1:" + port + path, wantTarget: "127.0.0.1:" + port},
		{name: "socks5 bad password", scheme: "socks5h", auth: true, user: "bench:nope",
			url: "http://127.0.0.1:" + port + path, wantFail: FailureCounts{Connect: 4}},
		{name: "http absolute-form", http: true, scheme: "http", url: "http://localhost:" + port + path,
			wantTarget: "localhost:" + port},
		{name: "http keep-alive auth", http: true, auth: true, user: "bench:s3cret", scheme: "http", keepAlive: true,
			url: "http://127.0.0.1:" + port + path, wantTarget: "127.0.0.1:" + port},
		{name: "http bad password", http: true, auth: true, user: "bench:nope", scheme: "http",
			url: "http://127.0.0.1:" + port + path, wantNon2xx: 4},
		{name: "http CONNECT for https", http: true, scheme: "http", url: "https://127.0.0.1:" + tlsPort + path,
			wantTarget: "127.0.0.1:" + tlsPort},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recordingDialer{}
			var f front
			var err error
			var u map[string]string
			if tc.auth {
				u = users
			}
			if tc.http {
				f, err = socks.NewHTTPServer(socks.HTTPConfig{Dialer: rec, Users: u})
			} else {
				f, err = socks.NewSOCKSServer(socks.SOCKSConfig{Dialer: rec, Users: u})
			}
			if err != nil {
				t.Fatal(err)
			}
			addr := startFront(t, f)
			res := run(t, Config{
				URL: tc.url, Requests: 4, Concurrency: 2, KeepAlive: tc.keepAlive,
				Proxy: tc.scheme + "://" + addr, ProxyUser: tc.user,
				ExpectSHA256: sum, TLS: &tls.Config{RootCAs: pool},
			})
			if res.Requests != 4 || res.Failures != tc.wantFail || res.Non2xx != tc.wantNon2xx {
				t.Fatalf("requests %d failures %+v non-2xx %d, want 4 %+v %d (errors %v)",
					res.Requests, res.Failures, res.Non2xx, tc.wantFail, tc.wantNon2xx, res.Errors)
			}
			if tc.wantTarget == "" {
				if got := rec.seen(); len(got) != 0 {
					t.Errorf("front dialed %v for unauthenticated requests", got)
				}
				return
			}
			if res.Bytes != 4*size {
				t.Errorf("bytes %d, want %d", res.Bytes, 4*size)
			}
			// Every byte came through the front: it relayed at least the bodies. The front
			// counts after each write returns, so wait (bounded) for its handlers to finish.
			st := f.Stats()
			for deadline := time.Now().Add(5 * time.Second); (st.Active > 0 || st.BytesDown < 4*size) && time.Now().Before(deadline); st = f.Stats() {
				time.Sleep(5 * time.Millisecond) // polling the front's counters, with a deadline
			}
			if st.BytesDown < 4*size {
				t.Errorf("front relayed %d bytes down, want at least %d", st.BytesDown, 4*size)
			}
			got := rec.seen()
			if !tc.keepAlive && len(got) != 4 {
				t.Errorf("front dialed %d times (%v), want one per request", len(got), got)
			}
			// Keep-alive: one connection per worker that got a request (a busy scheduler
			// may let one worker take all four), and every other request reused one.
			if tc.keepAlive && (len(got) < 1 || len(got) > 2 || int64(len(got))+res.KeepAliveRequests != 4) {
				t.Errorf("front dialed %d times for %d reused requests, want 1 or 2 dials and 4 requests in all",
					len(got), res.KeepAliveRequests)
			}
			for _, g := range got {
				if g != tc.wantTarget {
					t.Errorf("front dialed %q, want %q", g, tc.wantTarget)
				}
			}
			if !strings.HasPrefix(res.Proxy, tc.scheme+"://") || (tc.user != "" && strings.Contains(res.Proxy, "s3cret")) {
				t.Errorf("result proxy %q: want the scheme and no password", res.Proxy)
			}
		})
	}
}
