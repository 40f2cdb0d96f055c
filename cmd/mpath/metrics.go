package main

import (
	"net/netip"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"mpath/raw"
	"mpath/socks"
	"mpath/tcp"
)

// nodeCollector exports a node's per-path and per-node state as Prometheus metrics, read
// from snapshots at scrape time (the engine keeps its own counters; nothing is
// double-booked). Metric names are the contract with `mpath status` (lab/table): one
// family per unit, Prometheus naming (_total counters, base units in the name).
type nodeCollector struct {
	role   string
	stack  *tcp.Stack
	link   *raw.Link
	socks  *socks.SOCKSServer
	http   *socks.HTTPServer
	exit   *socks.Exit
	descs  map[string]*prometheus.Desc
	labels []string
}

var pathMetrics = []struct{ name, help string }{
	{"mpath_path_up", "1 when the path is up, 0 when marked down by health checks"},
	{"mpath_path_tx_packets_total", "segments sent on the path"},
	{"mpath_path_tx_bytes_total", "bytes sent on the path (TCP/IP headers included)"},
	{"mpath_path_rx_packets_total", "segments received on the path"},
	{"mpath_path_rx_bytes_total", "bytes received on the path"},
	{"mpath_path_delivered_bytes_total", "bytes sent on the path that the peer acknowledged"},
	{"mpath_path_retransmits_total", "segments re-sent on the path"},
	{"mpath_path_lost_total", "segments declared lost on the path"},
	{"mpath_path_spurious_total", "segments declared lost on the path that arrived after all"},
	{"mpath_path_send_errors_total", "batches the link failed to send on the path"},
	{"mpath_path_srtt_seconds", "smoothed RTT of the path (latest connection with a sample)"},
	{"mpath_path_min_rtt_seconds", "minimum RTT of the path, averaged over live connections"},
	{"mpath_path_cwnd_bytes", "congestion window of the path (its connections draw shares of it)"},
	{"mpath_path_inflight_bytes", "bytes in flight on the path, all connections"},
	{"mpath_path_delivery_rate_bytes_per_second", "the path's bandwidth estimate (its congestion controller's model)"},
	{"mpath_path_delivered_ratio", "fraction of all delivered bytes that went over the path (0..1)"},
}

var nodeMetrics = []struct{ name, help string }{
	{"mpath_flows", "engine connections (all states)"},
	{"mpath_reorder_max_depth", "most segments held out of order by one live connection"},
	{"mpath_reorder_held_bytes", "bytes held out of order now, all connections"},
	{"mpath_reorder_max_bytes", "most bytes held out of order by one live connection: the receive window it needed"},
	{"mpath_engine_memory_bytes", "bytes counted against the engine's memory budget (buffers of all flows, input queues)"},
	{"mpath_engine_memory_budget_bytes", "the engine's memory budget (--mem-budget)"},
	{"mpath_reorder_hold_max_seconds", "longest time a live connection held a segment out of order"},
	{"mpath_reorder_hold_seconds", "how long segments were held out of order before delivery (mean of each delivered run)"},
	{"mpath_engine_drops_total", "segments the engine dropped, by reason"},
	{"mpath_link_drops_total", "packets the raw link dropped, by reason"},
	{"mpath_front_connections_total", "proxy front connections, by front and event (accepted, over_limit, handshake_failed, auth_failed, dial_failed, relayed)"},
	{"mpath_front_bytes_total", "bytes the proxy fronts relayed, by front and direction (up: client to target, down: target to client)"},
	{"mpath_exit_connections_total", "exit flows, by event (accepted, over_limit, relayed)"},
	{"mpath_exit_bytes_total", "bytes the exit relayed, by direction (to_target, from_target)"},
	{"mpath_exit_refused_total", "exit requests refused, by reason"},
	{"mpath_exit_active", "flows the exit is relaying now"},
	{"mpath_link_learned_endpoint_changed_seconds", "learning exit: unix time each client path's return endpoint last changed, by client, path and endpoint"},
	{"mpath_link_learned_client_paths", "learning exit: the number of paths each client announces (its flows use that many of the exit's path slots), by client"},
	{"mpath_link_endpoint_moves_total", "learning exit: client path return endpoints that changed (NAT rebinding, new uplink address)"},
	{"mpath_link_path_total", "link events per path: keepalives sent, packets refused as too big (EMSGSIZE)"},
}

func newNodeCollector(role string, stack *tcp.Stack, link *raw.Link) *nodeCollector {
	c := &nodeCollector{role: role, stack: stack, link: link, descs: map[string]*prometheus.Desc{}}
	for _, m := range pathMetrics {
		c.descs[m.name] = prometheus.NewDesc(m.name, m.help, []string{"path", "index"}, prometheus.Labels{"role": role})
	}
	for _, m := range nodeMetrics {
		var labels []string
		switch m.name {
		case "mpath_engine_drops_total", "mpath_link_drops_total", "mpath_exit_refused_total":
			labels = []string{"reason"}
		case "mpath_front_connections_total":
			labels = []string{"front", "event"}
		case "mpath_front_bytes_total":
			labels = []string{"front", "direction"}
		case "mpath_exit_connections_total":
			labels = []string{"event"}
		case "mpath_exit_bytes_total":
			labels = []string{"direction"}
		case "mpath_link_learned_endpoint_changed_seconds":
			labels = []string{"client", "path", "endpoint"}
		case "mpath_link_learned_client_paths":
			labels = []string{"client"}
		case "mpath_link_path_total":
			labels = []string{"index", "event"}
		}
		c.descs[m.name] = prometheus.NewDesc(m.name, m.help, labels, prometheus.Labels{"role": role})
	}
	return c
}

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stack.Stats()
	var total uint64
	for _, p := range st.Paths {
		total += p.Delivered
	}
	for i, p := range st.Paths {
		idx := strconv.Itoa(i)
		up := 0.0
		if p.Up {
			up = 1
		}
		share := 0.0
		if total > 0 {
			share = float64(p.Delivered) / float64(total)
		}
		vals := map[string]float64{
			"mpath_path_up":                             up,
			"mpath_path_tx_packets_total":               float64(p.TxPackets),
			"mpath_path_tx_bytes_total":                 float64(p.TxBytes),
			"mpath_path_rx_packets_total":               float64(p.RxPackets),
			"mpath_path_rx_bytes_total":                 float64(p.RxBytes),
			"mpath_path_delivered_bytes_total":          float64(p.Delivered),
			"mpath_path_retransmits_total":              float64(p.Retransmits),
			"mpath_path_lost_total":                     float64(p.Lost),
			"mpath_path_spurious_total":                 float64(p.Spurious),
			"mpath_path_send_errors_total":              float64(p.SendErrors),
			"mpath_path_srtt_seconds":                   p.SRTT.Seconds(),
			"mpath_path_min_rtt_seconds":                p.MinRTT.Seconds(),
			"mpath_path_cwnd_bytes":                     float64(p.Cwnd),
			"mpath_path_inflight_bytes":                 float64(p.InFlight),
			"mpath_path_delivery_rate_bytes_per_second": p.DeliveryRate,
			"mpath_path_delivered_ratio":                share,
		}
		for _, m := range pathMetrics {
			typ := prometheus.GaugeValue
			if len(m.name) > 6 && m.name[len(m.name)-6:] == "_total" {
				typ = prometheus.CounterValue
			}
			ch <- prometheus.MustNewConstMetric(c.descs[m.name], typ, vals[m.name], p.Name, idx)
		}
	}
	gauge := func(name string, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.GaugeValue, v, labels...)
	}
	counter := func(name string, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.CounterValue, v, labels...)
	}
	gauge("mpath_flows", float64(st.Flows))
	gauge("mpath_reorder_max_depth", float64(st.ReorderMaxDepth))
	gauge("mpath_reorder_held_bytes", float64(st.ReorderHeldBytes))
	gauge("mpath_reorder_max_bytes", float64(st.ReorderMaxBytes))
	gauge("mpath_engine_memory_bytes", float64(st.MemoryUsed))
	gauge("mpath_engine_memory_budget_bytes", float64(st.MemoryBudget))
	gauge("mpath_reorder_hold_max_seconds", st.ReorderHoldMax.Seconds())
	hold := make(map[float64]uint64, len(tcp.HoldBuckets))
	for i, ub := range tcp.HoldBuckets {
		hold[ub.Seconds()] = st.ReorderHold.Buckets[i]
	}
	ch <- prometheus.MustNewConstHistogram(c.descs["mpath_reorder_hold_seconds"], st.ReorderHold.Count, st.ReorderHold.Sum.Seconds(), hold)
	counter("mpath_engine_drops_total", float64(st.DropsNotOurs), "not_ours")
	counter("mpath_engine_drops_total", float64(st.DropsNoConn), "no_connection")
	counter("mpath_engine_drops_total", float64(st.DropsBacklog), "backlog_full")
	counter("mpath_engine_drops_total", float64(st.DropsUnauth), "unauthenticated_syn")
	counter("mpath_engine_drops_total", float64(st.DropsMemory), "memory_budget")
	counter("mpath_engine_drops_total", float64(st.DropsQueue), "input_queue_full")
	counter("mpath_engine_drops_total", float64(st.DropsRSTLimit), "rst_rate_limit")
	counter("mpath_engine_drops_total", float64(st.DropsProbe), "bad_probe_answer")
	if c.link != nil {
		ls := c.link.Stats()
		for reason, v := range ls.Drops {
			counter("mpath_link_drops_total", float64(v), reason)
		}
		for i, p := range ls.Paths {
			counter("mpath_link_path_total", float64(p.Keepalives), strconv.Itoa(i), "keepalives")
			counter("mpath_link_path_total", float64(p.TooBig), strconv.Itoa(i), "too_big")
		}
		if c.link.Learning() {
			counter("mpath_link_endpoint_moves_total", float64(ls.EndpointMoves))
			announced := map[netip.Addr]int{}
			for _, lp := range ls.Learned {
				gauge("mpath_link_learned_endpoint_changed_seconds", float64(lp.Changed.UnixNano())/1e9,
					lp.Client.String(), strconv.Itoa(lp.Path), lp.Addr.String())
				announced[lp.Client] = lp.Paths
			}
			for client, n := range announced {
				gauge("mpath_link_learned_client_paths", float64(n), client.String())
			}
		}
	}
	front := func(name string, s socks.FrontStats) {
		counter("mpath_front_connections_total", float64(s.Accepted), name, "accepted")
		counter("mpath_front_connections_total", float64(s.OverLimit), name, "over_limit")
		counter("mpath_front_connections_total", float64(s.HandshakeFailed), name, "handshake_failed")
		counter("mpath_front_connections_total", float64(s.AuthFailed), name, "auth_failed")
		counter("mpath_front_connections_total", float64(s.DialFailed), name, "dial_failed")
		counter("mpath_front_connections_total", float64(s.Relayed), name, "relayed")
		counter("mpath_front_bytes_total", float64(s.BytesUp), name, "up")
		counter("mpath_front_bytes_total", float64(s.BytesDown), name, "down")
	}
	if c.socks != nil {
		front("socks", c.socks.Stats())
	}
	if c.http != nil {
		front("http", c.http.Stats())
	}
	if c.exit != nil {
		s := c.exit.Stats()
		counter("mpath_exit_connections_total", float64(s.Accepted), "accepted")
		counter("mpath_exit_connections_total", float64(s.OverLimit), "over_limit")
		counter("mpath_exit_connections_total", float64(s.Relayed), "relayed")
		counter("mpath_exit_bytes_total", float64(s.BytesToTarget), "to_target")
		counter("mpath_exit_bytes_total", float64(s.BytesFromTarget), "from_target")
		for reason, v := range s.Refused {
			counter("mpath_exit_refused_total", float64(v), reason)
		}
		gauge("mpath_exit_active", float64(s.Active))
	}
}
