// Package seqnum is TCP sequence-number arithmetic modulo 2^32 (RFC 1982 serial
// numbers as RFC 9293 uses them). Every comparison of sequence or acknowledgement
// numbers in mpath goes through here; plain < on uint32 is wrong across the wrap.
package seqnum

// LT reports whether a comes before b.
func LT(a, b uint32) bool { return int32(a-b) < 0 }

// LEQ reports whether a comes before b or equals it.
func LEQ(a, b uint32) bool { return int32(a-b) <= 0 }

// GT reports whether a comes after b.
func GT(a, b uint32) bool { return int32(a-b) > 0 }

// GEQ reports whether a comes after b or equals it.
func GEQ(a, b uint32) bool { return int32(a-b) >= 0 }

// InRange reports whether lo <= x < hi in sequence space.
func InRange(x, lo, hi uint32) bool { return x-lo < hi-lo }

// Max returns the later of a and b.
func Max(a, b uint32) uint32 {
	if GT(a, b) {
		return a
	}
	return b
}

// Min returns the earlier of a and b.
func Min(a, b uint32) uint32 {
	if LT(a, b) {
		return a
	}
	return b
}

// Diff returns b-a as a signed distance (positive when b is after a).
func Diff(a, b uint32) int32 { return int32(b - a) }
