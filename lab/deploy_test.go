package lab

import (
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// A comm with spaces and parentheses; utime 250, stime 75 ticks.
	line := "4242 (mpath (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 100 0 0"
	got, err := parseStatCPU(line)
	if err != nil || got != 3250*time.Millisecond {
		t.Errorf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 u s"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := ProcCPU(1 << 30); err == nil {
		t.Error("a missing process has CPU time")
	}
}

func TestPathFlags(t *testing.T) {
	l := &Lab{cfg: Config{Prefix: "t", Base: 9, Paths: make([]PathSpec, 3)}}
	got := strings.Join(l.PathFlags("client", []int{1, 3}, []int{2, 7}), " ")
	if got != "--path dev=c1,relay=10.9.1.2,weight=2 --path dev=c3,relay=10.9.3.2,weight=7" {
		t.Errorf("client: %s", got)
	}
	got = strings.Join(l.PathFlags("exit", []int{2}, nil), " ")
	if got != "--path dev=x2,relay=10.9.102.2" {
		t.Errorf("exit: %s", got)
	}
	if l.ExitEngineAddr().String() != "10.9.255.2:7000" || l.ExitMetricsAddr() != "10.9.255.2:9091" {
		t.Errorf("exit addresses %v %v", l.ExitEngineAddr(), l.ExitMetricsAddr())
	}
}

// StartNodes refuses a bad configuration before it starts anything.
func TestStartNodesConfigErrors(t *testing.T) {
	l := &Lab{cfg: Config{Prefix: "t", Base: 9, Paths: make([]PathSpec, 2), MpathBin: "/nonexistent/mpath"}}
	for name, cfg := range map[string]NodesConfig{
		"no dir":         {},
		"path 3 of 2":    {Dir: t.TempDir(), Paths: []int{1, 3}},
		"path 0":         {Dir: t.TempDir(), Paths: []int{0}},
		"weights length": {Dir: t.TempDir(), Paths: []int{1, 2}, Weights: []int{1}},
	} {
		if n, err := l.StartNodes(t.Context(), cfg); err == nil {
			n.Stop(time.Second)
			t.Errorf("%s: started", name)
		}
	}
}
