package benchlab

// One measured transfer, and what it needs in the lab:
//
//	files:    random files in a docroot shared by Apache (port 80) and the servers below
//	servers:  in this process, listening inside the exit namespace on the exit address:
//	          :8081 MPTCP (ListenConfig.SetMultipathTCP) — GET serves the docroot, PUT /sink/NAME
//	          :8082 plain TCP                            — PUT /sink/NAME only
//	          a sink compares the body byte for byte with docroot/NAME and counts it
//	transfer: curl in the client namespace (under mptcpize for MPTCP), its body compared
//	          byte for byte with the file as it streams; relay counters and process CPU
//	          read before and after

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"mpath/bench"
	"mpath/lab"
)

// Ports of the in-process servers on the exit address.
const (
	mptcpPort = 8081
	sinkPort  = 8082
)

// file is a random file in the docroot.
type file struct {
	name string
	path string
	size int64
	sum  [32]byte
}

// fileOf returns a random file of size bytes in the docroot, writing it the first time.
func (r *runner) fileOf(size int64) (*file, error) {
	if f, ok := r.files[size]; ok {
		return f, nil
	}
	name := "f" + strconv.FormatInt(size, 10)
	sum, err := lab.WriteRandomFile(r.docroot, name, size)
	if err != nil {
		return nil, err
	}
	f := &file{name: name, path: filepath.Join(r.docroot, name), size: size, sum: sum}
	r.files[size] = f
	return f, nil
}

// verifier compares what is written to it with a file, byte for byte, as it streams.
// It is used by one goroutine at a time.
type verifier struct {
	f        *os.File
	n        int64 // bytes compared so far
	mismatch int64 // offset of the first differing byte, -1 if none
	h        [32]byte
	hash     interface {
		io.Writer
		Sum([]byte) []byte
	}
	buf []byte
}

func newVerifier(path string) (*verifier, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &verifier{f: f, mismatch: -1, hash: sha256.New()}, nil
}

func (v *verifier) Write(p []byte) (int, error) {
	v.hash.Write(p)
	if v.mismatch < 0 {
		if cap(v.buf) < len(p) {
			v.buf = make([]byte, len(p))
		}
		want := v.buf[:len(p)]
		n, _ := io.ReadFull(v.f, want)
		for i := 0; i < len(p); i++ {
			if i >= n || p[i] != want[i] {
				v.mismatch = v.n + int64(i)
				break
			}
		}
	}
	v.n += int64(len(p))
	return len(p), nil
}

func (v *verifier) close() { v.f.Close() }

// check fails when the bytes differ from the file's, or when complete is claimed and the
// length or sha256 differ.
func (v *verifier) check(f *file, complete bool) error {
	if v.mismatch >= 0 {
		return fmt.Errorf("byte %d differs from the file", v.mismatch)
	}
	if complete {
		var got [32]byte
		copy(got[:], v.hash.Sum(nil))
		if v.n != f.size || got != f.sum {
			return fmt.Errorf("got %d bytes with sha256 %x, want %d bytes with sha256 %x", v.n, got[:8], f.size, f.sum[:8])
		}
	}
	return nil
}

// servers are the in-process HTTP servers in the exit namespace. Safe for concurrent
// use.
type servers struct {
	docroot    string
	mptcpLn    net.Listener
	sinkLn     net.Listener
	hs         []*http.Server
	mptcpConns atomic.Int64 // connections accepted on the MPTCP port that really are MPTCP
	tcpConns   atomic.Int64 // connections accepted on the MPTCP port that fell back to TCP

	mu   sync.Mutex // guards sink
	sink sinkState
}

// sinkState is the last upload a sink received.
type sinkState struct {
	name     string
	n        int64
	mismatch int64
	sum      [32]byte
	done     bool
}

// startServers starts the servers in namespace ns on addr.
func startServers(ns string, addr netip.Addr, docroot string) (*servers, error) {
	s := &servers{docroot: docroot}
	err := lab.Do(ns, func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(true)
		var err error
		if s.mptcpLn, err = lc.Listen(context.Background(), "tcp4", fmt.Sprintf("%s:%d", addr, mptcpPort)); err != nil {
			return err
		}
		s.sinkLn, err = net.Listen("tcp4", fmt.Sprintf("%s:%d", addr, sinkPort))
		return err
	})
	if err != nil {
		if s.mptcpLn != nil {
			s.mptcpLn.Close()
		}
		return nil, fmt.Errorf("servers in %s: %w", ns, err)
	}
	files := http.FileServer(http.Dir(docroot))
	mux := http.NewServeMux()
	mux.HandleFunc("/sink/", s.handleSink)
	mux.Handle("/", files)
	sinkOnly := http.NewServeMux()
	sinkOnly.HandleFunc("/sink/", s.handleSink)
	m := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*net.TCPConn); ok {
				if mp, err := tc.MultipathTCP(); err == nil && mp {
					s.mptcpConns.Add(1)
				} else {
					s.tcpConns.Add(1)
				}
			}
			return ctx
		}}
	p := &http.Server{Handler: sinkOnly, ReadHeaderTimeout: 10 * time.Second}
	s.hs = []*http.Server{m, p}
	go m.Serve(s.mptcpLn)
	go p.Serve(s.sinkLn)
	return s, nil
}

func (s *servers) close() {
	for _, h := range s.hs {
		h.Close()
	}
}

// handleSink reads an upload, comparing it with docroot/NAME byte for byte, and answers
// with the count and sha256.
func (s *servers) handleSink(w http.ResponseWriter, req *http.Request) {
	name := filepath.Base(req.URL.Path)
	v, err := newVerifier(filepath.Join(s.docroot, name))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	defer v.close()
	s.mu.Lock()
	s.sink = sinkState{name: name, mismatch: -1}
	s.mu.Unlock()
	buf := make([]byte, 256<<10)
	for {
		n, err := req.Body.Read(buf)
		if n > 0 {
			v.Write(buf[:n])
			s.mu.Lock()
			s.sink.n, s.sink.mismatch = v.n, v.mismatch
			s.mu.Unlock()
		}
		if err != nil {
			break
		}
	}
	var sum [32]byte
	copy(sum[:], v.hash.Sum(nil))
	s.mu.Lock()
	s.sink.sum, s.sink.done = sum, true
	s.mu.Unlock()
	fmt.Fprintf(w, "%d %s\n", v.n, hex.EncodeToString(sum[:]))
}

func (s *servers) lastUpload() sinkState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sink
}

func (s *servers) resetSink() {
	s.mu.Lock()
	s.sink = sinkState{mismatch: -1}
	s.mu.Unlock()
}

// curlResult is what curl's -w line reports.
type curlResult struct {
	code     int
	size     int64 // size_download or size_upload
	total    float64
	firstB   float64 // time_starttransfer
	exitCode int
	stderr   string
}

const curlMarker = "mpath-bench-curl"

// curl runs curl in the client namespace (under mptcpize when mp), streaming the body
// to body, for at most limit. A transfer cut by the limit is not an error (curl's exit
// code 28): the caller measures what arrived.
func (r *runner) curl(ctx context.Context, mp bool, limit time.Duration, body io.Writer, args ...string) (curlResult, *syscall.Rusage, error) {
	cargs := []string{"netns", "exec", r.clientNS()}
	if mp {
		cargs = append(cargs, "mptcpize", "run")
	}
	cargs = append(cargs, "curl", "-sS", "--fail", "--max-time", strconv.FormatFloat(limit.Seconds(), 'f', 1, 64),
		"-o", "-", "-H", "Expect:",
		"-w", "%{stderr}"+curlMarker+" %{http_code} %{size_download} %{size_upload} %{time_total} %{time_starttransfer}\\n")
	cargs = append(cargs, args...)
	cmd := exec.CommandContext(ctx, "ip", cargs...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = body, &stderr
	err := cmd.Run()
	res := curlResult{stderr: strings.TrimSpace(stderr.String())}
	var ru *syscall.Rusage
	if cmd.ProcessState != nil {
		res.exitCode = cmd.ProcessState.ExitCode()
		ru, _ = cmd.ProcessState.SysUsage().(*syscall.Rusage)
	}
	sc := bufio.NewScanner(strings.NewReader(stderr.String()))
	var other []string
	for sc.Scan() {
		var dl, ul int64
		if _, perr := fmt.Sscanf(sc.Text(), curlMarker+" %d %d %d %f %f", &res.code, &dl, &ul, &res.total, &res.firstB); perr == nil {
			res.size = max(dl, ul)
		} else {
			other = append(other, sc.Text())
		}
	}
	res.stderr = strings.Join(other, "; ")
	if ctx.Err() != nil {
		return res, ru, ctx.Err()
	}
	if err != nil && res.exitCode != 28 {
		return res, ru, fmt.Errorf("curl %s: %w: %s", strings.Join(args, " "), err, res.stderr)
	}
	return res, ru, nil
}

// transfer moves one file with the measure's system and fills an Outcome.
func (r *runner) transfer(ctx context.Context, c *Cell, m Measure) (*Outcome, error) {
	run := &Outcome{System: m.System}
	fail := func(err error) (*Outcome, error) {
		run.Err = err.Error()
		return run, err
	}
	expect := expectedRate(c, m)
	f, err := r.fileOf(r.sizeFor(expect))
	if err != nil {
		return fail(err)
	}
	run.Size = f.size
	exit := r.exitAddr()
	var args []string
	mp := false
	switch m.Kind {
	case kindMpath:
		args = []string{"--socks5-hostname", lab.ClientSOCKS}
	case kindMPTCP:
		args = []string{"--interface", r.pathAddr(1)}
		mp = true
	case kindKernel:
		args = []string{"--interface", r.pathAddr(m.Path)}
	}
	switch {
	case m.Upload && m.Kind == kindMPTCP:
		args = append(args, "-T", f.path, fmt.Sprintf("http://%s:%d/sink/%s", exit, mptcpPort, f.name))
	case m.Upload:
		args = append(args, "-T", f.path, fmt.Sprintf("http://%s:%d/sink/%s", exit, sinkPort, f.name))
	case m.Kind == kindMPTCP:
		args = append(args, fmt.Sprintf("http://%s:%d/%s", exit, mptcpPort, f.name))
	default:
		args = append(args, r.apache.URL(f.name))
	}

	v, err := newVerifier(f.path)
	if err != nil {
		return fail(err)
	}
	defer v.close()
	var body io.Writer = v
	if m.Upload {
		body = io.Discard // the sink's answer; the sink verifies the upload
		r.srv.resetSink()
	}
	run.QuietWait = r.waitQuiet(ctx).Seconds()
	relayBefore := r.relayBytes(ctx)
	mpBefore := r.srv.mptcpConns.Load()
	tcpBefore := r.srv.tcpConns.Load()
	var cpuBefore cpuSnap
	if m.CPU {
		cpuBefore = r.cpuSnapshot()
	}
	start := time.Now()
	res, ru, err := r.curl(ctx, mp, r.timeCap(), body, args...)
	wall := time.Since(start).Seconds()
	if err != nil {
		return fail(err)
	}
	if m.CPU {
		run.CPU = r.cpuSnapshot().since(cpuBefore)
		if ru != nil {
			run.CPU["curl"] = tv(ru.Utime) + tv(ru.Stime)
		}
	}
	after := r.relayBytes(ctx)
	if len(after) == len(relayBefore) {
		n := c.Nodes
		if m.Kind == kindKernel {
			n = len(after)
		}
		for i := 0; i < n && i < len(after); i++ {
			run.PathBytes = append(run.PathBytes, after[i]-relayBefore[i])
		}
		if m.Kind == kindKernel {
			// Only the path it was bound to, so shares stay comparable.
			run.PathBytes = nil
		}
	}
	if m.Kind == kindMPTCP && r.srv.mptcpConns.Load()+r.srv.tcpConns.Load() > mpBefore+tcpBefore {
		isMP := r.srv.mptcpConns.Load() > mpBefore
		run.MPTCPConn = &isMP
	}
	run.Seconds = res.total
	if run.Seconds <= 0 {
		run.Seconds = wall
	}
	run.TTFBms = res.firstB * 1000
	if m.Upload {
		up := r.srv.lastUpload()
		if up.mismatch >= 0 {
			return fail(fmt.Errorf("upload: byte %d differs at the sink", up.mismatch))
		}
		run.Bytes = up.n
		run.Complete = res.exitCode == 0 && up.done && up.n == f.size
		if run.Complete && up.sum != f.sum {
			return fail(fmt.Errorf("upload: sha256 %x at the sink, want %x", up.sum[:8], f.sum[:8]))
		}
	} else {
		run.Bytes = v.n
		run.Complete = res.exitCode == 0
		if err := v.check(f, run.Complete); err != nil {
			return fail(err)
		}
	}
	if run.Bytes == 0 {
		return fail(fmt.Errorf("nothing arrived in %.1f s (curl exit %d, HTTP %d) %s", run.Seconds, res.exitCode, res.code, res.stderr))
	}
	run.KBps = float64(run.Bytes) / run.Seconds / 1000
	return run, nil
}

// expectedRate is the most the measure can move in bytes/s (0: no bound), to size its
// file: the sum of the rates; one path's rate for kernel TCP; for static weights, the
// path that the weights overload first (weighted round robin sends weight_i/W of the
// packets over path i, so it moves at most rate_i x W / weight_i).
func expectedRate(c *Cell, m Measure) int64 {
	if m.Kind == kindKernel {
		return c.Rates[m.Path-1]
	}
	e := c.Sum
	if len(m.Weights) == c.Nodes && c.Sum > 0 {
		var w int64
		for _, x := range m.Weights {
			w += int64(x)
		}
		for i, x := range m.Weights {
			if b := c.Rates[i] * w / int64(x); b < e {
				e = b
			}
		}
	}
	return e
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// waitQuiet waits (at most 15 s) until the relays forward less than one full packet in
// 250 ms, so that a measurement does not share the paths with what is left of the
// previous one (a cut transfer's sender may keep retransmitting into a slow queue for a
// while). It returns how long it waited beyond the first 250 ms window.
func (r *runner) waitQuiet(ctx context.Context) time.Duration {
	const window, quiet = 250 * time.Millisecond, 1500
	start := time.Now()
	prev := r.relayBytes(ctx)
	for {
		select {
		case <-ctx.Done():
			return time.Since(start)
		case <-time.After(window): // the observation window, not synchronisation
		}
		cur := r.relayBytes(ctx)
		if prev == nil || cur == nil || len(cur) != len(prev) {
			return time.Since(start) - window
		}
		var moved uint64
		for i := range cur {
			moved += cur[i] - prev[i]
		}
		if moved < quiet || time.Since(start) > 15*time.Second {
			return time.Since(start) - window
		}
		prev = cur
	}
}

// relayBytes reads every relay's forwarded byte counter (all modes, both directions).
// A relay that does not answer gives nil.
func (r *runner) relayBytes(ctx context.Context) []uint64 {
	if r.up != nil {
		return r.up.uplinkBytes(ctx)
	}
	out := make([]uint64, r.lab.N())
	for i := 1; i <= r.lab.N(); i++ {
		v, err := relayForwarded(ctx, r.lab, i)
		if err != nil {
			return nil
		}
		out[i-1] = v
	}
	return out
}

func relayForwarded(ctx context.Context, l *lab.Lab, i int) (uint64, error) {
	c := lab.HTTPClient(l.RelayNS(i))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+l.RelayMetricsAddr(i)+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return parseForwarded(resp.Body)
}

// parseForwarded sums mpath_relay_forwarded_bytes_total over its labels.
func parseForwarded(rd io.Reader) (uint64, error) {
	sc := bufio.NewScanner(rd)
	var sum float64
	found := false
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "mpath_relay_forwarded_bytes_total") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("relay metrics: %q: %w", line, err)
		}
		sum += v
		found = true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, errors.New("relay metrics: no mpath_relay_forwarded_bytes_total")
	}
	return uint64(sum), nil
}

// cpuSnap is the CPU time of the lab's processes, and the machine's busy time.
type cpuSnap struct {
	procs map[int]procCPU
	busy  time.Duration
}

type procCPU struct {
	group string
	cpu   time.Duration
}

// cpuSnapshot reads the CPU time of every process in the lab's namespaces, grouped as
// mpath client, mpath exit, relay, Apache (or other).
func (r *runner) cpuSnapshot() cpuSnap {
	s := cpuSnap{procs: map[int]procCPU{}, busy: systemBusy()}
	for _, ns := range r.lab.Namespaces() {
		for _, pid := range lab.NamespacePIDs(ns) {
			cpu, err := lab.ProcCPU(pid)
			if err != nil {
				continue
			}
			s.procs[pid] = procCPU{group: r.groupOf(ns, pid), cpu: cpu}
		}
	}
	return s
}

func (r *runner) groupOf(ns string, pid int) string {
	comm, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	name := strings.TrimSpace(string(comm))
	// mpath processes by their executable, whatever the binary is called.
	exe, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
	isMpath := exe != "" && exe == r.binPath()
	switch {
	case strings.HasPrefix(name, "apache2"):
		return "apache"
	case isMpath && ns == r.lab.ClientNS():
		return "mpath client"
	case isMpath && ns == r.lab.ExitNS():
		return "mpath exit"
	case isMpath && strings.HasPrefix(ns, r.opt.Prefix+"-r"):
		return "relay"
	}
	return "other (" + name + ")"
}

// binPath is the mpath binary's resolved path, as /proc/PID/exe shows it.
func (r *runner) binPath() string {
	if p, err := filepath.EvalSymlinks(r.opt.Bin); err == nil {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
	}
	return r.opt.Bin
}

// since returns CPU seconds per group used between before and s; processes that started
// in between count from zero.
func (s cpuSnap) since(before cpuSnap) map[string]float64 {
	out := map[string]float64{}
	for pid, p := range s.procs {
		d := p.cpu - before.procs[pid].cpu
		if d > 0 {
			out[p.group] += d.Seconds()
		}
	}
	out[cpuSystemWide] = (s.busy - before.busy).Seconds()
	return out
}

// systemBusy is the CPU time all CPUs spent not idle, from /proc/stat.
func systemBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0
	}
	var total, idle uint64
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i >= 8 { // guest time is already counted in user
			break
		}
		total += n
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		}
	}
	return time.Duration(total-idle) * (time.Second / 100)
}

// ttfb measures the time to first byte of a small page with bench.Run: through the
// SOCKS front, or direct (kernel TCP from the client namespace).
func (r *runner) ttfb(ctx context.Context, c *Cell, m Measure) (*Outcome, error) {
	run := &Outcome{System: m.System}
	f, err := r.fileOf(1000)
	if err != nil {
		run.Err = err.Error()
		return run, err
	}
	ns := r.lab.ClientNS()
	cfg := bench.Config{URL: r.apache.URL(f.name), Requests: 20, Concurrency: 1, Timeout: 10 * time.Second,
		ExpectSHA256: hex.EncodeToString(f.sum[:]), ExpectLength: f.size,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := lab.Do(ns, func() (err error) {
				var d net.Dialer
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		}}
	if !m.Direct {
		cfg.Proxy = "socks5h://" + lab.ClientSOCKS
	}
	res, err := bench.Run(ctx, cfg)
	if err == nil && (res.Failed > 0 || res.Non2xx > 0 || res.TTFB.N == 0) {
		err = fmt.Errorf("%d of %d requests failed, %d non-2xx: %v", res.Failed, res.Requests, res.Non2xx, res.Errors)
	}
	if err != nil {
		run.Err = err.Error()
		return run, err
	}
	run.Samples = res.TTFB.N
	run.TTFBms = float64(res.TTFB.Median) / 1e6
	run.Bytes = res.Bytes
	run.Size = f.size
	run.Seconds = res.Elapsed.Seconds()
	run.Complete = true
	if m.Direct {
		run.RTTms = float64(res.Connect.Median) / 1e6
	}
	return run, nil
}
