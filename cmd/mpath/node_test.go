//go:build !slim

package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mpath/lab"
	"mpath/lab/labtest"
)

// TestNodesObservability runs a client, an exit and two relays in a lab (root, under
// the netns lock), fetches the exit's own metrics page through the tunnel with curl,
// then checks what an operator sees: promtool passes on every role's real /metrics,
// the flow setup histogram counted the flow, and client and exit each logged one
// access line for it with the bytes each way.
func TestNodesObservability(t *testing.T) {
	labtest.RequireRoot(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("skipping: curl not installed (make deps)")
	}
	l := labtest.New(t, lab.Config{Paths: make([]lab.PathSpec, 2)})
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes, err := l.StartNodes(ctx, lab.NodesConfig{Bin: labtest.Mpath(t), Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nodes.Stop(5 * time.Second) })

	target := l.ExitMetricsAddr() // any TCP service behind the exit will do
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.ClientNS(), "curl", "-sS", "--fail", "--max-time", "30",
		"--socks5-hostname", lab.ClientSOCKS, "http://"+target+"/metrics").Output()
	if err != nil || !strings.Contains(string(out), "mpath_exit_connections_total") {
		t.Fatalf("curl through mpath: %v\n%.300s", err, out)
	}

	metrics := map[string]string{
		"client": labtest.Get(t, l.ClientNS(), lab.ClientMetricsAddr, "/metrics"),
		"exit":   labtest.Get(t, l.ExitNS(), l.ExitMetricsAddr(), "/metrics"),
	}
	_, _, relayAddr := l.ClientPath(1)
	metrics["relay"] = labtest.Get(t, l.RelayNS(1), netip.AddrPortFrom(relayAddr, lab.RelayMetricsPort).String(), "/metrics")
	if !strings.Contains(metrics["client"], "mpath_flow_setup_seconds_count 1") ||
		!strings.Contains(metrics["exit"], "mpath_target_dial_seconds_count 1") {
		t.Errorf("setup histograms did not count the flow:\n%s", grepLines(metrics["client"]+metrics["exit"], "_seconds_count"))
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		for role, text := range metrics {
			cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
			cmd.Stdin = strings.NewReader(text)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s /metrics: promtool check metrics: %v\n%s", role, err, out)
			}
		}
	} else {
		t.Log("promtool not installed: lint skipped (make deps)")
	}

	// Stop the nodes so their logs are complete, then read the access lines.
	nodes.Stop(5 * time.Second)
	for _, role := range []string{"client", "exit"} {
		b, err := os.ReadFile(filepath.Join(dir, role+".log"))
		if err != nil {
			t.Fatal(err)
		}
		var lines []map[string]any
		for _, ln := range strings.Split(string(b), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(ln), &m) == nil && m["msg"] == "connection" {
				lines = append(lines, m)
			}
		}
		if len(lines) != 1 {
			t.Errorf("%s: %d access lines, want 1:\n%s", role, len(lines), b)
			continue
		}
		m := lines[0]
		down, _ := m["bytes_down"].(float64)
		up, _ := m["bytes_up"].(float64)
		if m["level"] != "info" || !strings.HasSuffix(m["target"].(string), target[strings.Index(target, ":"):]) ||
			int(down) < len(out) || up <= 0 || m["duration"] == nil {
			t.Errorf("%s access line %v (body %d bytes)", role, m, len(out))
		}
		if strings.Contains(m["logger"].(string), role+"."+role) {
			t.Errorf("%s logger named twice: %v", role, m["logger"])
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
