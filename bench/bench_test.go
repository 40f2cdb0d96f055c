package bench

import (
	"context"
	"net/http/httptest"
	"testing"
)

// BenchmarkRun measures the load generator's own cost per request: 1 KiB responses from
// an httptest server on loopback, keep-alive and a connection per request. b.N is the
// number of requests of one Run.
func BenchmarkRun(b *testing.B) {
	srv := httptest.NewServer(payloadHandler(1024, 3))
	defer srv.Close()
	for _, keepAlive := range []bool{true, false} {
		name := "conn-per-request"
		if keepAlive {
			name = "keep-alive"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(1024)
			res, err := Run(context.Background(), Config{URL: srv.URL, Requests: b.N, Concurrency: 2, KeepAlive: keepAlive})
			if err != nil || res.Failed != 0 || res.Requests != int64(b.N) {
				b.Fatalf("run: %v, %d of %d failed", err, res.Failed, res.Requests)
			}
			b.ReportMetric(res.RequestsPerSecond(), "req/s")
			b.ReportMetric(float64(res.Total.Percentile(99).Microseconds()), "p99-µs")
		})
	}
}
