package main

// What the serving roles (client, exit, relay) share around their work: logging flags,
// the metrics and pprof endpoints (on loopback unless asked otherwise), readiness
// notification for systemd, the access log, and errors that say which capability is
// missing.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"mpath/socks"
	"mpath/tcp"
)

// Default metrics endpoints: loopback, one port per role so that the roles can share a
// host (and `mpath status` finds a client with no flags).
const (
	defaultClientMetrics = "127.0.0.1:9464"
	defaultExitMetrics   = "127.0.0.1:9465"
	defaultRelayMetrics  = "127.0.0.1:9466"
)

// opsFlags are the logging and endpoint flags of the serving roles.
type opsFlags struct {
	metrics       string
	metricsPublic bool
	pprof         string
	pprofPublic   bool
	logLevel      string
	logFormat     string
	debug         bool
}

func (o *opsFlags) register(fs *flag.FlagSet, defaultMetrics string) {
	fs.StringVar(&o.metrics, "metrics", defaultMetrics, "serve Prometheus metrics at http://`ADDR`/metrics (off: none); an address other than loopback needs --metrics-public")
	fs.BoolVar(&o.metricsPublic, "metrics-public", false, "allow --metrics on an address other than loopback (anyone who reaches it sees paths, addresses and counters)")
	fs.StringVar(&o.pprof, "pprof", "", "serve Go's net/http/pprof at `ADDR` for profiling (empty: off); an address other than loopback needs --pprof-public")
	fs.BoolVar(&o.pprofPublic, "pprof-public", false, "allow --pprof on an address other than loopback")
	fs.StringVar(&o.logLevel, "log-level", "info", "least severe log `LEVEL`: debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "auto", "log `FORMAT`: console, json, or auto (console on a terminal, json otherwise)")
	fs.BoolVar(&o.debug, "debug", false, "same as --log-level debug")
}

// check validates the flags (no side effects).
func (o *opsFlags) check() error {
	if o.metrics == "off" {
		o.metrics = ""
	}
	if _, err := zapcore.ParseLevel(o.logLevel); err != nil {
		return usageErrorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	switch o.logFormat {
	case "auto", "console", "json":
	default:
		return usageErrorf("--log-format %q: want console, json or auto", o.logFormat)
	}
	if err := checkEndpoint("metrics", o.metrics, o.metricsPublic); err != nil {
		return err
	}
	return checkEndpoint("pprof", o.pprof, o.pprofPublic)
}

// checkEndpoint refuses a listen address that is not loopback unless public is set.
func checkEndpoint(flagName, addr string, public bool) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return usageErrorf("--%s %q: want HOST:PORT, e.g. 127.0.0.1:9464", flagName, addr)
	}
	if public || strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return usageErrorf("--%s %s is not a loopback address: add --%s-public to serve it there on purpose", flagName, addr, flagName)
}

// logger returns the process logger named role.
func (o *opsFlags) logger(role string) *zap.Logger {
	level, _ := zapcore.ParseLevel(o.logLevel) // checked by check
	if o.debug {
		level = zapcore.DebugLevel
	}
	return newLogger(level, o.logFormat).Named(role)
}

// newLogger returns a logger at level in format (auto: console on a terminal, else json).
func newLogger(level zapcore.Level, format string) *zap.Logger {
	if format == "auto" || format == "" {
		format = "json"
		if isTerminal(os.Stderr) {
			format = "console"
		}
	}
	var cfg zap.Config
	if format == "console" {
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
	} else {
		cfg = zap.NewProductionConfig()
	}
	cfg.Level = zap.NewAtomicLevelAt(level)
	l, err := cfg.Build()
	if err != nil {
		return zap.NewNop()
	}
	return l
}

// newRegistry returns a registry with the Go runtime, process and build-information
// collectors and cs.
func newRegistry(cs ...prometheus.Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	bi := buildInfo()
	cs = append(cs, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "mpath_build_info",
			Help:        "Always 1; the labels say which mpath build is running.",
			ConstLabels: prometheus.Labels{"version": bi.version, "revision": bi.revision, "goversion": bi.goVersion},
		}, func() float64 { return 1 }))
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	return reg, nil
}

// serveHTTP serves h on addr (empty: nothing) until ctx ends. A failure of the server
// after it started is sent to errc (which must have room: the caller ends the process).
func serveHTTP(ctx context.Context, what, addr string, h http.Handler, errc chan<- error) (string, error) {
	if addr == "" {
		return "", nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			sendErr(errc, fmt.Errorf("%s server: %w", what, err))
		}
	}()
	context.AfterFunc(ctx, func() { srv.Close() })
	return ln.Addr().String(), nil
}

// startEndpoints serves reg's metrics and pprof as o asks, until ctx ends.
func (o *opsFlags) startEndpoints(ctx context.Context, log *zap.Logger, reg *prometheus.Registry, errc chan<- error) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	addr, err := serveHTTP(ctx, "metrics", o.metrics, mux, errc)
	if err != nil {
		return err
	}
	if addr != "" {
		log.Info("metrics", zap.String("url", "http://"+addr+"/metrics"))
	}
	pm := http.NewServeMux()
	pm.HandleFunc("/debug/pprof/", pprof.Index)
	pm.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	pm.HandleFunc("/debug/pprof/profile", pprof.Profile)
	pm.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	pm.HandleFunc("/debug/pprof/trace", pprof.Trace)
	if addr, err = serveHTTP(ctx, "pprof", o.pprof, pm, errc); err != nil {
		return err
	}
	if addr != "" {
		log.Info("pprof", zap.String("url", "http://"+addr+"/debug/pprof/"))
	}
	return nil
}

// sendErr sends err on errc unless errc is full (an earlier error already ends the
// process).
func sendErr(errc chan<- error, err error) {
	select {
	case errc <- err:
	default:
	}
}

// sdNotify sends state (e.g. "READY=1") to systemd's $NOTIFY_SOCKET, if set: what a
// Type=notify unit waits for. No socket, no message.
func sdNotify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if name[0] == '@' {
		name = "\x00" + name[1:] // abstract namespace
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// capabilityHint adds to a permission error which capability is missing and how to
// grant it: raw sockets and packet capture need CAP_NET_RAW, the nftables guard
// CAP_NET_ADMIN.
func capabilityHint(err error) error {
	if err == nil || !errors.Is(err, os.ErrPermission) {
		return err
	}
	capName := "CAP_NET_RAW"
	if msg := strings.ToLower(err.Error()); strings.Contains(msg, "nftables") || strings.Contains(msg, "netlink") ||
		strings.Contains(msg, "guard") {
		capName = "CAP_NET_ADMIN"
	}
	exe, _ := os.Executable()
	if exe == "" {
		exe = "mpath"
	}
	return fmt.Errorf("%w: missing capability %s (raw sockets need CAP_NET_RAW, the nftables guard CAP_NET_ADMIN): run as root, or grant both with 'setcap cap_net_raw,cap_net_admin+ep %s', or in a systemd unit AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN", err, capName, exe)
}

// accessDialer wraps a front's dialer: it times each flow's setup and logs one info
// line per finished connection (target, bytes each way, duration).
type accessDialer struct {
	next  socks.Dialer
	log   *zap.Logger
	setup prometheus.Observer
}

func (d *accessDialer) DialTarget(ctx context.Context, target string) (net.Conn, error) {
	start := time.Now()
	c, err := d.next.DialTarget(ctx, target)
	if err != nil {
		return nil, err
	}
	d.setup.Observe(time.Since(start).Seconds())
	return newLoggedConn(c, d.log, target, start), nil
}

// loggedConn counts the bytes through a connection to a target and logs them once when
// it is closed. Up is what was written (towards the target), down what was read.
type loggedConn struct {
	net.Conn
	log      *zap.Logger
	target   string
	start    time.Time
	up, down atomic.Int64
	once     sync.Once
}

func newLoggedConn(c net.Conn, log *zap.Logger, target string, start time.Time) *loggedConn {
	return &loggedConn{Conn: c, log: log, target: target, start: start}
}

func (c *loggedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.down.Add(int64(n))
	return n, err
}

func (c *loggedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.up.Add(int64(n))
	return n, err
}

// CloseWrite half-closes when the connection can (the fronts' relay uses it).
func (c *loggedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

func (c *loggedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		fields := []zap.Field{
			zap.String("target", c.target),
			zap.Int64("bytes_up", c.up.Load()),
			zap.Int64("bytes_down", c.down.Load()),
			zap.Duration("duration", time.Since(c.start)),
		}
		if pc, ok := c.Conn.(interface{ Paths() []tcp.PathBytes }); ok {
			fields = append(fields, zap.Strings("paths", pathShares(pc.Paths())))
		}
		c.log.Info("connection", fields...)
	})
	return err
}

// pathShares formats each path's share of the payload bytes a connection carried (sent
// plus received) as "name:NN%", the paths that carried nothing left out.
func pathShares(paths []tcp.PathBytes) []string {
	var total uint64
	for _, p := range paths {
		total += p.Sent + p.Received
	}
	out := []string{}
	for _, p := range paths {
		if n := p.Sent + p.Received; n > 0 {
			out = append(out, fmt.Sprintf("%s:%.0f%%", p.Name, 100*float64(n)/float64(total)))
		}
	}
	return out
}

// setupHistogram is the flow setup time histogram of a role.
func setupHistogram(name, help string) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    name,
		Help:    help,
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
