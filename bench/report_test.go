package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mpath/bench/benchtest"
)

func TestJSONSchema(t *testing.T) {
	srv := newServer(t, payloadHandler(10_000, 4))
	res := run(t, Config{URL: srv.URL + "/x", Requests: 10, Concurrency: 2})
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, b)
	}
	num := func(obj map[string]any, key string) float64 {
		t.Helper()
		v, ok := obj[key].(float64)
		if !ok {
			t.Fatalf("key %q: %v (%T), want a number in %s", key, obj[key], obj[key], b)
		}
		return v
	}
	sub := func(key string) map[string]any {
		t.Helper()
		v, ok := m[key].(map[string]any)
		if !ok {
			t.Fatalf("key %q: %v, want an object in %s", key, m[key], b)
		}
		return v
	}
	if m["url"] != srv.URL+"/x" {
		t.Errorf("url %v", m["url"])
	}
	for key, want := range map[string]float64{
		"requests": 10, "failed": 0, "non_2xx": 0, "bytes": 100_000, "concurrency": 2,
		"total_bytes":         float64(res.WireBytes),
		"seconds":             float64(res.Elapsed.Microseconds()) / 1e6,
		"bytes_per_second":    res.BytesPerSecond(),
		"requests_per_second": res.RequestsPerSecond(),
	} {
		got := num(m, key)
		if d := got - want; d > want*1e-5+1e-3 || d < -(want*1e-5+1e-3) {
			t.Errorf("%s = %v, want %v", key, got, want)
		}
	}
	lat := sub("latency_ms")
	p50, p90, p99, mx, mean := num(lat, "p50"), num(lat, "p90"), num(lat, "p99"), num(lat, "max"), num(lat, "mean")
	if !(0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= mx && mean <= mx) {
		t.Errorf("latency_ms not ordered: %v", lat)
	}
	if want := float64((res.Total.Max+500)/time.Microsecond) / 1000; mx != want {
		t.Errorf("latency max %v ms, want %v", mx, want)
	}
	ttfb := sub("ttfb_ms")
	if tp50 := num(ttfb, "p50"); !(0 < tp50 && tp50 <= num(ttfb, "p90") && num(ttfb, "p90") <= num(ttfb, "p99")) {
		t.Errorf("ttfb_ms not ordered: %v", ttfb)
	}
	for _, k := range []string{"connect", "receive", "timeout", "length", "sha256"} {
		num(sub("failures"), k)
	}
}

func TestWriteTextLikeAB(t *testing.T) {
	srv := newServer(t, payloadHandler(10_000, 4))
	res := run(t, Config{URL: srv.URL + "/doc", Requests: 8, Concurrency: 2, ExpectLength: 9_999})
	var buf bytes.Buffer
	if err := res.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	// The same parser reads ab's report in the Apache tests.
	m := benchtest.ParseAB(text)
	for key, want := range map[string]float64{
		"Complete requests":    8,
		"Failed requests":      8,
		"Concurrency Level":    2,
		"Document Length":      10_000,
		"HTML transferred":     80_000,
		"Total transferred":    float64(res.WireBytes),
		"Time taken for tests": float64(int64(res.Seconds()*1000+0.5)) / 1000,
		"Requests per second":  float64(int64(res.RequestsPerSecond()*100+0.5)) / 100,
		"P100":                 float64(roundMS(res.Total.Max)),
		"P50":                  float64(roundMS(res.Total.Percentile(50))),
	} {
		if got := benchtest.Float(t, m, key); got != want {
			t.Errorf("%s: %v, want %v", key, got, want)
		}
	}
	for _, want := range []string{
		"Document Path:          /doc\n",
		"   (Connect: 0, Receive: 0, Length: 8, Timeout: 0, SHA256: 0)\n",
		"Time to first byte:     ",
		"Connection Times (ms)\n",
		"length: body is 10000 bytes, expected 9999",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "Non-2xx") || strings.Contains(text, "Keep-Alive requests") {
		t.Errorf("report has lines for things that did not happen:\n%s", text)
	}
}

func TestProgressNotOnPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if IsTerminal(w) {
		t.Fatal("a pipe claims to be a terminal")
	}
	p := NewProgress(w, 10)
	if p != nil {
		t.Fatalf("NewProgress on a pipe: %v, want nil", p)
	}
	srv := newServer(t, payloadHandler(100, 1))
	run(t, Config{URL: srv.URL, Requests: 10, OnRequest: p.Add})
	p.Finish()
	w.Close()
	if b, _ := io.ReadAll(r); len(b) != 0 {
		t.Fatalf("progress wrote %q to a pipe", b)
	}
}

// openPTY returns the master and slave ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	// Non-blocking, so that os.NewFile puts it in the poller and read deadlines work.
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("skipping: no pseudo-terminals here: %v", err)
	}
	m := os.NewFile(uintptr(fd), "/dev/ptmx")
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty slave: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

func TestProgressOnTerminal(t *testing.T) {
	master, slave := openPTY(t)
	if !IsTerminal(slave) {
		t.Fatal("a pty slave is not a terminal")
	}
	got := make(chan string, 1)
	go func() {
		var all []byte
		buf := make([]byte, 4096)
		for {
			master.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := master.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				got <- string(all)
				return
			}
		}
	}()
	p := NewProgress(slave, 10)
	if p == nil {
		t.Fatal("NewProgress on a terminal returned nil")
	}
	srv := newServer(t, payloadHandler(100, 1))
	run(t, Config{URL: srv.URL, Requests: 10, OnRequest: p.Add})
	p.Finish()
	slave.Close() // the reader sees EIO once everything written has been read
	out := <-got
	// Redraws are throttled, so how far the bar got before Finish cleared it varies.
	if !regexp.MustCompile(`requests +\d+% \|.*\| \(\d+/10,`).MatchString(out) {
		t.Fatalf("terminal got %q, want a bar counting n/10 requests", out)
	}
}

func Example_result() {
	// A Result prints like ab's report, or as one JSON object.
	res := Result{URL: "http://10.77.255.2/f", Requests: 2, Bytes: 2000, Elapsed: time.Second, Concurrency: 1}
	b, _ := json.Marshal(res)
	var m map[string]any
	json.Unmarshal(b, &m)
	fmt.Println(m["requests"], m["bytes"], m["seconds"], m["bytes_per_second"])
	// Output: 2 2000 1 2000
}
