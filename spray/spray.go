// Package spray owns the paths of a multipath flow and the schedulers that decide which
// path carries the next segment. It is pure logic: no I/O, no clocks of its own (time is
// passed in), no goroutines. The tcp engine keeps one []Path per connection up to date
// and asks a Scheduler before every new segment.
//
// It does not own congestion control, RTT estimation, loss detection or path health:
// the engine measures those and writes them into Path; schedulers only read.
//
// Schedulers (files):
//
//	rr.go        "rr"       strict alternation, the thesis baseline (waits for a full path)
//	weighted.go  "weighted" smooth weighted round robin over static weights
//	auto.go      "auto"     earliest expected arrival, rates from measured delivery rate
//	estimate.go             the arrival model auto and Earliest share
package spray

import (
	"errors"
	"fmt"
	"time"
)

// Path is what a scheduler knows about one path. The engine owns the values and
// updates them as segments are sent, delivered and lost; schedulers only read them.
type Path struct {
	Name   string // for logs and metrics, e.g. "eth1>10.0.1.2"
	Weight int    // static weight for the weighted scheduler; <= 0 counts as 1
	Up     bool   // false when health checks marked the path down: never picked

	Cwnd     int // congestion window in bytes
	InFlight int // bytes sent on this path, not yet delivered or declared lost

	SRTT   time.Duration // smoothed RTT; 0 before the first sample
	MinRTT time.Duration // smallest RTT seen; 0 before the first sample

	DeliveryRate float64   // measured delivery rate in bytes/s; 0 before a sample
	NextSend     time.Time // pacing: the path may not send before this time
}

// Room reports whether the path may take a segment of size bytes under its
// congestion window right now (pacing aside).
func (p *Path) Room(size int) bool { return p.Up && p.InFlight+size <= p.Cwnd }

// Scheduler picks the path for the next new segment of a flow. A Scheduler holds
// per-flow state (round-robin position, smooth-WRR credits): use one per flow. Not safe
// for concurrent use.
type Scheduler interface {
	// Pick returns the index in paths that should carry the next new segment of size
	// bytes, or -1 when the segment should wait (no path can take it now, or waiting
	// for a better path beats sending on a worse one). The engine calls Pick again on
	// the next acknowledgement or pacing deadline.
	Pick(now time.Time, paths []Path, size int) int
	// Name is the scheduler's flag name: "rr", "weighted" or "auto".
	Name() string
}

// Sendable reports whether the path may take a segment of size bytes at now: up, room
// under its congestion window, and its pacing time reached.
func (p *Path) Sendable(now time.Time, size int) bool {
	return p.Room(size) && !p.NextSend.After(now)
}

// Measured reports whether the path has an RTT sample yet.
func (p *Path) Measured() bool { return p.SRTT > 0 || p.MinRTT > 0 }

// weight is the static weight with the "<= 0 counts as 1" rule applied.
func (p *Path) weight() int {
	if p.Weight <= 0 {
		return 1
	}
	return p.Weight
}

// Names are the scheduler names New accepts, the default first.
var Names = []string{"auto", "weighted", "rr"}

// ErrUnknownScheduler is returned (wrapped) by New for a name it does not know.
var ErrUnknownScheduler = errors.New("unknown scheduler")

// New returns a new scheduler by name ("auto", "weighted", "rr"). The empty name
// means "auto". Each call returns fresh per-flow state.
func New(name string) (Scheduler, error) {
	switch name {
	case "auto", "":
		return NewAuto(), nil
	case "weighted":
		return NewWeighted(), nil
	case "rr":
		return NewRoundRobin(), nil
	}
	return nil, fmt.Errorf("spray.New: %w %q (want one of %v)", ErrUnknownScheduler, name, Names)
}

// Counts is what a scheduler reports about its own decisions, for metrics. Every
// scheduler in this package implements Counter.
type Counts struct {
	Picks uint64 // Pick calls that returned a path
	Waits uint64 // Pick calls that returned -1
	// Probes counts picks of a path without an RTT sample (auto only).
	Probes uint64
	// Detours counts picks of a path that was not the earliest expected arrival
	// because waiting for the earliest would have idled it too long (auto only).
	Detours uint64
}

// Counter is implemented by schedulers that count their decisions.
type Counter interface {
	Counts() Counts
}

// Earliest returns the up path with room for size bytes on which a segment sent now
// is expected to arrive first, or -1 when none has room. avoid (-1 for none) is skipped
// unless it is the only path with room. The engine uses it for retransmissions, which
// go wherever they arrive soonest whatever the flow's scheduler.
//
// Pacing does not exclude a path here (a retransmission may jump the pacing queue) but
// a later NextSend does delay its expected arrival. Paths without an RTT sample are
// chosen only when no measured path has room; among them, the least loaded.
func Earliest(now time.Time, paths []Path, size int, avoid int) int {
	best, bestAt := -1, 0.0
	unmeasured := -1
	fallback := -1 // avoid, when it has room
	for i := range paths {
		p := &paths[i]
		if !p.Room(size) {
			continue
		}
		if i == avoid {
			fallback = i
			continue
		}
		at, ok := p.arrival(now, size)
		if !ok {
			if unmeasured < 0 || p.InFlight < paths[unmeasured].InFlight {
				unmeasured = i
			}
			continue
		}
		if best < 0 || at < bestAt {
			best, bestAt = i, at
		}
	}
	switch {
	case best >= 0:
		return best
	case unmeasured >= 0:
		return unmeasured
	}
	return fallback
}
