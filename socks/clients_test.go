package socks_test

// Real clients end to end over kernel TCP on loopback:
//
//	curl / ncat / x/net/proxy / net/http --> SOCKSServer or HTTPServer --> TunnelDialer
//	  --> kernel TCP "flow" --> Exit --> HTTPTarget / TCPTarget
//
// Every transfer is checked by sha256.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"mpath/socks"
	"mpath/socks/sockstest"
)

const bigN = 8 << 20 // bytes per large transfer

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (apt-get install %s)", name, name)
	}
	return p
}

// run runs a command with env added, stdin from in, and returns stdout's length and
// sha256 plus stdout's first 200 bytes (for small answers). It fails t on an exit error.
func run(t *testing.T, env []string, in io.Reader, name string, args ...string) (int64, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var head bytes.Buffer
	n, sum, herr := sockstest.HashReader(io.TeeReader(out, &limitWriter{&head, 200}))
	if err := cmd.Wait(); err != nil || herr != nil {
		t.Fatalf("%s %s: %v %v\nstderr: %s", name, strings.Join(args, " "), err, herr, stderr.String())
	}
	return n, sum, head.String()
}

type limitWriter struct {
	w *bytes.Buffer
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if room := l.n - l.w.Len(); room > 0 {
		l.w.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// payloadFile writes Payload(n, seed) to a temporary file and returns its path.
func payloadFile(t *testing.T, n int64, seed uint64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "payload")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, sockstest.Payload(n, seed)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

func sinkAnswer(n int64, seed uint64) string {
	return fmt.Sprintf("%d %s\n", n, sockstest.PayloadSHA256(n, seed))
}

func TestCurlSOCKS(t *testing.T) {
	checkLeaks(t)
	curl := needTool(t, "curl")
	users := map[string]string{"alice": "s3cret pass"}
	s := newStack(t, stackOpts{})
	sa := newStack(t, stackOpts{users: users})
	web := sockstest.NewHTTPTarget(t, false)
	_, port, _ := net.SplitHostPort(web.Addr)
	want := sockstest.PayloadSHA256(bigN, 1)
	up := payloadFile(t, bigN, 2)

	// --socks5-hostname: the name must reach the Dialer (resolved at the exit).
	name := "target.test:" + port
	n, sum, _ := run(t, nil, nil, curl, "-sS", "--fail", "--socks5-hostname", s.socksAddr,
		fmt.Sprintf("http://%s/bytes?n=%d&seed=1", name, bigN))
	if n != bigN || sum != want {
		t.Errorf("--socks5-hostname download: %d bytes %s, want %d %s", n, sum, bigN, want)
	}
	if got := s.rec.asked(); !contains(got, name) {
		t.Errorf("Dialer asked for %v, want the unresolved name %s", got, name)
	}
	// --socks5: curl resolves, the Dialer gets an address.
	n, sum, _ = run(t, nil, nil, curl, "-sS", "--fail", "--socks5", s.socksAddr,
		fmt.Sprintf("http://%s/bytes?n=%d&seed=1", web.Addr, bigN))
	if n != bigN || sum != want {
		t.Errorf("--socks5 download: %d bytes %s", n, sum)
	}
	if got := s.rec.asked(); !contains(got, web.Addr) {
		t.Errorf("Dialer asked for %v, want %s", got, web.Addr)
	}
	// Upload with authentication.
	_, _, body := run(t, nil, nil, curl, "-sS", "--fail", "--socks5-hostname", sa.socksAddr,
		"--proxy-user", "alice:s3cret pass", "-T", up, "http://"+name+"/sink")
	if body != sinkAnswer(bigN, 2) {
		t.Errorf("authenticated upload: server saw %q, want %q", body, sinkAnswer(bigN, 2))
	}
	// Wrong password: curl fails, nothing is dialled.
	before := len(sa.rec.asked())
	cmd := exec.Command(curl, "-sS", "--socks5-hostname", sa.socksAddr, "--proxy-user", "alice:wrong", "http://"+name+"/bytes?n=1&seed=1")
	if err := cmd.Run(); err == nil {
		t.Error("curl with a wrong SOCKS password succeeded")
	}
	if len(sa.rec.asked()) != before {
		t.Error("a wrong password reached the Dialer")
	}
	if st := sa.socks.Stats(); st.AuthFailed != 1 {
		t.Errorf("AuthFailed = %d, want 1", st.AuthFailed)
	}
	// A denied target through the whole chain: curl reports the SOCKS refusal.
	var stderr bytes.Buffer
	cmd = exec.Command(curl, "-sS", "--socks5-hostname", s.socksAddr, "http://192.0.2.1:80/")
	cmd.Stderr = &stderr
	// curl 7.88 prints the reply code: "Can't complete SOCKS5 connection to 192.0.2.1. (2)".
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "(2)") {
		t.Errorf("denied target: curl %v: %s", err, stderr.String())
	}
}

func TestCurlHTTPProxy(t *testing.T) {
	checkLeaks(t)
	curl := needTool(t, "curl")
	s := newStack(t, stackOpts{})
	web := sockstest.NewHTTPTarget(t, false)
	webTLS := sockstest.NewHTTPTarget(t, true)
	_, port, _ := net.SplitHostPort(web.Addr)
	_, tlsPort, _ := net.SplitHostPort(webTLS.Addr)
	env := []string{"http_proxy=http://" + s.httpAddr, "https_proxy=http://" + s.httpAddr, "no_proxy=", "NO_PROXY="}
	want := sockstest.PayloadSHA256(bigN, 3)
	base := "http://target.test:" + port

	// http_proxy: absolute-form GET, with and without a Content-Length, on one
	// keep-alive client connection.
	dir := t.TempDir()
	args := []string{"-sS", "--fail",
		fmt.Sprintf("%s/bytes?n=%d&seed=3", base, bigN), "-o", filepath.Join(dir, "a"),
		fmt.Sprintf("%s/stream?n=%d&seed=3", base, bigN), "-o", filepath.Join(dir, "b")}
	run(t, env, nil, curl, args...)
	for _, f := range []string{"a", "b"} {
		fh, _ := os.Open(filepath.Join(dir, f))
		n, sum, _ := sockstest.HashReader(fh)
		fh.Close()
		if n != bigN || sum != want {
			t.Errorf("http_proxy download %s: %d bytes %s", f, n, sum)
		}
	}
	if st := s.http.Stats(); st.Accepted != 1 || st.Relayed != 2 {
		t.Errorf("two requests: %d client conns, %d relayed; want 1 keep-alive conn carrying 2", st.Accepted, st.Relayed)
	}
	// http_proxy upload (PUT with a body, Expect: 100-continue from curl).
	up := payloadFile(t, bigN, 4)
	if _, _, body := run(t, env, nil, curl, "-sS", "--fail", "-T", up, base+"/sink"); body != sinkAnswer(bigN, 4) {
		t.Errorf("http_proxy upload: server saw %q", body)
	}
	// https_proxy: CONNECT, TLS inside the tunnel.
	n, sum, _ := run(t, env, nil, curl, "-sS", "--fail", "-k",
		fmt.Sprintf("https://target.test:%s/bytes?n=%d&seed=3", tlsPort, bigN))
	if n != bigN || sum != want {
		t.Errorf("https_proxy download: %d bytes %s", n, sum)
	}
	if _, _, body := run(t, env, nil, curl, "-sS", "--fail", "-k", "-T", up,
		"https://target.test:"+tlsPort+"/sink"); body != sinkAnswer(bigN, 4) {
		t.Errorf("https_proxy upload: server saw %q", body)
	}
	// CONNECT to a plain http target (curl -p).
	n, sum, _ = run(t, nil, nil, curl, "-sS", "--fail", "-p", "-x", "http://"+s.httpAddr,
		fmt.Sprintf("%s/bytes?n=%d&seed=3", base, bigN))
	if n != bigN || sum != want {
		t.Errorf("curl -p download: %d bytes %s", n, sum)
	}
	if got := s.rec.asked(); !contains(got, "target.test:"+port) || !contains(got, "target.test:"+tlsPort) {
		t.Errorf("Dialer asked for %v, want the unresolved names", got)
	}
	// Errors: a denied target is 403, a name the exit cannot resolve 502.
	for target, want := range map[string]string{"http://192.0.2.1/": "403", "http://nosuch.test/": "502"} {
		_, _, code := run(t, env, nil, curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", target)
		if code != want {
			t.Errorf("%s: status %s, want %s", target, code, want)
		}
	}
}

func TestHTTPProxyAuth(t *testing.T) {
	checkLeaks(t)
	curl := needTool(t, "curl")
	s := newStack(t, stackOpts{users: map[string]string{"bob": "pw:with:colons"}})
	web := sockstest.NewHTTPTarget(t, false)
	u := fmt.Sprintf("http://%s/bytes?n=1000&seed=5", web.Addr)
	_, _, code := run(t, nil, nil, curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://"+s.httpAddr, u)
	if code != "407" {
		t.Errorf("no credentials: status %s, want 407", code)
	}
	_, _, code = run(t, nil, nil, curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://"+s.httpAddr, "-U", "bob:wrong", u)
	if code != "407" {
		t.Errorf("wrong password: status %s, want 407", code)
	}
	n, sum, _ := run(t, nil, nil, curl, "-sS", "--fail", "-x", "http://"+s.httpAddr, "-U", "bob:pw:with:colons", u)
	if n != 1000 || sum != sockstest.PayloadSHA256(1000, 5) {
		t.Errorf("with credentials: %d bytes", n)
	}
	n, sum, _ = run(t, nil, nil, curl, "-sS", "--fail", "-p", "-x", "http://"+s.httpAddr, "-U", "bob:pw:with:colons", u)
	if n != 1000 || sum != sockstest.PayloadSHA256(1000, 5) {
		t.Errorf("CONNECT with credentials: %d bytes", n)
	}
	if st := s.http.Stats(); st.AuthFailed != 2 {
		t.Errorf("AuthFailed = %d, want 2", st.AuthFailed)
	}
	if len(s.rec.asked()) != 2 {
		t.Errorf("Dialer asked %v: unauthenticated requests must not dial", s.rec.asked())
	}
}

func TestNcatSOCKS(t *testing.T) {
	checkLeaks(t)
	ncat := needTool(t, "ncat")
	tgt := sockstest.NewTCPTarget(t, "tcp4")
	host, port, _ := net.SplitHostPort(tgt.Addr)
	for _, users := range []map[string]string{nil, {"carol": "ncat-pass"}} {
		s := newStack(t, stackOpts{users: users})
		args := []string{"--proxy", s.socksAddr, "--proxy-type", "socks5"}
		if users != nil {
			args = append(args, "--proxy-auth", "carol:ncat-pass")
		}
		// Upload: stdin to the sink, which answers with what it saw after ncat's EOF
		// (half-close through SOCKS, tunnel and exit).
		in := io.MultiReader(strings.NewReader("sink\n"), sockstest.Payload(bigN, 6))
		_, _, answer := run(t, nil, in, ncat, append(args, host, port)...)
		if answer != sinkAnswer(bigN, 6) {
			t.Errorf("auth=%v upload: sink saw %q, want %q", users != nil, answer, sinkAnswer(bigN, 6))
		}
		// Download: the request, EOF on stdin, then the payload comes back.
		in = strings.NewReader(fmt.Sprintf("source %d 7\n", bigN))
		n, sum, _ := run(t, nil, in, ncat, append(args, host, port)...)
		if n != bigN || sum != sockstest.PayloadSHA256(bigN, 7) {
			t.Errorf("auth=%v download: %d bytes %s", users != nil, n, sum)
		}
		// A name, resolved at the exit.
		in = strings.NewReader("source 1000 8\n")
		n, sum, _ = run(t, nil, in, ncat, append(args, "--proxy-dns", "remote", "target.test", port)...)
		if n != 1000 || sum != sockstest.PayloadSHA256(1000, 8) {
			t.Errorf("auth=%v name target: %d bytes", users != nil, n)
		}
		if !contains(s.rec.asked(), "target.test:"+port) {
			t.Errorf("Dialer asked %v, want target.test:%s", s.rec.asked(), port)
		}
	}
}

// socksDial dials target through the SOCKS front with x/net/proxy.
func socksDial(t *testing.T, socksAddr string, auth *proxy.Auth, target string) net.Conn {
	t.Helper()
	d, err := proxy.SOCKS5("tcp", socksAddr, auth, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.(proxy.ContextDialer).DialContext(context.Background(), "tcp", target)
	if err != nil {
		t.Fatalf("socks dial %s: %v", target, err)
	}
	return c
}

// echoCheck sends n bytes of Payload(n, seed) through c to an echo target while reading
// the echo, half-closes, and checks the echo byte for byte.
func echoCheck(c net.Conn, n int64, seed uint64) error {
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, io.MultiReader(strings.NewReader("echo\n"), sockstest.Payload(n, seed)))
		if err == nil {
			err = closeWrite(c)
		}
		errc <- err
	}()
	got, sum, err := sockstest.HashReader(c)
	if werr := <-errc; werr != nil {
		return fmt.Errorf("write: %w", werr)
	}
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if want := sockstest.PayloadSHA256(n, seed); got != n || sum != want {
		return fmt.Errorf("echo of %d bytes came back as %d bytes, sha256 %s want %s", n, got, sum, want)
	}
	return nil
}

// closeWrite half-closes c, unwrapping x/net/proxy's SOCKS conn (a struct embedding the
// net.Conn it came over, which hides CloseWrite).
func closeWrite(c net.Conn) error {
	for {
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			return cw.CloseWrite()
		}
		v := reflect.ValueOf(c)
		if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
			return fmt.Errorf("cannot half-close %T", c)
		}
		inner, ok := v.Elem().FieldByName("Conn").Interface().(net.Conn)
		if !ok {
			return fmt.Errorf("cannot half-close %T", c)
		}
		c = inner
	}
}

func TestGoProxyClients(t *testing.T) {
	checkLeaks(t)
	tgt := sockstest.NewTCPTarget(t, "tcp4")
	tgt6 := sockstest.NewTCPTarget(t, "tcp6")
	_, port, _ := net.SplitHostPort(tgt.Addr)
	s := newStack(t, stackOpts{users: map[string]string{"dave": "x"}})
	auth := &proxy.Auth{User: "dave", Password: "x"}
	for i, target := range []string{tgt.Addr, tgt6.Addr, "target.test:" + port} {
		if err := echoCheck(socksDial(t, s.socksAddr, auth, target), 1<<20, uint64(i)); err != nil {
			t.Errorf("x/net/proxy to %s: %v", target, err)
		}
	}
	if got := s.rec.asked(); !contains(got, tgt6.Addr) {
		t.Errorf("Dialer asked %v, want the IPv6 target %s", got, tgt6.Addr)
	}
	// net/http with the HTTP front as its proxy: absolute-form for http.
	web := sockstest.NewHTTPTarget(t, true)
	plain := sockstest.NewHTTPTarget(t, false)
	pu, _ := url.Parse("http://dave:x@" + s.httpAddr)
	tr := &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	for _, u := range []string{
		fmt.Sprintf("%s/bytes?n=%d&seed=9", plain.URL, 2<<20),
		fmt.Sprintf("%s/stream?n=%d&seed=9", plain.URL, 2<<20),
		fmt.Sprintf("%s/bytes?n=%d&seed=9", web.URL, 2<<20), // https: CONNECT
	} {
		resp, err := client.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		n, sum, err := sockstest.HashReader(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || n != 2<<20 || sum != sockstest.PayloadSHA256(2<<20, 9) {
			t.Errorf("GET %s via proxy: %s, %d bytes, %v", u, resp.Status, n, err)
		}
	}
	resp, err := client.Post(plain.URL+"/sink", "application/octet-stream", sockstest.Payload(3<<20, 10))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != sinkAnswer(3<<20, 10) {
		t.Errorf("POST via proxy: server saw %q", body)
	}
}

func TestConcurrentTransfers(t *testing.T) {
	checkLeaks(t)
	tgt := sockstest.NewTCPTarget(t, "tcp4")
	s := newStack(t, stackOpts{})
	const conns, size = 100, 256 << 10
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	start := time.Now()
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, _ := proxy.SOCKS5("tcp", s.socksAddr, nil, proxy.Direct)
			c, err := d.(proxy.ContextDialer).DialContext(context.Background(), "tcp", tgt.Addr)
			if err != nil {
				errs <- fmt.Errorf("conn %d: dial: %w", i, err)
				return
			}
			if err := echoCheck(c, size, uint64(1000+i)); err != nil {
				errs <- fmt.Errorf("conn %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d concurrent echo transfers of %d KiB each way in %v", conns, size>>10, time.Since(start))
	waitFor(t, 10*time.Second, "all flows to end", func() bool {
		return s.socks.Stats().Active == 0 && s.exit.Stats().Active == 0
	})
	st, est := s.socks.Stats(), s.exit.Stats()
	if st.Relayed != conns || est.Relayed != conns {
		t.Errorf("relayed: front %d, exit %d, want %d", st.Relayed, est.Relayed, conns)
	}
	if wantUp := uint64(conns * (size + 5)); st.BytesUp != wantUp || est.BytesToTarget != wantUp {
		t.Errorf("bytes up: front %d exit %d, want %d", st.BytesUp, est.BytesToTarget, wantUp)
	}
	if wantDown := uint64(conns * size); st.BytesDown != wantDown || est.BytesFromTarget != wantDown {
		t.Errorf("bytes down: front %d exit %d, want %d", st.BytesDown, est.BytesFromTarget, wantDown)
	}
}

// TestHTTPFrontRaw checks what clients do not exercise: hop-by-hop headers, origin form,
// 400 on non-proxy requests, 502/504 on dial errors, the upstream kept per client conn.
func TestHTTPFrontRaw(t *testing.T) {
	checkLeaks(t)
	// An upstream that records request heads and answers with a length-less body.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	heads := make(chan string, 10)
	var upConns sync.WaitGroup
	upConns.Add(1)
	go func() {
		defer upConns.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			upConns.Add(1)
			go func() {
				defer upConns.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					var h bytes.Buffer
					fmt.Fprintf(&h, "%s %s %s\n", req.Method, req.RequestURI, req.Host)
					req.Header.Write(&h)
					heads <- h.String()
					io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-End: 2\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); upConns.Wait() })

	d := &fakeDialer{}
	hs, err := socks.NewHTTPServer(socks.HTTPConfig{Dialer: d})
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
	for i := range 2 {
		fmt.Fprintf(c, "GET http://%s/path?q=%d HTTP/1.1\r\nHost: %s\r\nProxy-Connection: keep-alive\r\nConnection: X-Drop\r\nX-Drop: secret\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nX-Keep: yes\r\n\r\n",
			ln.Addr(), i, ln.Addr())
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != "ok" || resp.Header.Get("X-Hop") != "" || resp.Header.Get("Keep-Alive") != "" || resp.Header.Get("X-End") != "2" {
			t.Errorf("response %d: body %q headers %v", i, body, resp.Header)
		}
		h := <-heads
		if !strings.HasPrefix(h, fmt.Sprintf("GET /path?q=%d %s\n", i, ln.Addr())) {
			t.Errorf("upstream saw %q, want origin form", h)
		}
		for _, bad := range []string{"Proxy-Connection", "X-Drop", "Proxy-Authorization", "User-Agent"} {
			if strings.Contains(h, bad) {
				t.Errorf("upstream saw %s:\n%s", bad, h)
			}
		}
		if !strings.Contains(h, "X-Keep: yes") {
			t.Errorf("upstream lost an end-to-end header:\n%s", h)
		}
	}
	if n := d.calls.Load(); n != 1 {
		t.Errorf("two requests to one host dialled %d times, want 1 (kept upstream)", n)
	}
	// Non-proxy request: 400.
	if got := exchange(t, addr, []byte("GET /local HTTP/1.1\r\nHost: x\r\n\r\n"), false); !bytes.HasPrefix(got, []byte("HTTP/1.1 400 ")) {
		t.Errorf("origin-form request: %q", got)
	}
	// Garbage: 400.
	if got := exchange(t, addr, []byte("\x05\x01\x00garbage\r\n\r\n"), false); !bytes.HasPrefix(got, []byte("HTTP/1.1 400 ")) {
		t.Errorf("garbage: %q", got)
	}
	// Dial errors.
	for err, want := range map[error]string{
		&socks.ReplyError{Code: socks.ReplyRefused}:         "502",
		&socks.ReplyError{Code: socks.ReplyTTLExpired}:      "504",
		&socks.ReplyError{Code: socks.ReplyNotAllowed}:      "403",
		&socks.ReplyError{Code: socks.ReplyHostUnreachable}: "502",
	} {
		hs2, _ := socks.NewHTTPServer(socks.HTTPConfig{Dialer: &fakeDialer{err: err}})
		a2 := serve(t, hs2)
		for _, req := range []string{"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
			"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"} {
			got := exchange(t, a2, []byte(req), false)
			if !bytes.HasPrefix(got, []byte("HTTP/1.1 "+want+" ")) {
				t.Errorf("dialer error %v: %q, want %s", err, got, want)
			}
		}
	}
}

func TestCheckListenAndLoadUsers(t *testing.T) {
	for _, tc := range []struct {
		addr        string
		auth, force bool
		ok          bool
	}{
		{"127.0.0.1:1080", false, false, true},
		{"[::1]:1080", false, false, true},
		{"localhost:1080", false, false, true},
		{"127.9.9.9:1080", false, false, true},
		{":1080", false, false, false},
		{"0.0.0.0:1080", false, false, false},
		{"[::]:1080", false, false, false},
		{"192.0.2.1:1080", false, false, false},
		{"proxy.example:1080", false, false, false},
		{"0.0.0.0:1080", true, false, true},
		{"0.0.0.0:1080", false, true, true},
		{"no-port", true, true, false},
	} {
		err := socks.CheckListen(tc.addr, tc.auth, tc.force)
		if (err == nil) != tc.ok {
			t.Errorf("CheckListen(%q, auth=%v, force=%v) = %v", tc.addr, tc.auth, tc.force, err)
		}
	}
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("hunter2 with spaces\r\nsecond line ignored\n"), 0o600)
	u, err := socks.LoadUsers("eve", pw)
	if err != nil || len(u) != 1 || u["eve"] != "hunter2 with spaces" {
		t.Errorf("LoadUsers: %v %v", u, err)
	}
	if u, err := socks.LoadUsers("", ""); u != nil || err != nil {
		t.Errorf("LoadUsers without user: %v %v", u, err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	for _, args := range [][2]string{{"eve", ""}, {"", pw}, {"eve", empty}, {"eve", filepath.Join(dir, "missing")}} {
		if _, err := socks.LoadUsers(args[0], args[1]); err == nil {
			t.Errorf("LoadUsers(%q, %q) succeeded", args[0], args[1])
		}
	}
	key := filepath.Join(dir, "key")
	os.WriteFile(key, []byte("3f9a0c17d2b84e65a1c09f7e3b2d5a8c41e6f0b79d23c58a6e1f04b7c92d3a5e\n"), 0o600)
	if k, err := socks.LoadKey(key); err != nil || string(k) != "3f9a0c17d2b84e65a1c09f7e3b2d5a8c41e6f0b79d23c58a6e1f04b7c92d3a5e" {
		t.Errorf("LoadKey: %q %v", k, err)
	}
	os.WriteFile(key, []byte("short\n"), 0o600)
	if _, err := socks.LoadKey(key); err == nil {
		t.Error("LoadKey accepted a short key")
	}
}

func TestHTTPHandshakeTimeoutAndLimit(t *testing.T) {
	checkLeaks(t)
	hs, err := socks.NewHTTPServer(socks.HTTPConfig{Dialer: &fakeDialer{}, HandshakeTimeout: 200 * time.Millisecond, MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, hs)
	start := time.Now()
	if got := exchange(t, addr, []byte("CONNECT example.com:443 HTTP/1.1\r\nHost: exa"), false); len(got) != 0 {
		t.Errorf("slow request head: got %q, want a silent close", got)
	}
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("closed after %v, before the handshake timeout", el)
	}
	waitFor(t, 5*time.Second, "handler to end", func() bool { return hs.Stats().Active == 0 })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, 5*time.Second, "one active connection", func() bool { return hs.Stats().Active == 1 })
	if got := exchange(t, addr, []byte("GET http://example.com/ HTTP/1.1\r\n\r\n"), false); len(got) != 0 {
		t.Errorf("over the limit: got %q, want a close", got)
	}
	if st := hs.Stats(); st.OverLimit != 1 || st.HandshakeFailed != 1 {
		t.Errorf("stats %+v: want 1 over limit, 1 failed handshake", st)
	}
}

// BenchmarkTunnelDownload measures a download through the whole chain on loopback:
// SOCKS front -> TunnelDialer -> kernel TCP flow -> Exit -> TCP source, one new
// connection (with its exit request) per 4 MiB.
func BenchmarkTunnelDownload(b *testing.B) {
	tgt := sockstest.NewTCPTarget(b, "tcp4")
	s := newStack(b, stackOpts{})
	const size = 4 << 20
	d, _ := proxy.SOCKS5("tcp", s.socksAddr, nil, proxy.Direct)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		c, err := d.Dial("tcp", tgt.Addr)
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(c, "source %d 1\n", size)
		n, err := io.Copy(io.Discard, c)
		c.Close()
		if err != nil || n != size {
			b.Fatalf("got %d bytes, %v", n, err)
		}
	}
}
