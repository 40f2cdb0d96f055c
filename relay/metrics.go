package relay

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collectors returns Prometheus collectors for the relay's counters:
//
//	mpath_relay_forwarded_packets_total{mode="forward|reencap|plain"}
//	mpath_relay_forwarded_bytes_total{mode=...}
//	mpath_relay_dropped_packets_total{reason="not_allowed|malformed|fragment|..."}
//	mpath_relay_ignored_packets_total
//	mpath_relay_queued_packets (gauge: packets waiting for their release time)
//
// They read the relay's atomics when scraped; register them once.
func (r *Relay) Collectors() []prometheus.Collector {
	var cs []prometheus.Collector
	for k, name := range KindNames {
		cs = append(cs,
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name:        "mpath_relay_forwarded_packets_total",
				Help:        "Packets the relay sent on, by mode (forward: IPIP decapsulated; reencap: IPIP re-encapsulated; plain: plain transit).",
				ConstLabels: prometheus.Labels{"mode": name},
			}, func() float64 { return float64(r.ctr.fwd[k].Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name:        "mpath_relay_forwarded_bytes_total",
				Help:        "IP bytes the relay sent on, by mode.",
				ConstLabels: prometheus.Labels{"mode": name},
			}, func() float64 { return float64(r.ctr.fwdBytes[k].Load()) }))
	}
	for _, reason := range Reasons() {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "mpath_relay_dropped_packets_total",
			Help:        "Packets the relay dropped, by reason.",
			ConstLabels: prometheus.Labels{"reason": reason.String()},
		}, func() float64 { return float64(r.ctr.dropped[reason].Load()) }))
	}
	cs = append(cs,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mpath_relay_ignored_packets_total",
			Help: "Captured packets that were not the relay's business (addressed to this host, or not IPIP without --plain).",
		}, func() float64 { return float64(r.ctr.ignored.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mpath_relay_queued_packets",
			Help: "Packets held for their release time (impairment delay or rate).",
		}, func() float64 {
			r.mu.Lock()
			defer r.mu.Unlock()
			return float64(r.heap.Len())
		}))
	return cs
}
