package e2e

// Target servers in the exit namespace: Apache serving generated files, and Go servers
// run by the test binary with their listening sockets opened inside the namespace
// (HTTP and HTTPS with deterministic payloads, a TCP source and a hashing TCP sink).

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"mpath/lab"
	"mpath/socks/sockstest"
)

// listenIn opens a TCP listener in namespace ns; it is closed when the test ends.
func listenIn(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := lab.Do(ns, func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialIn opens a kernel TCP connection from namespace ns.
func dialIn(ns, addr string, timeout time.Duration) (*net.TCPConn, error) {
	var c net.Conn
	err := lab.Do(ns, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// waitTCP polls until addr accepts connections from ns.
func waitTCP(t *testing.T, ns, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := dialIn(ns, addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not accepting in %s after %v: %v", addr, ns, timeout, err)
		}
		time.Sleep(pollEvery) // poll interval, not synchronisation
	}
}

// payloadURL is the Go HTTP servers' path for n bytes of sockstest.Payload(n, seed).
func payloadURL(n int64, seed uint64) string {
	return fmt.Sprintf("/bytes?n=%d&seed=%d", n, seed)
}

// goMux serves
//
//	GET /bytes?n=N&seed=S  sockstest.Payload(N, S) with Content-Length
//	GET /page?token=T      a small HTML page whose body names T (for browsers)
//	PUT|POST /sink         "<bytes> <sha256>\n" of the request body
func goMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err1 := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		seed, err2 := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
		if err1 != nil || err2 != nil || n < 0 {
			http.Error(w, "need n and seed", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		w.Header().Set("Content-Type", "application/octet-stream")
		io.Copy(w, sockstest.Payload(n, seed))
	})
	mux.HandleFunc("GET /page", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html><html><head><title>mpath e2e</title></head><body><p id=\"t\">token %s</p>"+
			"<script>document.getElementById('t').setAttribute('data-js', 'ran-' + %q)</script></body></html>\n",
			r.URL.Query().Get("token"), r.URL.Query().Get("token"))
	})
	sink := func(w http.ResponseWriter, r *http.Request) {
		n, sum, err := sockstest.HashReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %s\n", n, sum)
	}
	mux.HandleFunc("PUT /sink", sink)
	mux.HandleFunc("POST /sink", sink)
	return mux
}

// startGoHTTP serves goMux on addr in ns, over TLS with httptest's self-signed
// certificate when tls is set. The server is closed when the test ends.
func startGoHTTP(t *testing.T, ns, addr string, tls bool) {
	t.Helper()
	s := httptest.NewUnstartedServer(goMux())
	s.Listener.Close()
	s.Listener = listenIn(t, ns, addr)
	if tls {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
}

// tcpServer accepts connections in ns and runs handle on each; it closes the listener
// and every open connection, and waits for the handlers, when the test ends.
func tcpServer(t *testing.T, ns, addr string, handle func(c *net.TCPConn)) {
	t.Helper()
	ln := listenIn(t, ns, addr)
	var (
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c.(*net.TCPConn))
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// sourceServer writes sockstest.Payload(n, seed) to every connection, half-closes,
// and waits for the peer's end (so that nothing is reset while in flight).
func sourceServer(t *testing.T, ns, addr string, n int64, seed uint64) {
	tcpServer(t, ns, addr, func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
		if _, err := io.Copy(c, sockstest.Payload(n, seed)); err != nil {
			return
		}
		c.CloseWrite()
		io.Copy(io.Discard, c)
	})
}

// sinkServer reads every connection to its end and answers "<bytes> <sha256>\n". When
// p is not nil, every read is reported to it.
func sinkServer(t *testing.T, ns, addr string, p *progress) {
	tcpServer(t, ns, addr, func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
		var r io.Reader = c
		if p != nil {
			r = progressReader{r: c, p: p}
		}
		n, sum, err := sockstest.HashReader(bufio.NewReaderSize(r, 64<<10))
		if err != nil {
			return
		}
		fmt.Fprintf(c, "%d %s\n", n, sum)
	})
}

// apacheFile is a file Apache serves.
type apacheFile struct {
	size int64
	sum  string // hex sha256
}

// apache is an Apache httpd serving generated files in the exit namespace.
type apache struct {
	addr  string // host:port
	files map[string]apacheFile
}

// startApache writes the named files (size each, content sockstest.Payload(size, i+1)
// in the order of names) to a fresh document root and starts Apache (event MPM, workers
// as www-data) on addr in ns; it waits until Apache accepts connections. Apache is
// stopped and the files removed when the test ends.
func startApache(t *testing.T, ns, addr string, names []string, sizes []int64) *apache {
	t.Helper()
	bin := needTool(t, "apache2", "apache2")
	mods := "/usr/lib/apache2/modules"
	if _, err := os.Stat(filepath.Join(mods, "mod_mpm_event.so")); err != nil {
		t.Skipf("skipping: apache2 modules not found in %s: %v", mods, err)
	}
	// The document root must be readable by www-data: t.TempDir is private to root.
	www, err := os.MkdirTemp("", "mpath-e2e-www-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(www) })
	if err := os.Chmod(www, 0o755); err != nil {
		t.Fatal(err)
	}
	a := &apache{addr: addr, files: map[string]apacheFile{}}
	for i, name := range names {
		f, err := os.OpenFile(filepath.Join(www, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		_, err = io.Copy(io.MultiWriter(f, h), sockstest.Payload(sizes[i], uint64(i+1)))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		a.files[name] = apacheFile{size: sizes[i], sum: hex.EncodeToString(h.Sum(nil))}
	}
	dir := t.TempDir()
	conf := fmt.Sprintf(`ServerRoot %[1]q
ServerName mpath-e2e
Listen %[2]s
PidFile %[1]s/httpd.pid
DefaultRuntimeDir %[1]s
ErrorLog %[1]s/error.log
LogLevel warn
User www-data
Group www-data
LoadModule mpm_event_module %[3]s/mod_mpm_event.so
LoadModule authz_core_module %[3]s/mod_authz_core.so
KeepAlive On
MaxKeepAliveRequests 0
StartServers 2
ServerLimit 16
ThreadsPerChild 25
MaxRequestWorkers 400
DocumentRoot %[4]q
<Directory %[4]q>
  Require all granted
</Directory>
`, dir, addr, mods, www)
	confPath := filepath.Join(dir, "httpd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, ns, "apache", bin, "-f", confPath, "-DFOREGROUND")
	deadline := time.Now().Add(readyTimeout)
	for {
		c, err := dialIn(ns, addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if p.exited() || time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("apache on %s not up (%v): %v\n%s\n%s", addr, p.waitErr, err, p.log(), b)
		}
		time.Sleep(pollEvery) // poll interval, not synchronisation
	}
	return a
}
