// Package table reads the Prometheus metrics that `mpath client` and `mpath exit` serve
// and renders them as per-path text tables, for `mpath status` and `mpath demo` (and
// anything else that wants the same view, such as bench sweeps).
//
//	http://ADDR/metrics ──Fetch/Parse──► Snapshot ──Diff(prev, cur)──► rates, deltas
//	                                        │                  Tracker (RTT over a transfer)
//	                                        └──StatusTable/NodeLines──► Table ──Render──► text
//
// It owns the mapping from the metric names (the contract in cmd/mpath/metrics.go) to
// Go values, and the text layout: column widths, units, alignment. It does no I/O
// besides Fetch's HTTP request and Render's writes, and it does not read the clock:
// callers pass the time a snapshot was taken.
package table

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// ErrNoPaths means the metrics held no mpath_path_* series: the endpoint is not an
// mpath client or exit (a relay serves mpath_relay_* instead).
var ErrNoPaths = errors.New("no mpath_path_* metrics (is this an mpath client or exit?)")

// Path is one path as a node reports it. Counters are totals since the node started;
// SRTT, MinRTT, Cwnd, InFlight and DeliveryRate describe live connections only (zero
// when the node has none).
type Path struct {
	Index        int
	Name         string // "dev>relay", e.g. "c1>10.77.1.2"
	Up           bool
	TxPackets    uint64
	TxBytes      uint64 // headers included
	RxPackets    uint64
	RxBytes      uint64 // headers included
	Delivered    uint64 // payload bytes sent on the path that the peer acknowledged
	Retransmits  uint64
	Lost         uint64
	Spurious     uint64
	SendErrors   uint64
	SRTT         time.Duration
	MinRTT       time.Duration
	Cwnd         int64
	InFlight     int64
	DeliveryRate float64 // bytes/s
	Share        float64 // fraction of this node's delivered bytes that went over the path
}

// Snapshot is one scrape of a node's metrics. The zero value is an empty snapshot; a
// Snapshot is not safe for concurrent mutation.
type Snapshot struct {
	Time             time.Time // when it was taken (given by the caller)
	Role             string    // "client" or "exit"
	Paths            []Path    // by index
	Flows            int
	ReorderMaxDepth  int
	ReorderHeldBytes int64
	ReorderHoldMax   time.Duration
	EngineDrops      map[string]uint64            // by reason
	LinkDrops        map[string]uint64            // by reason
	Front            map[string]map[string]uint64 // front ("socks", "http") -> event (and bytes_up, bytes_down) -> count
	Exit             map[string]uint64            // event (and bytes_to_target, bytes_from_target) -> count (exit only)
	ExitRefused      map[string]uint64            // reason -> count (exit only)
	ExitActive       int
	HasExit          bool // the node reported exit counters
	// Learned are a learning exit's return endpoints (client, path) in that order;
	// EndpointMoves counts the times one changed.
	Learned       []Learned
	EndpointMoves uint64
}

// Learned is one client path's return endpoint at a learning exit: where that path's
// packets last came from, and when that last changed.
type Learned struct {
	Client   string // the client's inner address
	Path     int    // the client's path index (from 0)
	Endpoint string // address:port (port 0 with IPIP)
	Changed  time.Time
	Paths    int // the number of paths the client announces (0: not reported)
}

// Fetch scrapes http://addr/metrics (addr may also be a full http:// URL) with c (nil:
// a client with a 5 s timeout) and parses it, stamping it with the time the response
// arrived.
func Fetch(ctx context.Context, c *http.Client, addr string) (*Snapshot, error) {
	if c == nil {
		c = &http.Client{Timeout: 5 * time.Second}
	}
	url := addr
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		url = "http://" + addr + "/metrics"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch metrics: %w", err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch metrics %s: %s", url, resp.Status)
	}
	s, err := Parse(resp.Body, time.Now())
	if err != nil {
		return nil, fmt.Errorf("fetch metrics %s: %w", url, err)
	}
	return s, nil
}

// Parse reads Prometheus text exposition format and returns the mpath metrics in it,
// stamped with at. Unknown series are ignored; a text without any mpath_path_* series
// is ErrNoPaths.
func Parse(r io.Reader, at time.Time) (*Snapshot, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	s := &Snapshot{Time: at, EngineDrops: map[string]uint64{}, LinkDrops: map[string]uint64{},
		Front: map[string]map[string]uint64{}, Exit: map[string]uint64{}, ExitRefused: map[string]uint64{}}
	paths := map[int]*Path{}
	announced := map[string]int{}
	path := func(m *dto.Metric) *Path {
		idx, err := strconv.Atoi(label(m, "index"))
		if err != nil {
			return nil
		}
		p := paths[idx]
		if p == nil {
			p = &Path{Index: idx, Name: label(m, "path")}
			paths[idx] = p
		}
		if s.Role == "" {
			s.Role = label(m, "role")
		}
		return p
	}
	for name, fam := range fams {
		for _, m := range fam.GetMetric() {
			v := value(m)
			if strings.HasPrefix(name, "mpath_path_") {
				p := path(m)
				if p == nil {
					continue
				}
				setPath(p, name, v)
				continue
			}
			switch name {
			case "mpath_flows":
				s.Flows = int(v)
			case "mpath_reorder_max_depth":
				s.ReorderMaxDepth = int(v)
			case "mpath_reorder_held_bytes":
				s.ReorderHeldBytes = int64(v)
			case "mpath_reorder_hold_max_seconds":
				s.ReorderHoldMax = seconds(v)
			case "mpath_engine_drops_total":
				s.EngineDrops[label(m, "reason")] = count(v)
			case "mpath_link_drops_total":
				s.LinkDrops[label(m, "reason")] = count(v)
			case "mpath_front_connections_total", "mpath_front_bytes_total":
				f := label(m, "front")
				if s.Front[f] == nil {
					s.Front[f] = map[string]uint64{}
				}
				ev := label(m, "event")
				if name == "mpath_front_bytes_total" {
					ev = "bytes_" + label(m, "direction") // bytes_up, bytes_down
				}
				s.Front[f][ev] = count(v)
			case "mpath_exit_connections_total":
				s.Exit[label(m, "event")] = count(v)
				s.HasExit = true
			case "mpath_exit_bytes_total":
				s.Exit["bytes_"+label(m, "direction")] = count(v) // bytes_to_target, bytes_from_target
				s.HasExit = true
			case "mpath_exit_refused_total":
				s.ExitRefused[label(m, "reason")] = count(v)
			case "mpath_exit_active":
				s.ExitActive = int(v)
				s.HasExit = true
			case "mpath_link_learned_endpoint_changed_seconds":
				idx, err := strconv.Atoi(label(m, "path"))
				if err != nil {
					continue
				}
				sec, frac := math.Modf(v)
				s.Learned = append(s.Learned, Learned{Client: label(m, "client"), Path: idx, Endpoint: label(m, "endpoint"),
					Changed: time.Unix(int64(sec), int64(frac*1e9))})
			case "mpath_link_endpoint_moves_total":
				s.EndpointMoves = count(v)
			case "mpath_link_learned_client_paths":
				announced[label(m, "client")] = int(v)
			}
		}
	}
	if len(paths) == 0 {
		return nil, ErrNoPaths
	}
	for _, p := range paths {
		s.Paths = append(s.Paths, *p)
	}
	sort.Slice(s.Paths, func(i, j int) bool { return s.Paths[i].Index < s.Paths[j].Index })
	for i := range s.Learned {
		s.Learned[i].Paths = announced[s.Learned[i].Client]
	}
	sort.Slice(s.Learned, func(i, j int) bool {
		a, b := s.Learned[i], s.Learned[j]
		if a.Client != b.Client {
			return a.Client < b.Client
		}
		return a.Path < b.Path
	})
	return s, nil
}

func setPath(p *Path, name string, v float64) {
	switch name {
	case "mpath_path_up":
		p.Up = v != 0
	case "mpath_path_tx_packets_total":
		p.TxPackets = count(v)
	case "mpath_path_tx_bytes_total":
		p.TxBytes = count(v)
	case "mpath_path_rx_packets_total":
		p.RxPackets = count(v)
	case "mpath_path_rx_bytes_total":
		p.RxBytes = count(v)
	case "mpath_path_delivered_bytes_total":
		p.Delivered = count(v)
	case "mpath_path_retransmits_total":
		p.Retransmits = count(v)
	case "mpath_path_lost_total":
		p.Lost = count(v)
	case "mpath_path_spurious_total":
		p.Spurious = count(v)
	case "mpath_path_send_errors_total":
		p.SendErrors = count(v)
	case "mpath_path_srtt_seconds":
		p.SRTT = seconds(v)
	case "mpath_path_min_rtt_seconds":
		p.MinRTT = seconds(v)
	case "mpath_path_cwnd_bytes":
		p.Cwnd = int64(v)
	case "mpath_path_inflight_bytes":
		p.InFlight = int64(v)
	case "mpath_path_delivery_rate_bytes_per_second":
		p.DeliveryRate = v
	case "mpath_path_delivered_ratio":
		p.Share = v
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func count(v float64) uint64 {
	if v <= 0 || math.IsNaN(v) {
		return 0
	}
	return uint64(math.Round(v))
}

func seconds(v float64) time.Duration {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return time.Duration(v * float64(time.Second))
}

// PathDelta is what one path did between two snapshots of the same node.
type PathDelta struct {
	Path                    // the later snapshot's values
	DTxBytes, DRxBytes      uint64
	DDelivered              uint64
	DRetransmits, DLost     uint64
	Elapsed                 time.Duration
	TxRate, RxRate, DelRate float64 // bytes/s over Elapsed (0 when Elapsed is 0)
}

// Diff returns per-path deltas from prev to cur (two snapshots of the same node, prev
// taken first). Counters that went backwards (the node restarted) count from zero.
// A nil prev gives deltas from zero with no rates.
func Diff(prev, cur *Snapshot) []PathDelta {
	out := make([]PathDelta, 0, len(cur.Paths))
	var el time.Duration
	if prev != nil {
		el = cur.Time.Sub(prev.Time)
	}
	for _, p := range cur.Paths {
		d := PathDelta{Path: p, Elapsed: el}
		var q Path
		if prev != nil {
			for _, x := range prev.Paths {
				if x.Index == p.Index {
					q = x
				}
			}
		}
		sub := func(a, b uint64) uint64 {
			if a < b {
				return a
			}
			return a - b
		}
		d.DTxBytes = sub(p.TxBytes, q.TxBytes)
		d.DRxBytes = sub(p.RxBytes, q.RxBytes)
		d.DDelivered = sub(p.Delivered, q.Delivered)
		d.DRetransmits = sub(p.Retransmits, q.Retransmits)
		d.DLost = sub(p.Lost, q.Lost)
		if el > 0 {
			s := el.Seconds()
			d.TxRate = float64(d.DTxBytes) / s
			d.RxRate = float64(d.DRxBytes) / s
			d.DelRate = float64(d.DDelivered) / s
		}
		out = append(out, d)
	}
	return out
}

// Tracker follows a node's per-path RTT and health over a transfer from a series of
// snapshots: SRTT and MinRTT are only reported while connections live, so a snapshot
// taken after the transfer has none. The zero value is ready; not safe for concurrent
// use.
type Tracker struct {
	paths map[int]*trackedPath
}

type trackedPath struct {
	srttSum   time.Duration
	srttN     int
	minRTT    time.Duration
	wentDown  bool
	maxCwnd   int64
	snapshots int
}

// RTTSummary is what a Tracker saw of one path.
type RTTSummary struct {
	MeanSRTT time.Duration // mean of the non-zero SRTT samples (0: none)
	MinRTT   time.Duration // smallest non-zero min RTT seen (0: none)
	Samples  int           // snapshots with an SRTT sample
	WentDown bool          // some snapshot had the path down
	MaxCwnd  int64
}

// Observe records one snapshot.
func (t *Tracker) Observe(s *Snapshot) {
	if t.paths == nil {
		t.paths = map[int]*trackedPath{}
	}
	for _, p := range s.Paths {
		tp := t.paths[p.Index]
		if tp == nil {
			tp = &trackedPath{}
			t.paths[p.Index] = tp
		}
		tp.snapshots++
		if !p.Up {
			tp.wentDown = true
		}
		// Only snapshots with data in flight: the engine keeps reporting the last
		// SRTT of a finished connection, which would weigh an idle tail.
		if p.SRTT > 0 && p.InFlight > 0 {
			tp.srttSum += p.SRTT
			tp.srttN++
		}
		if p.MinRTT > 0 && (tp.minRTT == 0 || p.MinRTT < tp.minRTT) {
			tp.minRTT = p.MinRTT
		}
		if p.Cwnd > tp.maxCwnd {
			tp.maxCwnd = p.Cwnd
		}
	}
}

// Summary returns what was seen of path index.
func (t *Tracker) Summary(index int) RTTSummary {
	tp := t.paths[index]
	if tp == nil {
		return RTTSummary{}
	}
	s := RTTSummary{MinRTT: tp.minRTT, Samples: tp.srttN, WentDown: tp.wentDown, MaxCwnd: tp.maxCwnd}
	if tp.srttN > 0 {
		s.MeanSRTT = tp.srttSum / time.Duration(tp.srttN)
	}
	return s
}
