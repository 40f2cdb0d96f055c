package benchlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mpath/lab"
	"mpath/lab/labtest"
)

// benchRun is one `mpath bench --lab` process under test, with a unique lab prefix.
type benchRun struct {
	bin, prefix, out string
	base             int
	tables           map[string]bool // root-namespace nftables tables before the run
	temps            map[string]bool // mpath-benchlab-* temp dirs before the run
}

func newBenchRun(t *testing.T) *benchRun {
	t.Helper()
	labtest.RequireRoot(t)
	for _, tool := range []string{"curl", "mptcpize", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed (apt-get install curl mptcpize nftables)", tool)
		}
	}
	if _, err := lab.ApacheBinary(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	r := &benchRun{bin: labtest.Mpath(t), out: t.TempDir()}
	r.base, r.prefix = labtest.Reserve(t)
	t.Cleanup(func() { _ = lab.Down(r.prefix) })
	r.tables = nftTables(t)
	r.temps = benchTemps()
	return r
}

func (r *benchRun) args(scenarios string) []string {
	return []string{"bench", "--lab", scenarios, "--quick", "--prefix", r.prefix, "--base", fmt.Sprint(r.base), "--out", r.out}
}

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

func benchTemps() map[string]bool {
	m := map[string]bool{}
	entries, _ := os.ReadDir(os.TempDir())
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "mpath-benchlab-") {
			m[e.Name()] = true
		}
	}
	return m
}

// checkNothingLeft fails when a namespace of the prefix, a process of the test's mpath
// binary, a new root-namespace nftables table or a new work dir is left behind.
func (r *benchRun) checkNothingLeft(t *testing.T) {
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
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if exe, _ := os.Readlink(filepath.Join("/proc", p.Name(), "exe")); exe == r.bin {
			cl, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
			t.Errorf("mpath process left: pid %s: %s", p.Name(), strings.ReplaceAll(string(cl), "\x00", " "))
		}
	}
	for tb := range nftTables(t) {
		if !r.tables[tb] && strings.Contains(tb, "mpath") {
			t.Errorf("nftables %s appeared in the root namespace", tb)
		}
	}
	for d := range benchTemps() {
		if !r.temps[d] {
			t.Errorf("work dir %s left in %s", d, os.TempDir())
		}
	}
	if _, err := os.Stat(filepath.Join(r.out, "logs", "psk")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the nodes' key is left in the output (%v)", err)
	}
}

// TestE2EQuickSweep is the CI check: `mpath bench --lab ... --quick` runs the quick cells of
// the rates, weights and transport scenarios end to end (mpath, MPTCP and kernel TCP
// downloads, a weighted cell, a direct-mode upload, CPU accounting), writes a report,
// results.json with positive figures and decodable charts, and leaves nothing behind.
func TestE2EQuickSweep(t *testing.T) {
	r := newBenchRun(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, r.args("rates,weights,transport")...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("output:\n%s", stdout.String())
	if err != nil {
		t.Fatalf("mpath bench --lab: %v\nstderr:\n%s", err, stderr.String())
	}
	for _, want := range []string{"Table 4.8: Multipath", "Table 4.12: Two paths", "Table direct:", "Table unlimited:",
		"kB/s, each cell: mpath / MPTCP / thesis 4.8", "report: " + filepath.Join(r.out, "report.md")} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	b, err := os.ReadFile(filepath.Join(r.out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if res.Failures != 0 || len(res.Tables) != 5 || res.Finished == "" || res.TCPCongestion == "" {
		t.Fatalf("results: %d failures %v, %d tables, finished %q, cc %q", res.Failures, res.Errors, len(res.Tables), res.Finished, res.TCPCongestion)
	}
	report, err := os.ReadFile(filepath.Join(r.out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range res.Tables {
		if !strings.Contains(string(report), "## Table "+tb.ID+"\n") {
			t.Errorf("report.md has no section for table %s", tb.ID)
		}
		for _, c := range tb.Cells {
			for _, sys := range tb.Systems {
				run := c.Runs[sys]
				if run == nil || run.Err != "" || run.KBps <= 0 || run.Bytes <= 0 || run.Seconds <= 0 {
					t.Errorf("table %s %s/%s %s: %+v", tb.ID, c.Row, c.Col, sys, run)
					continue
				}
				// Kernel MPTCP over two paths: an MPTCP connection, both relays carrying it.
				if sys == sysMPTCP && c.Nodes > 1 && (run.MPTCPConn == nil || !*run.MPTCPConn || run.PathsUsed() < 2) {
					t.Errorf("table %s %s/%s: MPTCP not over several paths: conn %v, path bytes %v", tb.ID, c.Row, c.Col, run.MPTCPConn, run.PathBytes)
				}
			}
		}
		if tb.Chart != "none" && len(tb.Charts) == 0 {
			t.Errorf("table %s: no chart", tb.ID)
		}
		for _, name := range tb.Charts {
			if !strings.Contains(string(report), "]("+name+")") {
				t.Errorf("report.md does not embed %s", name)
			}
			f, err := os.Open(filepath.Join(r.out, name))
			if err != nil {
				t.Errorf("chart: %v", err)
				continue
			}
			if _, err := png.Decode(f); err != nil {
				t.Errorf("chart %s: %v", name, err)
			}
			f.Close()
		}
	}
	// The CPU accounting saw the relay and, for mpath, both nodes.
	for _, tb := range res.Tables {
		if tb.ID != "unlimited" {
			continue
		}
		m := tb.Cells[0].Runs[sysMpath]
		if m.CPU["relay"] <= 0 || m.CPU["mpath client"] <= 0 || m.CPU["mpath exit"] <= 0 || m.CPU["curl"] <= 0 {
			t.Errorf("mpath CPU accounting: %v", m.CPU)
		}
	}
	r.checkNothingLeft(t)
}

// TestE2EInterrupt sends SIGINT in the middle of a sweep: it must stop, say so, exit
// non-zero, keep the tables finished so far and tear the lab down.
func TestE2EInterrupt(t *testing.T) {
	r := newBenchRun(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, r.args("rates")...)
	_, errS, err := labtest.Interrupt(t, cmd, "  4.8 ")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("interrupted sweep: err = %v, want a non-zero exit", err)
	}
	if !strings.Contains(errS, "interrupted") {
		t.Error("stderr does not say it was interrupted")
	}
	b, err := os.ReadFile(filepath.Join(r.out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil || len(res.Tables) == 0 || res.Tables[0].ID != "4.4/4.6" || res.Tables[0].Seconds == 0 {
		t.Errorf("results.json after the interrupt: %v %+v", err, res.Tables)
	}
	r.checkNothingLeft(t)
}
