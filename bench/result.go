package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"sync/atomic"
	"time"
)

// Result is what a run measured. It is a plain value: safe to copy and to read from
// several goroutines once Run has returned it.
type Result struct {
	URL            string
	Method         string
	Proxy          string // the proxy with its password hidden; "" when direct
	ServerSoftware string // Server header of the first 2xx response
	ServerHost     string
	ServerPort     string
	DocumentPath   string
	DocumentLength int64 // body length of the first 2xx response; -1 when there was none
	Concurrency    int
	KeepAlive      bool

	// Requests counts the requests that finished: succeeded, failed or got a non-2xx
	// response (ab's "Complete requests"). Requests abandoned when Duration ran out or
	// the context ended are not counted.
	Requests int64
	// Failed is the sum of Failures. Non-2xx responses are not failures (as in ab).
	Failed   int64
	Failures FailureCounts
	Non2xx   int64
	// KeepAliveRequests went over a connection an earlier request had opened.
	KeepAliveRequests int64
	// Bytes counts the body bytes of every counted request (ab's "HTML transferred");
	// WireBytes counts every byte read from the connections during the run, headers
	// and proxy replies included (ab's "Total transferred").
	Bytes     int64
	WireBytes int64
	// Elapsed runs from the start to the end of the last counted request (to the end of
	// the run when none was counted).
	Elapsed time.Duration

	// Distributions over the requests that got a response (Sample.Responded).
	Connect    Dist // getting a connection; 0 for reused ones
	Processing Dist // Total - Connect
	Waiting    Dist // request written to first byte (ab's "Waiting")
	TTFB       Dist // start to first byte
	Total      Dist // start to end of body

	// Errors holds the first few distinct failure messages, for diagnosis.
	Errors []string
}

// FailureCounts counts failed requests by kind.
type FailureCounts struct {
	Connect, Receive, Timeout, Length, SHA256 int64
}

func (f FailureCounts) sum() int64 { return f.Connect + f.Receive + f.Timeout + f.Length + f.SHA256 }

// Seconds is Elapsed in seconds.
func (r Result) Seconds() float64 { return r.Elapsed.Seconds() }

// BytesPerSecond is body bytes per second over the run (what curl's speed_download is
// for one transfer). 0 for an empty run.
func (r Result) BytesPerSecond() float64 { return perSecond(float64(r.Bytes), r.Elapsed) }

// RequestsPerSecond is counted requests per second over the run.
func (r Result) RequestsPerSecond() float64 { return perSecond(float64(r.Requests), r.Elapsed) }

func perSecond(x float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return x / d.Seconds()
}

// Dist summarises durations like a row of ab's "Connection Times" table. The zero value
// is an empty distribution.
type Dist struct {
	N                          int
	Min, Mean, Median, Max, SD time.Duration
	sorted                     []time.Duration
}

func newDist(xs []time.Duration) Dist {
	d := Dist{N: len(xs)}
	if len(xs) == 0 {
		return d
	}
	d.sorted = slices.Clone(xs)
	slices.Sort(d.sorted)
	var sum float64
	for _, x := range xs {
		sum += float64(x)
	}
	mean := sum / float64(len(xs))
	var sq float64
	for _, x := range xs {
		sq += (float64(x) - mean) * (float64(x) - mean)
	}
	if len(xs) > 1 {
		d.SD = time.Duration(math.Sqrt(sq / float64(len(xs)-1)))
	}
	n := len(d.sorted)
	d.Min, d.Max, d.Mean = d.sorted[0], d.sorted[n-1], time.Duration(mean)
	if n%2 == 1 {
		d.Median = d.sorted[n/2]
	} else {
		d.Median = (d.sorted[n/2-1] + d.sorted[n/2]) / 2
	}
	return d
}

// Percentile returns the p-th percentile the way ab's table computes it: the value at
// index floor(N*p/100) of the sorted durations, the largest for p >= 100. 0 when empty.
func (d Dist) Percentile(p float64) time.Duration {
	if len(d.sorted) == 0 {
		return 0
	}
	if p >= 100 {
		return d.sorted[len(d.sorted)-1]
	}
	i := int(float64(len(d.sorted)) * max(p, 0) / 100)
	return d.sorted[min(i, len(d.sorted)-1)]
}

// summarize turns the samples of a run into its Result.
func (r *runner) summarize(all []Sample, start, end time.Time) Result {
	res := Result{
		URL:            r.target.String(),
		Method:         r.method,
		Proxy:          redact(r.proxy),
		ServerHost:     r.target.Hostname(),
		ServerPort:     r.target.Port(),
		DocumentPath:   r.target.RequestURI(),
		DocumentLength: atomic.LoadInt64(&r.docLen),
		Concurrency:    r.concurrency,
		KeepAlive:      r.cfg.KeepAlive,
		Requests:       int64(len(all)),
		WireBytes:      r.wire.Load(),
		Errors:         slices.Clone(r.errs),
	}
	r.mu.Lock()
	res.ServerSoftware = r.server
	r.mu.Unlock()
	if res.ServerPort == "" {
		res.ServerPort = map[string]string{"http": "80", "https": "443"}[r.target.Scheme]
	}
	last := start
	var conn, proc, wait, ttfb, total []time.Duration
	for _, s := range all {
		res.Bytes += s.Bytes
		if s.Reused {
			res.KeepAliveRequests++
		}
		if e := s.Start.Add(s.Total); e.After(last) {
			last = e
		}
		switch s.Failure {
		case FailConnect:
			res.Failures.Connect++
		case FailReceive:
			res.Failures.Receive++
		case FailTimeout:
			res.Failures.Timeout++
		case FailLength:
			res.Failures.Length++
		case FailSHA256:
			res.Failures.SHA256++
		}
		if s.Failure == FailNone && (s.Status < 200 || s.Status >= 300) {
			res.Non2xx++
		}
		if s.Responded() {
			conn = append(conn, s.Connect)
			proc = append(proc, s.Total-s.Connect)
			wait = append(wait, s.Waiting)
			ttfb = append(ttfb, s.TTFB)
			total = append(total, s.Total)
		}
	}
	res.Failed = res.Failures.sum()
	res.Elapsed = last.Sub(start)
	if len(all) == 0 {
		res.Elapsed = end.Sub(start)
	}
	res.Connect, res.Processing, res.Waiting = newDist(conn), newDist(proc), newDist(wait)
	res.TTFB, res.Total = newDist(ttfb), newDist(total)
	return res
}

// The JSON form (`mpath bench --json`): one object, times in milliseconds.
type jsonResult struct {
	URL               string       `json:"url"`
	Method            string       `json:"method"`
	Proxy             string       `json:"proxy,omitempty"`
	ServerSoftware    string       `json:"server_software"`
	DocumentLength    int64        `json:"document_length"`
	Concurrency       int          `json:"concurrency"`
	KeepAlive         bool         `json:"keep_alive"`
	Requests          int64        `json:"requests"`
	Failed            int64        `json:"failed"`
	Failures          jsonFailures `json:"failures"`
	Non2xx            int64        `json:"non_2xx"`
	KeepAliveRequests int64        `json:"keep_alive_requests"`
	Bytes             int64        `json:"bytes"`
	TotalBytes        int64        `json:"total_bytes"`
	Seconds           float64      `json:"seconds"`
	BytesPerSecond    float64      `json:"bytes_per_second"`
	RequestsPerSecond float64      `json:"requests_per_second"`
	Latency           jsonDist     `json:"latency_ms"`
	TTFB              jsonDist     `json:"ttfb_ms"`
	Connect           jsonDist     `json:"connect_ms"`
	Errors            []string     `json:"errors,omitempty"`
}

type jsonFailures struct {
	Connect int64 `json:"connect"`
	Receive int64 `json:"receive"`
	Timeout int64 `json:"timeout"`
	Length  int64 `json:"length"`
	SHA256  int64 `json:"sha256"`
}

type jsonDist struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
}

// ms is d in milliseconds rounded to the microsecond.
func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

func (d Dist) json() jsonDist {
	return jsonDist{
		P50: ms(d.Percentile(50)), P90: ms(d.Percentile(90)), P99: ms(d.Percentile(99)),
		Min: ms(d.Min), Mean: ms(d.Mean), Max: ms(d.Max),
	}
}

// MarshalJSON encodes the Result as one object with the keys url, method, proxy,
// server_software, document_length, concurrency, keep_alive, requests, failed,
// failures{connect,receive,timeout,length,sha256}, non_2xx, keep_alive_requests, bytes
// (bodies), total_bytes (wire), seconds, bytes_per_second (bodies), requests_per_second,
// latency_ms, ttfb_ms and connect_ms (each {p50,p90,p99,min,mean,max}) and errors.
func (r Result) MarshalJSON() ([]byte, error) {
	return json.Marshal(jsonResult{
		URL: r.URL, Method: r.Method, Proxy: r.Proxy, ServerSoftware: r.ServerSoftware,
		DocumentLength: r.DocumentLength, Concurrency: r.Concurrency, KeepAlive: r.KeepAlive,
		Requests: r.Requests, Failed: r.Failed,
		Failures: jsonFailures{
			Connect: r.Failures.Connect, Receive: r.Failures.Receive, Timeout: r.Failures.Timeout,
			Length: r.Failures.Length, SHA256: r.Failures.SHA256,
		},
		Non2xx: r.Non2xx, KeepAliveRequests: r.KeepAliveRequests,
		Bytes: r.Bytes, TotalBytes: r.WireBytes,
		Seconds:           math.Round(r.Seconds()*1e6) / 1e6,
		BytesPerSecond:    math.Round(r.BytesPerSecond()*1e3) / 1e3,
		RequestsPerSecond: math.Round(r.RequestsPerSecond()*1e3) / 1e3,
		Latency:           r.Total.json(), TTFB: r.TTFB.json(), Connect: r.Connect.json(),
		Errors: r.Errors,
	})
}

// abPercents are the rows of ab's percentile table.
var abPercents = []int{50, 66, 75, 80, 90, 95, 98, 99, 100}

// WriteText writes the report laid out like ab's, plus a time-to-first-byte line and,
// when requests failed, the first distinct errors.
func (r Result) WriteText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	p := func(format string, args ...any) { fmt.Fprintf(bw, format, args...) }
	host := r.ServerHost
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		host = "[" + host + "]"
	}
	p("Server Software:        %s\n", r.ServerSoftware)
	p("Server Hostname:        %s\n", host)
	p("Server Port:            %s\n", r.ServerPort)
	if r.Proxy != "" {
		p("Proxy:                  %s\n", r.Proxy)
	}
	p("\n")
	p("Document Path:          %s\n", r.DocumentPath)
	p("Document Length:        %d bytes\n", max(r.DocumentLength, 0))
	p("\n")
	p("Concurrency Level:      %d\n", r.Concurrency)
	p("Time taken for tests:   %.3f seconds\n", r.Seconds())
	p("Complete requests:      %d\n", r.Requests)
	p("Failed requests:        %d\n", r.Failed)
	if r.Failed > 0 {
		f := r.Failures
		p("   (Connect: %d, Receive: %d, Length: %d, Timeout: %d, SHA256: %d)\n",
			f.Connect, f.Receive, f.Length, f.Timeout, f.SHA256)
	}
	if r.Non2xx > 0 {
		p("Non-2xx responses:      %d\n", r.Non2xx)
	}
	if r.KeepAlive {
		p("Keep-Alive requests:    %d\n", r.KeepAliveRequests)
	}
	p("Total transferred:      %d bytes\n", r.WireBytes)
	p("HTML transferred:       %d bytes\n", r.Bytes)
	if r.Requests > 0 && r.Elapsed > 0 {
		msPer := r.Seconds() * 1000 / float64(r.Requests)
		p("Requests per second:    %.2f [#/sec] (mean)\n", r.RequestsPerSecond())
		p("Time per request:       %.3f [ms] (mean)\n", msPer*float64(r.Concurrency))
		p("Time per request:       %.3f [ms] (mean, across all concurrent requests)\n", msPer)
		p("Transfer rate:          %.2f [Kbytes/sec] received\n", perSecond(float64(r.WireBytes), r.Elapsed)/1024)
		p("                        %.2f [Kbytes/sec] of bodies\n", r.BytesPerSecond()/1024)
	}
	if r.TTFB.N > 0 {
		p("Time to first byte:     %.3f / %.3f / %.3f [ms] (p50 / p90 / p99)\n",
			ms(r.TTFB.Percentile(50)), ms(r.TTFB.Percentile(90)), ms(r.TTFB.Percentile(99)))
	}
	if r.Total.N > 0 {
		row := func(name string, d Dist) {
			p("%-11s %5d %4d %5.1f %6d %7d\n", name, roundMS(d.Min), roundMS(d.Mean),
				float64(d.SD)/1e6, roundMS(d.Median), roundMS(d.Max))
		}
		p("\nConnection Times (ms)\n")
		p("              min  mean[+/-sd] median   max\n")
		row("Connect:", r.Connect)
		row("Processing:", r.Processing)
		row("Waiting:", r.Waiting)
		row("Total:", r.Total)
		p("\nPercentage of the requests served within a certain time (ms)\n")
		for _, pc := range abPercents {
			if pc == 100 {
				p(" 100%%  %5d (longest request)\n", roundMS(r.Total.Percentile(100)))
			} else {
				p("  %d%%  %5d\n", pc, roundMS(r.Total.Percentile(float64(pc))))
			}
		}
	}
	if len(r.Errors) > 0 {
		p("\nFirst errors:\n")
		for _, e := range r.Errors {
			p("  %s\n", e)
		}
	}
	return bw.Flush()
}

// roundMS rounds d to whole milliseconds, as ab's tables do.
func roundMS(d time.Duration) int64 { return (int64(d) + 500_000) / 1_000_000 }
