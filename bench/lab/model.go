package benchlab

import (
	"fmt"
	"sort"
	"time"
)

// kind is what carries a measurement.
type kind int

const (
	kindMpath  kind = iota // mpath client and exit (SOCKS5 front, or direct mode)
	kindMPTCP              // kernel MPTCP: curl under mptcpize, Go MPTCP server in the exit namespace
	kindKernel             // kernel TCP bound to one path's address (crosses one relay)
	kindTTFB               // time to first byte of a small page, mpath minus kernel TCP (bench.Run)
	kindPage               // many fetches at once, time to the last byte (mpath: Path 0; kernel TCP: Path)
)

// System labels: the keys of Cell.Runs.
const (
	sysMpath     = "mpath"
	sysWeighted  = "mpath weighted"
	sysAuto      = "mpath auto"
	sysMPTCP     = "MPTCP"
	sysKernel    = "kernel TCP"
	sysSingle    = "best single path"
	sysMpathUp   = "mpath upload"
	sysMPTCPUp   = "MPTCP upload"
	sysKernelUp  = "kernel TCP upload"
	sysTTFBMpath = "TTFB mpath"
	sysTTFBDir   = "TTFB direct"
)

// Measure is one way of moving the cell's file: which system, configured how.
type Measure struct {
	System     string
	Kind       kind
	Scheduler  string    // mpath: auto, weighted, rr
	Weights    []int     // mpath weighted: one per path used
	RecvWindow int       // mpath: --recv-window in bytes (0: default)
	Direct     bool      // mpath: client in direct mode (no exit)
	Upload     bool      // client -> server instead of a download
	Encap      string    // mpath: --encap of both nodes ("": the default, ipip)
	Path       int       // kernel TCP: the path (from 1) whose address curl binds
	CPU        bool      // account the CPU time of every process involved
	Page       *pageLoad // kindPage: what to fetch at once
}

// nodesKey identifies the mpath node configuration a measure needs: the same key means
// the running nodes can be reused.
func (m Measure) nodesKey(nodes int) string {
	return fmt.Sprintf("n=%d s=%s w=%v rw=%d d=%v e=%s", nodes, m.Scheduler, m.Weights, m.RecvWindow, m.Direct, m.Encap)
}

// Topo is what a lab must be rebuilt for: the number of paths and the relays'
// impairments. Rates are changed in place (tc), so they are not part of it.
type Topo struct {
	Paths int
	Delay []time.Duration // one-way, per path (nil: none)
	Loss  []float64       // fraction per path and direction (nil: none)
	// Queue is the bottleneck (tbf) queue of every rate-limited path as time at its rate
	// (0: the runner's default, 100 ms at the rate and at least 32 KB).
	Queue time.Duration
	// NAT selects the NATed-uplinks topology (lab/uplinks.sh, the uplinks scenario)
	// instead of relays: Paths uplinks, each behind its own masquerading ISP router.
	NAT bool
	// Drop4 is the uplink (from 1) whose ISP drops IP protocol 4 (NAT only; 0: none).
	Drop4 int
}

func (t Topo) key() string {
	return fmt.Sprintf("%d %v %v %v nat=%v/%d", t.Paths, t.Delay, t.Loss, t.Queue, t.NAT, t.Drop4)
}

func (t Topo) delay(i int) time.Duration {
	if i < len(t.Delay) {
		return t.Delay[i]
	}
	return 0
}

func (t Topo) loss(i int) float64 {
	if i < len(t.Loss) {
		return t.Loss[i]
	}
	return 0
}

// Outcome is what one measurement found.
type Outcome struct {
	System   string  `json:"system"`
	KBps     float64 `json:"kBps"`              // body bytes per second / 1000
	Bytes    int64   `json:"bytes"`             // body bytes that arrived (verified byte for byte)
	Size     int64   `json:"size"`              // the file's size
	Seconds  float64 `json:"seconds"`           // curl's time_total (connect to last byte, or the cap)
	Complete bool    `json:"complete"`          // the whole file arrived before the time cap
	TTFBms   float64 `json:"ttfb_ms,omitempty"` // time to first byte (median for kindTTFB)
	RTTms    float64 `json:"rtt_ms,omitempty"`  // kindTTFB: median TCP connect time of the direct run
	Samples  int     `json:"samples,omitempty"` // kindTTFB: requests
	Fetches  int     `json:"fetches,omitempty"` // kindPage: connections at once
	// Resent is, for mpath page loads, the exit's segments re-sent over its packets sent
	// during the run (all paths).
	Resent  *float64  `json:"resent_fraction,omitempty"`
	Repeats []float64 `json:"repeats_kBps,omitempty"` // every repetition's kB/s when --repeat > 1
	// PathBytes are the bytes each relay forwarded (both directions, headers included)
	// during the measurement: how the traffic really split over the paths.
	PathBytes []uint64 `json:"path_bytes,omitempty"`
	// MPTCPConn is set for kernel MPTCP: whether the server's accepted connection was
	// MPTCP (false: the kernel fell back to plain TCP).
	MPTCPConn *bool `json:"mptcp_conn,omitempty"`
	// CPU is CPU time in seconds by process group during the measurement (when asked).
	CPU   map[string]float64 `json:"cpu_seconds,omitempty"`
	Load1 float64            `json:"load1"` // 1-minute load average when it ended
	// QuietWait is how long the measurement waited for the paths to fall quiet after the
	// previous one (seconds; more than a few tenths means leftover traffic).
	QuietWait float64 `json:"quiet_wait_s,omitempty"`
	Err       string  `json:"error,omitempty"`
	// SharedWith names the cell whose measurement this is (the same system under the
	// same conditions is measured once per table).
	SharedWith string `json:"shared_with,omitempty"`
}

// PathsUsed counts the paths that carried at least 1% of the forwarded bytes.
func (r *Outcome) PathsUsed() int {
	var total uint64
	for _, b := range r.PathBytes {
		total += b
	}
	n := 0
	for _, b := range r.PathBytes {
		if total > 0 && float64(b) >= 0.01*float64(total) {
			n++
		}
	}
	return n
}

// Shares returns each path's fraction of the forwarded bytes.
func (r *Outcome) Shares() []float64 {
	var total uint64
	for _, b := range r.PathBytes {
		total += b
	}
	out := make([]float64, len(r.PathBytes))
	for i, b := range r.PathBytes {
		if total > 0 {
			out[i] = float64(b) / float64(total)
		}
	}
	return out
}

// CPUTotal is the sum of the CPU seconds of every process group (not the system-wide
// busy time, which is recorded apart).
func (r *Outcome) CPUTotal() float64 {
	var s float64
	for k, v := range r.CPU {
		if k != cpuSystemWide {
			s += v
		}
	}
	return s
}

// cpuSystemWide is the CPU map key for /proc/stat's busy time over all CPUs.
const cpuSystemWide = "system-wide (/proc/stat)"

// Cell is one entry of a table: one link setup, measured with every system of the table.
type Cell struct {
	Row    string  `json:"row"`
	Col    string  `json:"col"`
	X      float64 `json:"x"`      // chart x value (nodes, ratio k, buffer packets)
	Series string  `json:"series"` // chart series (the rate column)
	Nodes  int     `json:"nodes"`  // paths the systems use (1..Nodes)
	// Rates are the per-path rate limits in bytes/s for paths 1..len (0: unlimited).
	Rates []int64 `json:"rates_Bps"`
	// Sum is the sum of the rates of the paths the measured direction can use, bytes/s
	// (0: a path is unlimited, no sum).
	Sum    int64               `json:"sum_Bps"`
	Thesis map[string]float64  `json:"thesis_kBps,omitempty"` // by thesis table number
	Runs   map[string]*Outcome `json:"runs"`
	Delay  []string            `json:"delay,omitempty"` // per path one-way delay, for the record
	Loss   []float64           `json:"loss,omitempty"`

	measures []Measure
	topo     Topo
}

// Table is one result table: thesis-shaped rows x columns of cells.
type Table struct {
	ID       string   `json:"id"` // e.g. "4.8", or a name for tables beyond the thesis
	Scenario string   `json:"scenario"`
	Title    string   `json:"title"`
	Note     string   `json:"note,omitempty"`
	RowHead  string   `json:"row_head"`
	Rows     []string `json:"rows"`
	Cols     []string `json:"cols"`
	Systems  []string `json:"systems"`
	Thesis   []string `json:"thesis,omitempty"` // thesis table numbers the cells carry
	Target   string   `json:"target,omitempty"` // the target, when there is one
	Chart    string   `json:"chart"`            // "lines" (x numeric) or "bars"
	XLabel   string   `json:"x_label,omitempty"`
	Cells    []*Cell  `json:"cells"`
	Started  string   `json:"started,omitempty"`
	Seconds  float64  `json:"seconds,omitempty"`
	LoadFrom float64  `json:"load1_start"`
	LoadTo   float64  `json:"load1_end"`
	Findings []string `json:"findings,omitempty"` // derived lines: ratios, targets met or not
	Charts   []string `json:"charts,omitempty"`   // PNG files written for it
}

// cell returns the cell at row, col, or nil.
func (t *Table) cell(row, col string) *Cell {
	for _, c := range t.Cells {
		if c.Row == row && c.Col == col {
			return c
		}
	}
	return nil
}

// series returns the distinct chart series in first-seen order.
func (t *Table) series() []string {
	var out []string
	seen := map[string]bool{}
	for _, c := range t.Cells {
		if !seen[c.Series] {
			seen[c.Series] = true
			out = append(out, c.Series)
		}
	}
	return out
}

// kB formats bytes/s as kB/s with sensible precision.
func kB(bps float64) string {
	v := bps / 1000
	switch {
	case v <= 0:
		return "0"
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	case v < 1000:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// pct formats a fraction as a percentage.
func pct(f float64) string { return fmt.Sprintf("%.0f%%", 100*f) }

// sortedKeys returns a map's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// sizeLabel formats a byte count: "1.5 MB", "64 kB".
func sizeLabel(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.0f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}
