package table

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Table is a plain-text table: a header and rows of cells. The first column is
// left-aligned and the others right-aligned, unless Align says otherwise ('l' or 'r'
// per column). The zero value is an empty table; not safe for concurrent use.
type Table struct {
	Header []string
	Rows   [][]string
	Align  string // per column 'l' or 'r'; missing columns: first 'l', rest 'r'
	Indent string // written before every line
}

// Add appends a row.
func (t *Table) Add(cells ...string) { t.Rows = append(t.Rows, cells) }

// Render writes the table, columns separated by two spaces, with no trailing spaces.
func (t *Table) Render(w io.Writer) error {
	n := len(t.Header)
	for _, r := range t.Rows {
		n = max(n, len(r))
	}
	width := make([]int, n)
	all := append([][]string{t.Header}, t.Rows...)
	for _, r := range all {
		for i, c := range r {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for ri, r := range all {
		if ri == 0 && len(t.Header) == 0 {
			continue
		}
		var line strings.Builder
		line.WriteString(t.Indent)
		for i := 0; i < n; i++ {
			c := ""
			if i < len(r) {
				c = r[i]
			}
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if i > 0 {
				line.WriteString("  ")
			}
			if t.align(i) == 'l' {
				line.WriteString(c + pad)
			} else {
				line.WriteString(pad + c)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " "))
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (t *Table) align(i int) byte {
	if i < len(t.Align) {
		return t.Align[i]
	}
	if i == 0 {
		return 'l'
	}
	return 'r'
}

// Bytes formats a byte count with a decimal unit: "987 B", "12.3 kB", "45.6 MB", "1.20 GB".
func Bytes(n uint64) string {
	f := float64(n)
	switch {
	case n < 1000:
		return fmt.Sprintf("%d B", n)
	case f < 1e6:
		return fmt.Sprintf("%.1f kB", f/1e3)
	case f < 1e9:
		return fmt.Sprintf("%.1f MB", f/1e6)
	}
	return fmt.Sprintf("%.2f GB", f/1e9)
}

// Mbit formats a rate in bytes/s as megabits per second: "21.7 Mbit/s" (decimal, as tc
// and iperf count).
func Mbit(bytesPerSec float64) string {
	mb := bytesPerSec * 8 / 1e6
	if mb < 10 {
		return fmt.Sprintf("%.2f Mbit/s", mb)
	}
	return fmt.Sprintf("%.1f Mbit/s", mb)
}

// Ms formats a duration in milliseconds ("56.8 ms"); zero is "-" (no sample).
func Ms(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	ms := float64(d) / float64(time.Millisecond)
	if ms < 10 {
		return fmt.Sprintf("%.2f ms", ms)
	}
	return fmt.Sprintf("%.1f ms", ms)
}

// Pct formats a fraction as a percentage: "58.1%".
func Pct(f float64) string { return fmt.Sprintf("%.1f%%", f*100) }

// State is "up" or "DOWN".
func State(up bool) string {
	if up {
		return "up"
	}
	return "DOWN"
}

// Short formats a byte count compactly for dense tables: "999", "12.3k", "45.6M", "1.20G".
func Short(n uint64) string {
	f := float64(n)
	switch {
	case n < 1000:
		return fmt.Sprintf("%d", n)
	case f < 1e6:
		return fmt.Sprintf("%.1fk", f/1e3)
	case f < 1e9:
		return fmt.Sprintf("%.1fM", f/1e6)
	}
	return fmt.Sprintf("%.2fG", f/1e9)
}

// StatusTable is the per-path table of `mpath status`: state; the path's share of what
// this node sent (acknowledged bytes) and received; bytes sent and received (headers
// included); send and receive rates in Mbit/s since prev (when prev is not nil);
// smoothed and minimum RTT; congestion window and bytes in flight (live connections);
// retransmitted and lost segments. Pairs are written "tx/rx".
func StatusTable(cur, prev *Snapshot) *Table {
	t := &Table{Header: []string{"PATH", "STATE", "SHARE tx/rx", "BYTES tx/rx", "Mbit/s tx/rx",
		"SRTT", "MIN RTT", "CWND", "IN FLIGHT", "RETRANS", "LOST"}}
	var rxTotal uint64
	for _, p := range cur.Paths {
		rxTotal += p.RxBytes
	}
	for _, d := range Diff(prev, cur) {
		rates := "-"
		if prev != nil && d.Elapsed > 0 {
			rates = fmt.Sprintf("%.2f/%.2f", d.TxRate*8/1e6, d.RxRate*8/1e6)
		}
		rxShare := 0.0
		if rxTotal > 0 {
			rxShare = float64(d.RxBytes) / float64(rxTotal)
		}
		t.Add(fmt.Sprintf("%d %s", d.Index+1, d.Name), State(d.Up),
			Pct(d.Share)+"/"+Pct(rxShare), Short(d.TxBytes)+"/"+Short(d.RxBytes), rates,
			Ms(d.SRTT), Ms(d.MinRTT), Short(uint64(max(d.Cwnd, 0))), Short(uint64(max(d.InFlight, 0))),
			fmt.Sprint(d.Retransmits), fmt.Sprint(d.Lost))
	}
	return t
}

// NodeLines writes the node-wide figures under a status table: flows, reordering,
// drops by reason (non-zero ones), the proxy fronts' and the exit's counters.
func NodeLines(w io.Writer, s *Snapshot) {
	fmt.Fprintf(w, "flows %d   reorder: max depth %d segments, held %s, longest hold %s\n",
		s.Flows, s.ReorderMaxDepth, Bytes(uint64(max(s.ReorderHeldBytes, 0))), Ms(s.ReorderHoldMax))
	fmt.Fprintf(w, "drops: engine %s   link %s\n", reasons(s.EngineDrops), reasons(s.LinkDrops))
	fronts := make([]string, 0, len(s.Front))
	for f := range s.Front {
		fronts = append(fronts, f)
	}
	sort.Strings(fronts)
	for _, f := range fronts {
		ev := s.Front[f]
		fmt.Fprintf(w, "%s front: accepted %d, relayed %d, up %s, down %s, failed: handshake %d auth %d dial %d, over limit %d\n",
			f, ev["accepted"], ev["relayed"], Bytes(ev["bytes_up"]), Bytes(ev["bytes_down"]),
			ev["handshake_failed"], ev["auth_failed"], ev["dial_failed"], ev["over_limit"])
	}
	if s.HasExit {
		fmt.Fprintf(w, "exit: active %d, accepted %d, relayed %d, to targets %s, from targets %s, over limit %d, refused %s\n",
			s.ExitActive, s.Exit["accepted"], s.Exit["relayed"], Bytes(s.Exit["bytes_to_target"]),
			Bytes(s.Exit["bytes_from_target"]), s.Exit["over_limit"], reasons(s.ExitRefused))
	}
	if len(s.Learned) > 0 {
		fmt.Fprintf(w, "learned return endpoints (%d moves):\n", s.EndpointMoves)
		lt := &Table{Header: []string{"client", "path", "returns to", "changed"}, Align: "lrll", Indent: "  "}
		for _, l := range s.Learned {
			ago := s.Time.Sub(l.Changed).Round(time.Second)
			path := strconv.Itoa(l.Path + 1)
			if l.Paths > 0 {
				path += " of " + strconv.Itoa(l.Paths)
			}
			lt.Add(l.Client, path, l.Endpoint, fmt.Sprintf("%s (%v ago)", l.Changed.Format("15:04:05"), max(ago, 0)))
		}
		lt.Render(w)
	}
}

// reasons formats the non-zero counts of a by-reason map: "ring-full=387 checksum=2", or
// "none".
func reasons(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v > 0 {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return "none"
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}
