package tcp

// The stack-wide memory budget (issue 10). Every connection counts what it holds:
// unread received bytes, reorder pages (whole 8 KiB pages, not bytes), and its send
// buffer's bytes; each loop's input queue has a fixed bound taken off the budget up
// front. The budget is enforced without ever dropping an acknowledged byte:
//
//   - receive windows stop opening when the budget has no room (freeWindow): peers
//     can only send what was advertised, and rcv.right never moves left;
//   - the reorder queue may take new pages only within the flow's window and the
//     budget's room (out-of-order bytes refused were never acknowledged);
//   - new flows are refused while the room is under newFlowReserve (a listener drops
//     the SYN silently, counted in Stats.DropsMemory; Dial fails with ErrNoMemory);
//   - the input queue drops segments beyond its bound (Stats.DropsQueue): loss, which
//     TCP repairs.
//
// The accounting is refreshed whenever a connection's loop finishes work on it, so it
// lags by at most one loop iteration.

import "sync/atomic"

// unlimitedRoom is the room of a nil budget: more than any window, far from overflow
// when added to what a flow holds.
const unlimitedRoom = 1 << 40

// DefaultMemoryBudget is Config.MemoryBudget's default.
const DefaultMemoryBudget = 1 << 30

// DefaultInputQueue is Config.InputQueue's default: per loop, bytes of arrived
// segments waiting for the loop.
const DefaultInputQueue = 4 << 20

// newFlowReserve is the room a new flow needs: a SYN-ACK's window and a few segments.
const newFlowReserve = 256 << 10

// memBudget counts bytes held against a limit. Safe for concurrent use; a nil budget
// has unlimited room.
type memBudget struct {
	limit int64
	used  atomic.Int64
}

// room is how many more bytes may be held (negative when over).
func (b *memBudget) room() int {
	if b == nil {
		return unlimitedRoom
	}
	return int(b.limit - b.used.Load())
}

func (b *memBudget) add(n int) {
	if b != nil && n != 0 {
		b.used.Add(int64(n))
	}
}

// memHeld is what the endpoint holds in buffers: unread bytes, reorder pages, the
// send buffer.
func (e *endpoint) memHeld() int {
	return e.rb.length() + e.rq.Mem() + e.sb.length()
}

// account brings the budget up to date with what e holds (0 once it is done).
func (e *endpoint) account() {
	held := 0
	if !e.done {
		held = e.memHeld()
	}
	e.cfg.budget.add(held - e.memCounted)
	e.memCounted = held
}

// MemoryUsed is the bytes the stack's connections hold (receive, reorder pages, send)
// plus the input queues' reserve, as counted against Config.MemoryBudget.
func (s *Stack) MemoryUsed() int { return int(s.ep.budget.used.Load()) + s.inqReserve() }

func (s *Stack) inqReserve() int { return len(s.loops) * s.cfg.InputQueue }
