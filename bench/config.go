package bench

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
)

// DefaultTimeout bounds one request when Config.Timeout is 0 (ab's -s default).
const DefaultTimeout = 30 * time.Second

// UserAgent is sent unless Config.Header sets one.
const UserAgent = "mpath-bench/1"

// Config describes one run. The zero value of each field picks its default; URL is
// required. A Config is read-only once passed to Run.
type Config struct {
	// URL is the http:// or https:// URL every request fetches.
	URL string
	// Method is GET (default) or HEAD.
	Method string
	// Requests is the number of requests to complete. 0 means 1, or no limit when
	// Duration is set (then Duration alone ends the run).
	Requests int
	// Concurrency is the number of workers, each with one request in flight (default 1;
	// never more than Requests).
	Concurrency int
	// Duration ends the run after this long (ab -t); requests still in flight then are
	// abandoned and not counted. 0: no time limit.
	Duration time.Duration
	// Timeout bounds each request from start to the end of its body (DefaultTimeout
	// when 0); a request past it counts as a Timeout failure.
	Timeout time.Duration
	// KeepAlive keeps one connection per worker alive across its requests (ab -k).
	// Without it every request opens its own connection and asks the server to close
	// it (plain ab).
	KeepAlive bool
	// Proxy is "" (direct), socks5://HOST:PORT (names resolved here, once per run),
	// socks5h://HOST:PORT (names resolved by the proxy), or http://HOST:PORT (absolute-
	// form requests for http URLs, CONNECT for https). User info in it authenticates.
	Proxy string
	// ProxyUser is "user:password" for the proxy; it replaces user info in Proxy.
	ProxyUser string
	// Header is added to every request (Host and User-Agent may be overridden here).
	Header http.Header
	// ExpectSHA256 is the hex sha256 every 2xx body must have; "" checks nothing.
	ExpectSHA256 string
	// ExpectLength, when > 0, is the length every 2xx body must have.
	ExpectLength int64
	// VariableLength accepts 2xx bodies whose length differs from the first one's
	// (ab -l). Without it such a response is a Length failure, as in ab.
	VariableLength bool
	// TLS configures https (nil: Go's defaults, certificates verified).
	TLS *tls.Config
	// Dial opens the TCP connections (to the server, or to the proxy); nil: a
	// net.Dialer. A sweep uses it to dial from inside a network namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// OnRequest, when set, is called after every counted request, from the workers'
	// goroutines at once: it must be safe for concurrent use and quick.
	OnRequest func(Sample)
	// Logger gets the first occurrence of each distinct failure at debug level (nil:
	// no logs).
	Logger *zap.Logger
}

// Errors returned by Run for a Config it cannot use; they are wrapped with detail.
var (
	ErrBadURL    = errors.New("bad URL")
	ErrBadProxy  = errors.New("bad proxy")
	ErrBadConfig = errors.New("bad config")
)

// plan is a validated Config with defaults filled in.
type plan struct {
	cfg         Config
	target      *url.URL
	method      string
	requests    int64 // 0: until Duration
	concurrency int
	timeout     time.Duration
	proxy       *url.URL // nil: direct
	wantSum     []byte   // nil: no check
}

func newPlan(cfg Config) (*plan, error) {
	p := &plan{cfg: cfg}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%w: %q: scheme must be http or https", ErrBadURL, cfg.URL)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%w: %q: no host", ErrBadURL, cfg.URL)
	}
	if u.Path == "" {
		u.Path = "/"
	}
	p.target = u

	switch m := strings.ToUpper(cfg.Method); m {
	case "", http.MethodGet:
		p.method = http.MethodGet
	case http.MethodHead:
		p.method = http.MethodHead
	default:
		return nil, fmt.Errorf("%w: method %q: only GET and HEAD", ErrBadConfig, cfg.Method)
	}
	if cfg.Requests < 0 || cfg.Concurrency < 0 || cfg.Duration < 0 || cfg.Timeout < 0 || cfg.ExpectLength < 0 {
		return nil, fmt.Errorf("%w: negative requests, concurrency, duration, timeout or length", ErrBadConfig)
	}
	p.requests = int64(cfg.Requests)
	if p.requests == 0 && cfg.Duration == 0 {
		p.requests = 1
	}
	p.concurrency = max(cfg.Concurrency, 1)
	if p.requests > 0 && int64(p.concurrency) > p.requests {
		p.concurrency = int(p.requests)
	}
	p.timeout = cfg.Timeout
	if p.timeout == 0 {
		p.timeout = DefaultTimeout
	}
	if cfg.ExpectSHA256 != "" {
		sum, err := hex.DecodeString(strings.TrimSpace(cfg.ExpectSHA256))
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("%w: expected sha256 %q is not 64 hex digits", ErrBadConfig, cfg.ExpectSHA256)
		}
		p.wantSum = sum
	}
	p.proxy, err = ParseProxy(cfg.Proxy, cfg.ProxyUser)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// ParseProxy checks a proxy URL (see Config.Proxy) and returns it with user ("user:pass",
// may be empty) as its user info. It returns nil for "".
func ParseProxy(raw, user string) (*url.URL, error) {
	if raw == "" {
		if user != "" {
			return nil, fmt.Errorf("%w: a proxy user without a proxy", ErrBadProxy)
		}
		return nil, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadProxy, err)
	}
	switch u.Scheme {
	case "socks5", "socks5h", "http", "https":
	default:
		return nil, fmt.Errorf("%w: %q: scheme must be socks5, socks5h, http or https", ErrBadProxy, raw)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return nil, fmt.Errorf("%w: %q: need HOST:PORT", ErrBadProxy, raw)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("%w: %q: a proxy URL has no path or query", ErrBadProxy, raw)
	}
	u.Path = ""
	if user != "" {
		name, pass, ok := strings.Cut(user, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("%w: proxy user must be user:password", ErrBadProxy)
		}
		u.User = url.UserPassword(name, pass)
	}
	return u, nil
}

// HashFile returns the hex sha256 and the size of the file at path: the expectation for
// Config.ExpectSHA256 and Config.ExpectLength (`mpath bench --expect FILE`).
func HashFile(path string) (sum string, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("hash file: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("hash file %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// redact returns u as text with any password replaced by "xxxxx".
func redact(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.Redacted()
}
