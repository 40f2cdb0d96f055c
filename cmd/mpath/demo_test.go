//go:build !slim

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"mpath/lab"
	"mpath/lab/labtest"
)

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{{"64MB", 64e6}, {"500kB", 500e3}, {"1GiB", 1 << 30}, {"123", 123}, {"1.5m", 1.5e6}, {"2 MiB", 2 << 20}} {
		got, err := parseSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "MB", "-1MB", "12 parsecs", "0"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}

func TestDemoConfigure(t *testing.T) {
	d := &demo{}
	if err := d.configure(3, "20mbit,10mbit,5mbit", "10ms,30ms,60ms", "auto"); err != nil {
		t.Fatal(err)
	}
	// 35 Mbit/s for 12 s = 52.5 MB, rounded up to whole MB.
	if d.size != 53e6 || d.fastest() != 1 || d.specs[2].Delay != 60*time.Millisecond || d.specs[1].Rate != "10mbit" {
		t.Fatalf("size %d fastest %d specs %+v", d.size, d.fastest(), d.specs)
	}
	if sum, ok := d.sumRate(); !ok || sum != 35e6 {
		t.Fatalf("sum %d %v", sum, ok)
	}
	d = &demo{}
	if err := d.configure(3, "10mbit,0,10mbit", "20ms,10ms,5ms", "1MB"); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.sumRate(); ok || d.fastest() != 2 || d.size != 1e6 {
		t.Fatalf("unlimited path 2: fastest %d size %d", d.fastest(), d.size)
	}
	d = &demo{}
	if err := d.configure(3, "10mbit", "20ms,10ms,5ms", "1MB"); err != nil || d.fastest() != 3 {
		t.Fatalf("equal rates: fastest %d (want the shortest delay, 3), err %v", d.fastest(), err)
	}
	for _, bad := range [][3]string{{"10mbit,5mbit", "1ms", "1MB"}, {"fast", "1ms", "1MB"}, {"1mbit", "soon", "1MB"}, {"1mbit", "1ms", "big"}} {
		if err := (&demo{}).configure(3, bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("configure %q accepted", bad)
		}
	}
}

// demoRun is one `mpath demo` process under test.
type demoRun struct {
	bin, prefix string
	base        int
}

// newDemoRun reserves a unique prefix and base and registers a cleanup that removes
// whatever a failed demo might leave.
func newDemoRun(t *testing.T) *demoRun {
	t.Helper()
	labtest.RequireRoot(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("skipping: curl not installed (make deps)")
	}
	if _, err := lab.ApacheBinary(); err != nil {
		t.Skipf("skipping: %v (make deps installs it)", err)
	}
	r := &demoRun{bin: labtest.Mpath(t)}
	r.base, r.prefix = labtest.Reserve(t)
	t.Cleanup(func() { _ = lab.Down(r.prefix) })
	return r
}

func (r *demoRun) args(extra ...string) []string {
	return append([]string{"demo", "--prefix", r.prefix, "--base", fmt.Sprint(r.base),
		"--paths", "3", "--rate", "20mbit,10mbit,5mbit", "--delay", "2ms,5ms,10ms", "--size", "3MB"}, extra...)
}

var (
	workDirRE   = regexp.MustCompile(`work dir (\S+)`)
	apacheDirRE = regexp.MustCompile(`apache config and logs in (\S+)`)
)

// dirs returns the work and Apache directories the demo printed, and registers their
// removal in case the demo failed to.
func dirs(t *testing.T, out string) (work, apache string) {
	t.Helper()
	if m := workDirRE.FindStringSubmatch(out); m != nil {
		work = m[1]
		t.Cleanup(func() { os.RemoveAll(work) })
	}
	if m := apacheDirRE.FindStringSubmatch(out); m != nil {
		apache = m[1]
		t.Cleanup(func() { os.RemoveAll(apache) })
	}
	return work, apache
}

// nftTables lists the nftables tables of the root namespace.
func nftTables(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command("nft", "list", "tables").Output()
	if err != nil {
		t.Skipf("skipping: nft list tables: %v", err)
	}
	m := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			m[l] = true
		}
	}
	return m
}

// checkNothingLeft fails the test when a namespace of the prefix, a process of the
// test's mpath binary, an Apache of the demo, a work dir or a new root-namespace
// nftables table is left.
func (r *demoRun) checkNothingLeft(t *testing.T, out string, tablesBefore map[string]bool) {
	t.Helper()
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), r.prefix+"-") {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
	if info, err := lab.Status(r.prefix); err != nil || info.Up() {
		t.Errorf("lab %s still recorded or present: %+v %v", r.prefix, info, err)
	}
	work, apache := dirs(t, out)
	if work == "" || apache == "" {
		t.Errorf("demo output names no work dir (%q) or apache dir (%q)", work, apache)
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		exe, _ := os.Readlink(filepath.Join("/proc", p.Name(), "exe"))
		cmdline, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		cl := strings.ReplaceAll(string(cmdline), "\x00", " ")
		switch {
		case exe == r.bin:
			t.Errorf("mpath process left: pid %s: %s", p.Name(), cl)
		case apache != "" && strings.Contains(cl, apache):
			t.Errorf("apache process left: pid %s: %s", p.Name(), cl)
		case work != "" && strings.Contains(cl, work):
			t.Errorf("process using the work dir left: pid %s: %s", p.Name(), cl)
		}
	}
	for _, d := range []string{work, apache} {
		if d == "" {
			continue
		}
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (%v)", d, err)
		}
	}
	for tb := range nftTables(t) {
		if !tablesBefore[tb] && strings.Contains(tb, "mpath") {
			t.Errorf("nftables %s appeared in the root namespace", tb)
		}
	}
}

// TestDemo runs `mpath demo` to the end with small settings: it must exit 0, print the
// per-path table and the aggregate, and leave nothing behind.
func TestDemo(t *testing.T) {
	r := newDemoRun(t)
	tables := nftTables(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, r.args()...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := stdout.String()
	t.Logf("demo output:\n%s", out)
	if err != nil {
		t.Fatalf("mpath demo: %v\nstderr:\n%s", err, stderr.String())
	}
	for _, want := range []string{
		"[1/6] lab \"" + r.prefix + "\" up",
		"[4/6] best single path: kernel TCP over path 1 only",
		"[5/6] through mpath, all 3 paths",
		"Per path, for the download through mpath",
		"Aggregate:",
		"mpath, 3 paths (SOCKS5, auto)",
		"best single path (path 1, kernel TCP)",
		"sum of the configured path rates       35.0 Mbit/s",
		"ip netns exec " + r.prefix + "-c curl --socks5-hostname 127.0.0.1:1080 http://10." + fmt.Sprint(r.base) + ".255.2/file",
		"[6/6] cleaned up:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if n := strings.Count(out, "3.0 MB in "); n != 2 || strings.Count(out, "sha256 ok") != 2 {
		t.Errorf("want two 3.0 MB downloads with sha256 ok, got %d", n)
	}
	// One row per path with its configured link, and an "all" row whose data is the file.
	for i, link := range []string{"20.0 Mbit/s, RTT 4ms", "10.0 Mbit/s, RTT 10ms", "5.00 Mbit/s, RTT 20ms"} {
		if !regexp.MustCompile(fmt.Sprintf(`(?m)^  %d +%s +(up|went down) +\d+\.\d%% +[\d.]+ [kM]?B +[\d.]+ Mbit/s`, i+1, regexp.QuoteMeta(link))).MatchString(out) {
			t.Errorf("no table row for path %d (%s)", i+1, link)
		}
	}
	if !regexp.MustCompile(`(?m)^  all +100\.0% +3\.0 MB +[\d.]+ Mbit/s`).MatchString(out) {
		t.Error("no 'all' row carrying the whole file")
	}
	if !regexp.MustCompile(`(?m)^  mpath, 3 paths \(SOCKS5, auto\) +[\d.]+ Mbit/s +[\d.]+ s +[\d.]+x +[\d.]+%$`).MatchString(out) {
		t.Error("no aggregate row for mpath")
	}
	r.checkNothingLeft(t, out, tables)
}

// TestDemoInterrupt sends SIGINT while the demo downloads: it must stop, say so, exit
// non-zero and still clean everything up.
func TestDemoInterrupt(t *testing.T) {
	r := newDemoRun(t)
	tables := nftTables(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// 40 MB over 20 Mbit/s takes ~16 s: long enough to be interrupted mid-way.
	cmd := exec.CommandContext(ctx, r.bin, r.args("--size", "40MB")...)
	outS, errS, err := labtest.Interrupt(t, cmd, "[4/6]")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("interrupted demo: err = %v, want a non-zero exit", err)
	}
	if !strings.Contains(errS, "interrupted") {
		t.Error("stderr does not say it was interrupted")
	}
	if strings.Contains(outS, "Aggregate:") {
		t.Error("the demo finished although interrupted")
	}
	if !strings.Contains(outS, "cleaned up:") {
		t.Error("the demo did not report its cleanup")
	}
	r.checkNothingLeft(t, outS, tables)
}

// TestDemoTimeout lets --timeout expire during the download: an error path. The demo
// must exit non-zero, name the timeout, show the node logs and clean up.
func TestDemoTimeout(t *testing.T) {
	r := newDemoRun(t)
	tables := nftTables(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Setup takes ~2 s; 40 MB at 20 Mbit/s ~16 s: 6 s runs out during a download.
	cmd := exec.CommandContext(ctx, r.bin, r.args("--size", "40MB", "--timeout", "6s")...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := stdout.String()
	t.Logf("demo output:\n%s\nstderr:\n%s", out, stderr.String())
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("timed-out demo: err = %v, want a non-zero exit", err)
	}
	for _, want := range []string{"--timeout 6s", "--- mpath client (", "--- mpath exit ("} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	if !strings.Contains(out, "[3/6]") || strings.Contains(out, "Aggregate:") {
		t.Error("the timeout did not hit during the downloads")
	}
	r.checkNothingLeft(t, out, tables)
}

// TestDemoKeep runs the demo with --keep: everything stays up and usable with the
// printed curl line, and the printed teardown command removes it all.
func TestDemoKeep(t *testing.T) {
	r := newDemoRun(t)
	tables := nftTables(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, r.args("--keep", "--paths", "2", "--rate", "20mbit,10mbit", "--delay", "2ms")...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := stdout.String()
	t.Logf("demo output:\n%s", out)
	if err != nil {
		t.Fatalf("mpath demo --keep: %v\nstderr:\n%s", err, stderr.String())
	}
	if strings.Contains(out, "cleaned up") {
		t.Fatal("--keep cleaned up")
	}
	for _, ns := range []string{r.prefix + "-c", r.prefix + "-r1", r.prefix + "-r2", r.prefix + "-x"} {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err != nil {
			t.Fatalf("--keep: namespace %s: %v", ns, err)
		}
	}
	// The printed curl line works: the file through the SOCKS front, sha256 as printed.
	m := regexp.MustCompile(`sha256 ([0-9a-f]{12})\.\.\.`).FindStringSubmatch(out)
	if m == nil {
		t.Fatal("no sha256 in the output")
	}
	url := fmt.Sprintf("http://10.%d.255.2/file", r.base)
	get := exec.CommandContext(ctx, "ip", "netns", "exec", r.prefix+"-c", "curl", "-sS", "--fail",
		"--socks5-hostname", "127.0.0.1:1080", url)
	body, err := get.Output()
	if err != nil {
		t.Fatalf("curl through the kept client: %v", err)
	}
	if sum := sha256.Sum256(body); len(body) != 3e6 || hex.EncodeToString(sum[:6]) != m[1] {
		t.Fatalf("kept lab served %d bytes, sha256 %x, want 3000000 bytes, %s...", len(body), sum[:6], m[1])
	}
	// The printed teardown line removes everything.
	lines := strings.Split(out, "\n")
	var teardown string
	for i, l := range lines {
		if strings.HasPrefix(l, "Tear it all down with:") && i+1 < len(lines) {
			teardown = strings.TrimSpace(lines[i+1])
		}
	}
	if !strings.HasPrefix(teardown, r.bin+" lab down --prefix "+r.prefix+" && rm -rf ") {
		t.Fatalf("teardown line %q", teardown)
	}
	if b, err := exec.Command("sh", "-c", teardown).CombinedOutput(); err != nil {
		t.Fatalf("teardown %q: %v\n%s", teardown, err, b)
	}
	r.checkNothingLeft(t, out, tables)
}
