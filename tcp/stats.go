package tcp

import (
	"sync"
	"time"
)

// PathStats is one path's state summed (or, for RTTs, averaged) over a stack's
// connections, for metrics and `mpath status`.
type PathStats struct {
	Name         string
	Up           bool
	TxPackets    uint64
	TxBytes      uint64
	RxPackets    uint64
	RxBytes      uint64
	SendErrors   uint64
	Retransmits  uint64 // segments re-sent on this path
	Lost         uint64 // segments declared lost on this path
	Spurious     uint64 // declared lost but delivered after all
	Delivered    uint64 // payload bytes the peer acknowledged that went on this path
	SRTT         time.Duration
	MinRTT       time.Duration
	Cwnd         int     // the path's congestion window (all connections draw from it)
	InFlight     int     // bytes in flight on the path, all connections
	DeliveryRate float64 // bytes/s, the path's bandwidth estimate
	PacingRate   float64 // bytes/s, the path's pacing rate
	Mode         string  // the path controller's mode (startup, drain, probe_bw)
	Busy         int     // connections drawing a share of the path now
	Flows        int     // connections with a rate sample on this path
}

// Stats is a snapshot of a stack.
type Stats struct {
	Flows            int
	Paths            []PathStats
	ReorderMaxDepth  int
	ReorderMaxBytes  int
	ReorderHeldBytes int
	ReorderMem       int // bytes of reorder pages held (what the held bytes cost)
	ReorderHoldMax   time.Duration
	ReorderHold      HoldSnapshot // hold times of every segment delivered from a reorder queue
	DropsNotOurs     uint64
	DropsNoConn      uint64
	DropsBacklog     uint64
	DropsUnauth      uint64 // SYNs the listener's VerifySYN refused (dropped silently)
	DropsMemory      uint64 // SYNs refused: the memory budget had no room for a flow
	DropsQueue       uint64 // segments dropped: a loop's input queue was full
	MemoryUsed       int    // bytes counted against Config.MemoryBudget
	MemoryBudget     int
	DropsRSTLimit    uint64 // resets to segments for no connection not sent (rate limit)
	DropsProbe       uint64 // path-probe answers refused (wrong source or value)
	StuckTimers      uint64 // timer runs that left a deadline in the past (a bug; should stay 0)
}

type statsReq struct {
	mu  sync.Mutex
	wg  sync.WaitGroup
	out *Stats
	// per-path finished-connection totals live in the stack; live ones come from loops
}

// Stats collects a snapshot from every loop. Safe for concurrent use.
func (s *Stack) Stats() Stats {
	st := Stats{Paths: make([]PathStats, len(s.ep.paths))}
	for p := range st.Paths {
		c := &s.counters[p]
		st.Paths[p] = PathStats{
			Name:       s.ep.paths[p].Name,
			Up:         s.pathUp(p),
			TxPackets:  c.TxPackets.Load(),
			TxBytes:    c.TxBytes.Load(),
			RxPackets:  c.RxPackets.Load(),
			RxBytes:    c.RxBytes.Load(),
			SendErrors: c.SendErrors.Load(),
			SRTT:       s.rttHint(p),
		}
		pc := s.ep.ccs[p]
		st.Paths[p].Retransmits = pc.retransmits.Load()
		st.Paths[p].Lost = pc.lost.Load()
		st.Paths[p].Spurious = pc.spurious.Load()
		st.Paths[p].Delivered = pc.deliveredBytes.Load()
		cc := pc.snapshot()
		st.Paths[p].Cwnd, st.Paths[p].InFlight, st.Paths[p].Busy = cc.cwnd, cc.inflight, cc.busy
		st.Paths[p].DeliveryRate, st.Paths[p].PacingRate, st.Paths[p].Mode = cc.bw, cc.pacing, cc.mode.String()
	}
	req := &statsReq{out: &st}
	select {
	case <-s.closed:
	default:
		for _, l := range s.loops {
			req.wg.Add(1)
			l.command(loopCmd{kind: cmdStats, stats: req})
		}
		req.wg.Wait()
	}
	for p := range st.Paths {
		ps := &st.Paths[p]
		if ps.Flows > 0 {
			ps.MinRTT /= time.Duration(ps.Flows)
		}
	}
	st.DropsNotOurs = s.drops.notOurs.Load()
	st.DropsNoConn = s.drops.noConn.Load()
	st.DropsBacklog = s.drops.backlog.Load()
	st.StuckTimers = s.drops.stuckTimers.Load()
	st.DropsUnauth = s.drops.unauth.Load()
	st.DropsMemory = s.drops.memory.Load()
	st.DropsQueue = s.drops.queue.Load()
	st.MemoryUsed = s.MemoryUsed()
	st.MemoryBudget = s.cfg.MemoryBudget
	st.DropsRSTLimit = s.drops.rstLimit.Load()
	st.DropsProbe = s.drops.probeBad.Load()
	st.ReorderHold = s.ep.reorderHold.Snapshot()
	return st
}

// fillStats adds this loop's live connections to the snapshot.
func (l *loop) fillStats(req *statsReq) {
	defer req.wg.Done()
	req.mu.Lock()
	defer req.mu.Unlock()
	st := req.out
	for e := range l.conns {
		if e.done {
			continue
		}
		st.Flows++
		for p := range e.paths {
			ps, out := &e.paths[p], &st.Paths[p]
			if ps.minRTT > 0 {
				out.Flows++
				out.MinRTT += ps.minRTT
			}
		}
		rs := e.rq.Stats()
		st.ReorderMaxDepth = max(st.ReorderMaxDepth, rs.MaxDepth)
		st.ReorderMaxBytes = max(st.ReorderMaxBytes, rs.MaxBytes)
		st.ReorderHeldBytes += e.rq.Bytes()
		st.ReorderMem += e.rq.Mem()
		st.ReorderHoldMax = max(st.ReorderHoldMax, rs.HoldMax)
	}
}
