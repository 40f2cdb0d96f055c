package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mpath/socks/sockstest"
)

// server is an httptest server that counts requests and new connections.
type server struct {
	*httptest.Server
	requests atomic.Int64
	conns    atomic.Int64
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	s := &server{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		h(w, r)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// payloadHandler serves n bytes of sockstest.Payload(n, seed) with a Content-Length.
func payloadHandler(n int64, seed uint64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		w.Header().Set("Server", "benchtest/1")
		if r.Method != http.MethodHead {
			io.Copy(w, sockstest.Payload(n, seed))
		}
	}
}

func run(t *testing.T, cfg Config) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

// barrier holds each of the first n requests until n have arrived (or 10 s passed), so
// that every one of n workers is known to have a request, and a connection, of its own.
func barrier(n int, h http.HandlerFunc) http.HandlerFunc {
	var arrived atomic.Int64
	all := make(chan struct{})
	return func(w http.ResponseWriter, r *http.Request) {
		switch k := arrived.Add(1); {
		case k < int64(n):
			select {
			case <-all:
			case <-time.After(10 * time.Second):
			}
		case k == int64(n):
			close(all)
		}
		h(w, r)
	}
}

func TestRunCountsExact(t *testing.T) {
	const size = 1 << 20
	for _, keepAlive := range []bool{false, true} {
		t.Run(fmt.Sprintf("keepalive=%v", keepAlive), func(t *testing.T) {
			srv := newServer(t, barrier(4, payloadHandler(size, 7)))
			var seen atomic.Int64
			res := run(t, Config{
				URL: srv.URL + "/file?x=1", Requests: 25, Concurrency: 4, KeepAlive: keepAlive,
				ExpectSHA256: sockstest.PayloadSHA256(size, 7), ExpectLength: size,
				OnRequest: func(Sample) { seen.Add(1) },
			})
			if res.Requests != 25 || res.Failed != 0 || res.Non2xx != 0 {
				t.Fatalf("requests %d failed %d non-2xx %d, want 25 0 0 (errors %v)", res.Requests, res.Failed, res.Non2xx, res.Errors)
			}
			if got := srv.requests.Load(); got != 25 {
				t.Errorf("server saw %d requests, want 25", got)
			}
			if seen.Load() != 25 {
				t.Errorf("OnRequest called %d times, want 25", seen.Load())
			}
			if res.Bytes != 25*size {
				t.Errorf("bytes %d, want %d", res.Bytes, 25*size)
			}
			// Headers come on top of the bodies: at least a status line per response.
			if res.WireBytes <= res.Bytes || res.WireBytes > res.Bytes+25*1024 {
				t.Errorf("wire bytes %d for %d body bytes: want bodies + 25 header blocks", res.WireBytes, res.Bytes)
			}
			if res.DocumentLength != size || res.ServerSoftware != "benchtest/1" || res.DocumentPath != "/file?x=1" {
				t.Errorf("document %d %q %q", res.DocumentLength, res.ServerSoftware, res.DocumentPath)
			}
			wantConns, wantKA := int64(25), int64(0)
			if keepAlive {
				wantConns, wantKA = 4, 21
			}
			if got := srv.conns.Load(); got != wantConns {
				t.Errorf("server saw %d connections, want %d", got, wantConns)
			}
			if res.KeepAliveRequests != wantKA {
				t.Errorf("keep-alive requests %d, want %d", res.KeepAliveRequests, wantKA)
			}
			if res.Total.N != 25 || res.TTFB.N != 25 || res.Total.Min <= 0 || res.TTFB.Max > res.Total.Max {
				t.Errorf("latency dists: total %+v ttfb %+v", res.Total, res.TTFB)
			}
			if res.Elapsed <= 0 || res.BytesPerSecond() != float64(res.Bytes)/res.Elapsed.Seconds() {
				t.Errorf("elapsed %v rate %g", res.Elapsed, res.BytesPerSecond())
			}
		})
	}
}

func TestRunHead(t *testing.T) {
	srv := newServer(t, payloadHandler(5000, 1))
	res := run(t, Config{URL: srv.URL, Method: "head", Requests: 3})
	if res.Requests != 3 || res.Failed != 0 || res.Bytes != 0 || res.Method != "HEAD" || res.DocumentPath != "/" {
		t.Fatalf("HEAD: %+v", res)
	}
}

// truncating answers with a Content-Length of 1000 and closes after 400 bytes.
func truncating(w http.ResponseWriter, r *http.Request) {
	c, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n%s", strings.Repeat("x", 400))
	buf.Flush()
}

func TestRunFailures(t *testing.T) {
	refused := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return "http://" + addr + "/"
	}
	var toggle atomic.Int64
	tests := []struct {
		name    string
		handler http.HandlerFunc // nil: connection refused
		cfg     Config
		want    FailureCounts
		non2xx  int64
		bytes   int64
	}{
		{name: "500", handler: func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "boom", http.StatusInternalServerError)
		}, cfg: Config{ExpectSHA256: strings.Repeat("00", 32)}, non2xx: 6, bytes: 6 * 5},
		{name: "404 keep-alive", handler: http.NotFound, cfg: Config{KeepAlive: true}, non2xx: 6, bytes: 6 * 19},
		{name: "truncated", handler: truncating, want: FailureCounts{Length: 6}, bytes: 6 * 400},
		{name: "wrong sha256", handler: payloadHandler(3000, 2),
			cfg: Config{ExpectSHA256: sockstest.PayloadSHA256(3000, 3)}, want: FailureCounts{SHA256: 6}, bytes: 6 * 3000},
		{name: "expected length", handler: payloadHandler(3000, 2),
			cfg: Config{ExpectLength: 3001}, want: FailureCounts{Length: 6}, bytes: 6 * 3000},
		{name: "refused", cfg: Config{}, want: FailureCounts{Connect: 6}},
		{name: "timeout", handler: func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done() // answers nothing until the client gives up
		}, cfg: Config{Timeout: 50 * time.Millisecond}, want: FailureCounts{Timeout: 6}},
		{name: "variable length", handler: func(w http.ResponseWriter, r *http.Request) {
			payloadHandler(100+100*(toggle.Add(1)%2), 1)(w, r) // 200, 100, 200, ...
		}, cfg: Config{Concurrency: 1}, want: FailureCounts{Length: 3}, bytes: 3*200 + 3*100},
		{name: "variable length accepted", handler: func(w http.ResponseWriter, r *http.Request) {
			payloadHandler(100+100*(toggle.Add(1)%2), 1)(w, r)
		}, cfg: Config{Concurrency: 1, VariableLength: true}, bytes: 3*200 + 3*100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			toggle.Store(0)
			cfg := tc.cfg
			if tc.handler == nil {
				cfg.URL = refused()
			} else {
				cfg.URL = newServer(t, tc.handler).URL
			}
			cfg.Requests = 6
			if cfg.Concurrency == 0 {
				cfg.Concurrency = 3
			}
			res := run(t, cfg)
			if res.Requests != 6 || res.Failures != tc.want || res.Failed != tc.want.sum() || res.Non2xx != tc.non2xx {
				t.Fatalf("requests %d failures %+v (failed %d) non-2xx %d; want 6 %+v %d (errors %v)",
					res.Requests, res.Failures, res.Failed, res.Non2xx, tc.want, tc.non2xx, res.Errors)
			}
			if res.Bytes != tc.bytes {
				t.Errorf("bytes %d, want %d", res.Bytes, tc.bytes)
			}
			if res.Failed > 0 && len(res.Errors) == 0 {
				t.Errorf("failures without an error message")
			}
		})
	}
}

func TestRunTimeLimit(t *testing.T) {
	// The first three requests are answered; the rest hang until the client gives up, so
	// a 300ms run counts exactly three and abandons the fourth without calling it failed.
	var n atomic.Int64
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) > 3 {
			<-r.Context().Done()
			return
		}
		payloadHandler(1000, 1)(w, r)
	})
	start := time.Now()
	res := run(t, Config{URL: srv.URL, Duration: 300 * time.Millisecond})
	if res.Requests != 3 || res.Failed != 0 || res.Bytes != 3000 {
		t.Fatalf("requests %d failed %d bytes %d, want 3 0 3000 (%v)", res.Requests, res.Failed, res.Bytes, res.Errors)
	}
	if wall := time.Since(start); wall < 300*time.Millisecond {
		t.Errorf("run returned after %v, before its 300ms limit", wall)
	}
	// Elapsed ends with the last counted request, not with the abandoned one.
	if res.Elapsed <= 0 || res.Elapsed >= 300*time.Millisecond {
		t.Errorf("elapsed %v, want (0, 300ms)", res.Elapsed)
	}
}

func TestRunCancel(t *testing.T) {
	srv := newServer(t, payloadHandler(1000, 1))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var seen atomic.Int64
	res, err := Run(ctx, Config{URL: srv.URL, Requests: 1_000_000, Concurrency: 2, OnRequest: func(Sample) {
		if seen.Add(1) == 5 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v, want context.Canceled", err)
	}
	if res.Requests < 5 || res.Requests > 6 || res.Failed != 0 {
		t.Fatalf("requests %d failed %d after cancel at the 5th", res.Requests, res.Failed)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		cfg  Config
		want error
	}{
		{Config{URL: "ftp://x/"}, ErrBadURL},
		{Config{URL: "http:///nohost"}, ErrBadURL},
		{Config{URL: "://"}, ErrBadURL},
		{Config{URL: "http://x/", Method: "POST"}, ErrBadConfig},
		{Config{URL: "http://x/", Requests: -1}, ErrBadConfig},
		{Config{URL: "http://x/", ExpectSHA256: "abc"}, ErrBadConfig},
		{Config{URL: "http://x/", Proxy: "socks4://h:1"}, ErrBadProxy},
		{Config{URL: "http://x/", Proxy: "socks5://h"}, ErrBadProxy},
		{Config{URL: "http://x/", Proxy: "http://h:1/path"}, ErrBadProxy},
		{Config{URL: "http://x/", ProxyUser: "a:b"}, ErrBadProxy},
		{Config{URL: "http://x/", Proxy: "socks5h://h:1", ProxyUser: "nocolon"}, ErrBadProxy},
	}
	for _, tc := range tests {
		_, err := Run(context.Background(), tc.cfg)
		if !errors.Is(err, tc.want) {
			t.Errorf("%+v: %v, want %v", tc.cfg, err, tc.want)
		}
	}
	u, err := ParseProxy("socks5://old:pw@127.0.0.1:1080", "new:secret")
	if err != nil || u.User.Username() != "new" || u.Redacted() != "socks5://new:xxxxx@127.0.0.1:1080" {
		t.Errorf("ParseProxy with user: %v %v", u, err)
	}
}

func TestDistPercentilesLikeAB(t *testing.T) {
	var xs []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		xs = append(xs, time.Duration(i)*time.Millisecond)
	}
	d := newDist(xs)
	// ab: sorted[n*p/100] for p < 100, the longest for 100.
	for p, want := range map[float64]int{50: 51, 66: 67, 90: 91, 99: 100, 100: 100, 0: 1} {
		if got := d.Percentile(p); got != time.Duration(want)*time.Millisecond {
			t.Errorf("p%v = %v, want %dms", p, got, want)
		}
	}
	if d.Min != time.Millisecond || d.Max != 100*time.Millisecond || d.Mean != 50500*time.Microsecond ||
		d.Median != 50500*time.Microsecond {
		t.Errorf("min %v max %v mean %v median %v", d.Min, d.Max, d.Mean, d.Median)
	}
	// Sample standard deviation of 1..100 is 29.0115 (ms).
	if sd := d.SD.Seconds() * 1000; sd < 29.01 || sd > 29.02 {
		t.Errorf("sd %v", d.SD)
	}
	if e := newDist(nil); e.Percentile(50) != 0 || e.N != 0 {
		t.Errorf("empty dist %+v", e)
	}
}
