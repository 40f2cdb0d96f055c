package benchlab

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func randomFile(t *testing.T, dir string, size int) (*file, []byte) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	p := filepath.Join(dir, fmt.Sprintf("f%d", size))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return &file{name: filepath.Base(p), path: p, size: int64(size), sum: sha256.Sum256(b)}, b
}

func TestVerifier(t *testing.T) {
	f, data := randomFile(t, t.TempDir(), 100_000)
	feed := func(b []byte) *verifier {
		v, err := newVerifier(f.path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(v.close)
		for len(b) > 0 { // uneven writes, as a pipe delivers them
			n := min(len(b), 7777)
			v.Write(b[:n])
			b = b[n:]
		}
		return v
	}
	if err := feed(data).check(f, true); err != nil {
		t.Errorf("the file itself: %v", err)
	}
	// A prefix is fine for a transfer cut at the time cap, not for a complete one.
	if err := feed(data[:40_000]).check(f, false); err != nil {
		t.Errorf("prefix: %v", err)
	}
	if err := feed(data[:40_000]).check(f, true); err == nil {
		t.Error("a prefix passed as complete")
	}
	bad := bytes.Clone(data)
	bad[54_321] ^= 1
	if err := feed(bad[:60_000]).check(f, false); err == nil || !strings.Contains(err.Error(), "byte 54321 differs") {
		t.Errorf("flipped bit: %v", err)
	}
	// Longer than the file.
	if err := feed(append(bytes.Clone(data), 'x')).check(f, true); err == nil {
		t.Error("an extra byte passed")
	}
}

func TestSink(t *testing.T) {
	dir := t.TempDir()
	f, data := randomFile(t, dir, 300_000)
	s := &servers{docroot: dir}
	h := http.HandlerFunc(s.handleSink)
	put := func(body []byte) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPut, "/sink/"+f.name, bytes.NewReader(body)))
		return w
	}
	w := put(data)
	up := s.lastUpload()
	if w.Code != 200 || !up.done || up.n != f.size || up.mismatch != -1 || up.sum != f.sum {
		t.Errorf("good upload: %d %+v", w.Code, up)
	}
	bad := bytes.Clone(data)
	bad[1234] ^= 0x80
	put(bad[:5000])
	if up := s.lastUpload(); up.mismatch != 1234 || up.n != 5000 {
		t.Errorf("bad upload: %+v", up)
	}
	s.resetSink()
	if up := s.lastUpload(); up.done || up.n != 0 {
		t.Errorf("reset: %+v", up)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPut, "/sink/nofile", strings.NewReader("x")))
	if w.Code != http.StatusNotFound {
		t.Errorf("unknown file: %d", w.Code)
	}
}

func TestParseForwarded(t *testing.T) {
	text := `# HELP mpath_relay_forwarded_bytes_total IP bytes the relay sent on, by mode.
# TYPE mpath_relay_forwarded_bytes_total counter
mpath_relay_forwarded_bytes_total{mode="forward"} 1.5e+06
mpath_relay_forwarded_bytes_total{mode="plain"} 3.2485568e+07
mpath_relay_forwarded_bytes_total{mode="reencap"} 0
mpath_relay_forwarded_packets_total{mode="plain"} 999
`
	got, err := parseForwarded(strings.NewReader(text))
	if err != nil || got != 33985568 {
		t.Errorf("got %d, %v", got, err)
	}
	if _, err := parseForwarded(strings.NewReader("mpath_path_up 1\n")); err == nil {
		t.Error("no relay counter accepted")
	}
}

func TestCPUSince(t *testing.T) {
	before := cpuSnap{procs: map[int]procCPU{1: {"relay", 2e9}, 2: {"mpath exit", 1e9}}, busy: 10e9}
	after := cpuSnap{procs: map[int]procCPU{1: {"relay", 3e9}, 2: {"mpath exit", 4e9}, 3: {"apache", 5e8}}, busy: 16e9}
	got := after.since(before)
	want := map[string]float64{"relay": 1, "mpath exit": 3, "apache": 0.5, cpuSystemWide: 6}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %v, want %v (%v)", k, got[k], v, got)
		}
	}
	o := &Outcome{CPU: got}
	if o.CPUTotal() != 4.5 {
		t.Errorf("total %v", o.CPUTotal())
	}
	if systemBusy() <= 0 {
		t.Error("no busy time in /proc/stat")
	}
}

func TestOutcomeShares(t *testing.T) {
	o := &Outcome{PathBytes: []uint64{900, 95, 5}}
	if o.PathsUsed() != 2 {
		t.Errorf("paths used %d", o.PathsUsed())
	}
	if s := o.Shares(); s[0] != 0.9 || s[2] != 0.005 {
		t.Errorf("shares %v", s)
	}
	runs := []*Outcome{{KBps: 3}, {KBps: 1}, {KBps: 2}}
	if m := median(runs); m.KBps != 2 || len(m.Repeats) != 3 || m.Repeats[0] != 3 {
		t.Errorf("median %+v", m)
	}
	runs[1].Err = "x"
	if m := median(runs); m.Err != "x" {
		t.Error("a failed repetition hidden by the median")
	}
}
