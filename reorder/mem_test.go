package reorder

import (
	"testing"
	"time"
)

// TestPagePinningBounded (issue 10): a peer sends one byte every 8 KiB across a 16 MiB
// window. Without a memory limit each byte pins a page (16 MiB for 2 KiB of data);
// with one the queue holds at most SparseAllowance of pages, and the gap-filling data
// still delivers everything it holds.
func TestPagePinningBounded(t *testing.T) {
	const window = 16 << 20
	now := time.Unix(0, 0)
	for _, limited := range []bool{false, true} {
		q := New(window)
		if limited {
			q.SetMemLimit(window)
		}
		for off := uint32(pageSize); off < window; off += pageSize {
			q.Insert(0, off, []byte{1}, now)
		}
		t.Logf("limited=%v: %d bytes held in %d KiB of pages, %d bytes refused", limited, q.Bytes(), q.Mem()>>10, q.Stats().MemDropped)
		if !limited {
			if q.Mem() < window-pageSize {
				t.Fatalf("unlimited queue holds %d KiB of pages: the attack no longer pins memory, the test proves nothing", q.Mem()>>10)
			}
			q.Reset()
			continue
		}
		if q.Mem() > SparseAllowance {
			t.Fatalf("%d KiB of pages held, want <= %d KiB", q.Mem()>>10, SparseAllowance>>10)
		}
		if q.Reset(); q.Mem() != 0 {
			t.Fatalf("%d bytes of pages after Reset", q.Mem())
		}
	}
}

// TestMemLimitDenseData: ordinary reordering (full-size segments, every other one
// missing: pages half full) is not refused below the hard limit, and the hard limit
// holds.
func TestMemLimitDenseData(t *testing.T) {
	now := time.Unix(0, 0)
	q := New(16 << 20)
	q.SetMemLimit(4 << 20)
	for seq := uint32(1440); seq < 16<<20; seq += 2880 {
		q.Insert(0, seq, make([]byte, 1440), now)
	}
	if q.Mem() > 4<<20 {
		t.Fatalf("%d KiB of pages, limit 4096 KiB", q.Mem()>>10)
	}
	if q.Bytes() < (4<<20)/2-4*pageSize {
		t.Fatalf("only %d bytes held under a 4 MiB limit with half-full pages", q.Bytes())
	}
	got := q.Pop(nil, 1440, now)
	if len(got) != 1440 {
		t.Fatalf("popped %d bytes at the first block, want 1440", len(got))
	}
}

// TestMemLimitWraparound: a segment whose pages straddle the end of the sequence space
// is costed as the two pages it touches.
func TestMemLimitWraparound(t *testing.T) {
	q := New(64 << 10)
	q.SetMemLimit(64 << 10)
	next := uint32(1<<32 - 3000)
	if n := q.Insert(next, next+1000, make([]byte, 4000), time.Unix(0, 0)); n != 4000 {
		t.Fatalf("stored %d of 4000 bytes across the wrap", n)
	}
	if got := q.pages.missing(1<<32-100, 100); got != 0 {
		t.Fatalf("missing(%d pages already held across the wrap) = %d", 2, got)
	}
	if q.Mem() != 2*pageSize {
		t.Fatalf("%d bytes of pages, want 2 pages", q.Mem())
	}
}
