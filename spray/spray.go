// Package spray owns the paths of a multipath flow and the schedulers that decide which
// path carries the next segment. It is pure logic: no I/O, no clocks of its own (time is
// passed in), no goroutines. The tcp engine keeps one []Path per connection up to date
// and asks a Scheduler before every new segment.
package spray

import "time"

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

// New returns a new scheduler by name ("auto", "weighted", "rr").
func New(name string) (Scheduler, error) {
	panic("spray.New: not implemented yet")
}

// Earliest returns the up path with room for size bytes on which a segment sent now
// is expected to arrive first, or -1 when none has room. avoid (-1 for none) is skipped
// unless it is the only path with room. The engine uses it for retransmissions, which
// go wherever they arrive soonest whatever the flow's scheduler.
func Earliest(now time.Time, paths []Path, size int, avoid int) int {
	panic("spray.Earliest: not implemented yet")
}
