// Package sockstest holds test helpers for package socks and for the packages that wire
// it to a transport: a kernel-TCP FlowDialer, deterministic payloads with their sha256,
// and target servers on loopback (an HTTP server with download and upload-hash
// endpoints, and a raw TCP server with sink, source and echo modes). Everything here
// is safe for concurrent use and cleans up with the test that made it.
package sockstest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"mpath/socks"
)

// KernelFlow returns a FlowDialer that opens a kernel TCP connection to addr and writes
// first on it: the stand-in for the engine (which puts first in the SYN).
func KernelFlow(addr string) socks.FlowDialer {
	return func(ctx context.Context, first func(socks.FlowAddrs) []byte) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		flow := socks.FlowAddrs{Client: c.LocalAddr().(*net.TCPAddr).AddrPort(), Exit: c.RemoteAddr().(*net.TCPAddr).AddrPort()}
		if _, err := c.Write(first(flow)); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
}

// Payload returns a reader of n deterministic pseudo-random bytes for seed.
func Payload(n int64, seed uint64) io.Reader {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return io.LimitReader(rand.NewChaCha8(s), n)
}

// PayloadSHA256 returns the hex sha256 of Payload(n, seed).
func PayloadSHA256(n int64, seed uint64) string {
	h := sha256.New()
	io.Copy(h, Payload(n, seed))
	return hex.EncodeToString(h.Sum(nil))
}

// HashReader reads r to its end and returns the count and hex sha256 of what it read.
func HashReader(r io.Reader) (int64, string, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return n, hex.EncodeToString(h.Sum(nil)), err
}

// HTTPTarget is an HTTP server on 127.0.0.1:
//
//	GET  /bytes?n=N&seed=S   N bytes of Payload(N, S), with Content-Length
//	GET  /stream?n=N&seed=S  the same without Content-Length (chunked)
//	PUT or POST /sink        reads the body, answers "<bytes> <sha256>\n"
type HTTPTarget struct {
	*httptest.Server
	Addr string // host:port
}

// NewHTTPTarget starts an HTTPTarget (TLS when tls is set, with httptest's certificate)
// and closes it when the test ends.
func NewHTTPTarget(tb testing.TB, tls bool) *HTTPTarget {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, seed, ok := payloadParams(w, r)
		if !ok {
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		io.Copy(w, Payload(n, seed))
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		n, seed, ok := payloadParams(w, r)
		if !ok {
			return
		}
		io.Copy(w, Payload(n, seed))
	})
	sink := func(w http.ResponseWriter, r *http.Request) {
		n, sum, err := HashReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %s\n", n, sum)
	}
	mux.HandleFunc("PUT /sink", sink)
	mux.HandleFunc("POST /sink", sink)
	var s *httptest.Server
	if tls {
		s = httptest.NewTLSServer(mux)
	} else {
		s = httptest.NewServer(mux)
	}
	tb.Cleanup(s.Close)
	return &HTTPTarget{Server: s, Addr: s.Listener.Addr().String()}
}

func payloadParams(w http.ResponseWriter, r *http.Request) (int64, uint64, bool) {
	n, err1 := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
	seed, err2 := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
	if err1 != nil || err2 != nil || n < 0 {
		http.Error(w, "need n and seed", http.StatusBadRequest)
		return 0, 0, false
	}
	return n, seed, true
}

// TCPTarget is a raw TCP server on loopback. The first line a client sends picks the
// mode:
//
//	"sink\n"            read to EOF, answer "<bytes> <sha256>\n", close
//	"source N SEED\n"   write Payload(N, SEED), half-close, read to EOF, close
//	"echo\n"            copy everything back; at EOF half-close
type TCPTarget struct {
	Addr string
	ln   net.Listener
	wg   sync.WaitGroup
}

// NewTCPTarget starts a TCPTarget on network ("tcp4" or "tcp6") loopback and stops it
// (waiting for its connections) when the test ends.
func NewTCPTarget(tb testing.TB, network string) *TCPTarget {
	host := "127.0.0.1"
	if network == "tcp6" {
		host = "[::1]"
	}
	ln, err := net.Listen(network, host+":0")
	if err != nil {
		tb.Fatalf("tcp target: %v", err)
	}
	t := &TCPTarget{Addr: ln.Addr().String(), ln: ln}
	conns := make(map[net.Conn]struct{})
	var mu sync.Mutex
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				serveTCP(c)
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		t.wg.Wait()
	})
	return t
}

func serveTCP(c net.Conn) {
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return
	}
	f := strings.Fields(line)
	if len(f) == 0 {
		return
	}
	switch f[0] {
	case "sink":
		n, sum, err := HashReader(br)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "%d %s\n", n, sum)
	case "source":
		if len(f) != 3 {
			return
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		seed, _ := strconv.ParseUint(f[2], 10, 64)
		if _, err := io.Copy(c, Payload(n, seed)); err != nil {
			return
		}
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, br)
	case "echo":
		if _, err := io.Copy(c, br); err != nil {
			return
		}
		c.(*net.TCPConn).CloseWrite()
	}
}
