package e2e

// Clients in the client namespace: external commands (curl, ncat, chromium) whose output
// is hashed as it streams, and a small SOCKS5 client of our own (RFC 1928 CONNECT with
// RFC 1929 auth) that hands back the *net.TCPConn, so tests can half-close, time every
// read and see the proxy's reply code.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"mpath/lab"
	"mpath/socks/sockstest"
)

// cmdResult is what runHashed saw of a command.
type cmdResult struct {
	n      int64  // stdout bytes
	sum    string // hex sha256 of stdout
	head   string // the first 4 KB of stdout
	stderr string
	dur    time.Duration // start to exit
	err    error         // exit error (or hashing error)
}

// runHashed runs name in ns with env added and stdin from in (nil: none), hashing
// stdout as it streams; it kills the command after timeout.
func runHashed(ns string, env []string, in io.Reader, timeout time.Duration, name string, args ...string) cmdResult {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := lab.Command(ns, name, args...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.Stdin = in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return cmdResult{err: err}
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return cmdResult{err: err}
	}
	stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
	defer stop()
	var head headBuf
	n, sum, herr := sockstest.HashReader(io.TeeReader(out, &head))
	err = cmd.Wait()
	r := cmdResult{n: n, sum: sum, head: head.String(), stderr: stderr.String(), dur: time.Since(start), err: err}
	if r.err == nil && herr != nil {
		r.err = herr
	}
	if ctx.Err() != nil {
		r.err = fmt.Errorf("killed after %v: %w", timeout, errors.Join(r.err, ctx.Err()))
	}
	return r
}

// cleanEnv is the environment without proxy variables (a test sets the ones it means).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToLower(k) {
		case "http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// headBuf keeps the first 4 KB written to it.
type headBuf struct{ bytes.Buffer }

func (h *headBuf) Write(p []byte) (int, error) {
	if room := 4096 - h.Len(); room > 0 {
		h.Buffer.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// socksError is a SOCKS5 reply other than success.
type socksError struct{ code byte }

func (e *socksError) Error() string { return fmt.Sprintf("socks5 reply %d", e.code) }

// socksDial connects to target ("host:port"; IPv4 literals go as addresses, anything
// else as a domain name) through the SOCKS5 proxy at proxy, dialled from namespace ns,
// authenticating with user and pass when user is set. The whole handshake is bounded by
// timeout.
func socksDial(ns, proxy, user, pass, target string, timeout time.Duration) (*net.TCPConn, error) {
	c, err := dialIn(ns, proxy, timeout)
	if err != nil {
		return nil, fmt.Errorf("socks dial %s: %w", proxy, err)
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	if err := socksHandshake(c, user, pass, target); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func socksHandshake(c net.Conn, user, pass, target string) error {
	method := byte(0x00)
	if user != "" {
		method = 0x02
	}
	if _, err := c.Write([]byte{5, 1, method}); err != nil {
		return fmt.Errorf("socks greeting: %w", err)
	}
	var b [2]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("socks greeting reply: %w", err)
	}
	if b[0] != 5 || b[1] != method {
		return fmt.Errorf("socks greeting reply %v: method not accepted", b)
	}
	if user != "" {
		req := append([]byte{1, byte(len(user))}, user...)
		req = append(append(req, byte(len(pass))), pass...)
		if _, err := c.Write(req); err != nil {
			return fmt.Errorf("socks auth: %w", err)
		}
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return fmt.Errorf("socks auth reply: %w", err)
		}
		if b[1] != 0 {
			return fmt.Errorf("socks auth: %w", &socksError{code: b[1]})
		}
	}
	host, portS, err := net.SplitHostPort(target)
	if err != nil {
		return err
	}
	port, err := strconv.ParseUint(portS, 10, 16)
	if err != nil {
		return err
	}
	req := []byte{5, 1, 0}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		req = append(append(req, 1), a.AsSlice()...)
	} else {
		req = append(append(req, 3, byte(len(host))), host...)
	}
	req = binary.BigEndian.AppendUint16(req, uint16(port))
	if _, err := c.Write(req); err != nil {
		return fmt.Errorf("socks connect: %w", err)
	}
	var rep [4]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		return fmt.Errorf("socks connect reply: %w", err)
	}
	if rep[1] != 0 {
		return fmt.Errorf("socks connect %s: %w", target, &socksError{code: rep[1]})
	}
	skip := 0
	switch rep[3] {
	case 1:
		skip = 4 + 2
	case 4:
		skip = 16 + 2
	case 3:
		var l [1]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return err
		}
		skip = int(l[0]) + 2
	default:
		return fmt.Errorf("socks connect reply: address type %d", rep[3])
	}
	_, err = io.ReadFull(c, make([]byte, skip))
	return err
}

// progress records when bytes arrive, to find the stalls of a transfer. Safe for
// concurrent use.
type progress struct {
	mu   sync.Mutex
	last time.Time
	n    int64
	gaps []gap // every gap between arrivals longer than minGap
}

// gap is a pause between two arrivals of bytes.
type gap struct {
	d    time.Duration
	end  time.Time // when bytes arrived again
	from int64     // bytes received before the pause
}

const minGap = 50 * time.Millisecond

func newProgress() *progress { return &progress{} }

func (p *progress) add(n int) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	// Gaps count between arrivals only: the wait for the first byte is not a stall.
	if d := now.Sub(p.last); p.n > 0 && d > minGap {
		p.gaps = append(p.gaps, gap{d: d, end: now, from: p.n})
	}
	p.last = now
	p.n += int64(n)
}

// bytes returns how many bytes arrived so far.
func (p *progress) bytes() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// stall returns the longest gap that ended after since (zero if none).
func (p *progress) stall(since time.Time) gap {
	p.mu.Lock()
	defer p.mu.Unlock()
	var g gap
	for _, x := range p.gaps {
		if x.end.After(since) && x.d > g.d {
			g = x
		}
	}
	return g
}

// progressReader reports every read to p.
type progressReader struct {
	r io.Reader
	p *progress
}

func (r progressReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if n > 0 {
		r.p.add(n)
	}
	return n, err
}

// httpGet sends a GET for path over c (an open connection to host) and hashes the body,
// reporting body reads to p (nil: none). It returns the status code, body length and
// hex sha256.
func httpGet(c net.Conn, host, path string, p *progress) (int, int64, string, error) {
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host); err != nil {
		return 0, 0, "", fmt.Errorf("http get %s: %w", path, err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 64<<10), nil)
	if err != nil {
		return 0, 0, "", fmt.Errorf("http get %s: %w", path, err)
	}
	defer resp.Body.Close()
	var body io.Reader = resp.Body
	if p != nil {
		body = progressReader{r: body, p: p}
	}
	n, sum, err := sockstest.HashReader(body)
	if err != nil {
		return resp.StatusCode, n, sum, fmt.Errorf("http get %s: body after %d bytes: %w", path, n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return resp.StatusCode, n, sum, fmt.Errorf("http get %s: %d of %d bytes", path, n, resp.ContentLength)
	}
	return resp.StatusCode, n, sum, nil
}
