package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// chanSource is a fake Source fed through a channel.
type chanSource struct {
	ch     chan []byte
	closed chan struct{}
	once   sync.Once
}

func newChanSource() *chanSource {
	return &chanSource{ch: make(chan []byte, 1024), closed: make(chan struct{})}
}

func (s *chanSource) Read(fn func([]byte)) error {
	select {
	case p := <-s.ch:
		fn(p)
		for {
			select {
			case p := <-s.ch:
				fn(p)
			default:
				return nil
			}
		}
	case <-s.closed:
		return fmt.Errorf("chanSource: %w", net.ErrClosed)
	}
}

func (s *chanSource) Close() error { s.once.Do(func() { close(s.closed) }); return nil }

type sent struct {
	pkt []byte
	dst netip.Addr
	at  time.Time
}

// recSink records what is sent and signals every packet on a channel.
type recSink struct {
	ch chan sent
}

func (s *recSink) Send(pkts [][]byte, dsts []netip.Addr) (int, error) {
	now := time.Now()
	for i, p := range pkts {
		s.ch <- sent{append([]byte(nil), p...), dsts[i], now}
	}
	return len(pkts), nil
}

func startRelay(t *testing.T, cfg Config) (*Relay, *chanSource, *recSink) {
	t.Helper()
	if len(cfg.Allow.nets) == 0 {
		cfg.Allow, _ = ParseAllowlist("10.77.0.0/16")
	}
	cfg.LocalAddrs = func() ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("10.77.1.2"), netip.MustParseAddr("10.77.101.2")}, nil
	}
	cfg.SourceFor = func(netip.Addr) (netip.Addr, error) { return netip.MustParseAddr("10.77.101.2"), nil }
	src, sink := newChanSource(), &recSink{ch: make(chan sent, 100000)}
	r, err := New(cfg, src, sink)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return r, src, sink
}

func recvN(t *testing.T, sink *recSink, n int, within time.Duration) []sent {
	t.Helper()
	var out []sent
	deadline := time.After(within)
	for len(out) < n {
		select {
		case s := <-sink.ch:
			out = append(out, s)
		case <-deadline:
			t.Fatalf("got %d of %d packets", len(out), n)
		}
	}
	return out
}

// waitStats polls the counters until cond holds.
func waitStats(t *testing.T, r *Relay, cond func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := r.Stats()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("counters never reached the expected state: %+v", s)
		}
		time.Sleep(time.Millisecond) // polling an observable condition
	}
}

func TestRelayForwardsAndCounts(t *testing.T) {
	r, src, sink := startRelay(t, Config{Mode: ModeForward, Plain: true})
	h := sha256.New()
	var inners [][]byte
	for i := 0; i < 50; i++ {
		inner := ipv4("10.77.255.1", "10.77.255.2", protoTCP, 64, 0, bytes.Repeat([]byte{byte(i)}, 100+i))
		inners = append(inners, inner)
		src.ch <- ipip("10.77.1.1", "10.77.1.2", inner)
	}
	src.ch <- ipip("192.0.2.1", "10.77.1.2", inners[0])                                               // stranger
	src.ch <- ipip("10.77.1.1", "10.77.1.2", ipv4("10.77.255.1", "10.77.255.2", protoTCP, 1, 0, nil)) // TTL 1
	src.ch <- ipv4("10.77.255.1", "10.77.255.2", protoTCP, 9, 0, []byte("plain"))                     // plain transit
	got := recvN(t, sink, 51, 5*time.Second)
	hg := sha256.New()
	for i, s := range got[:50] {
		if s.dst != netip.MustParseAddr("10.77.255.2") {
			t.Fatalf("packet %d to %v", i, s.dst)
		}
		want := append([]byte(nil), inners[i]...)
		decTTL(want)
		h.Write(want)
		hg.Write(s.pkt)
	}
	if !bytes.Equal(h.Sum(nil), hg.Sum(nil)) {
		t.Fatal("forwarded packets differ from the inner packets (TTL-1)")
	}
	st := waitStats(t, r, func(s Stats) bool {
		return s.Dropped[ReasonNotAllowed] == 1 && s.Dropped[ReasonTTLExpired] == 1 && s.Forwarded[KindPlain] == 1
	})
	if st.Forwarded[KindForward] != 50 {
		t.Fatalf("forwarded %d IPIP, want 50", st.Forwarded[KindForward])
	}
}

func TestRelayDelay(t *testing.T) {
	const delay = 30 * time.Millisecond
	_, src, sink := startRelay(t, Config{Mode: ModeReencap, Impair: ImpairSpec{Delay: delay}})
	var late []time.Duration
	for i := 0; i < 20; i++ {
		inner := ipv4("10.77.255.1", "10.77.255.2", protoTCP, 64, 0, []byte{byte(i)})
		at := time.Now()
		src.ch <- ipip("10.77.1.1", "10.77.1.2", inner)
		s := recvN(t, sink, 1, 2*time.Second)[0]
		d := s.at.Sub(at)
		if d < delay {
			t.Fatalf("packet %d released after %v, before the %v delay", i, d, delay)
		}
		late = append(late, d-delay)
		if h, _ := parseIPv4(s.pkt); h.proto != protoIPIP || addrOf(h.src) != netip.MustParseAddr("10.77.101.2") {
			t.Fatalf("reencap header %+v", h)
		}
	}
	// The median, not the worst: the machine is shared and a descheduled test goroutine
	// is late too; but the loop must not be off by whole timer ticks on most packets.
	slices.Sort(late)
	if med := late[len(late)/2]; med > 3*time.Millisecond {
		t.Fatalf("median lateness %v (all: %v)", med, late)
	}
	t.Logf("lateness over the delay: median %v, worst %v", late[len(late)/2], late[len(late)-1])
}

func TestRelayJitterKeepsOrderAndDup(t *testing.T) {
	r, src, sink := startRelay(t, Config{Mode: ModeForward,
		Impair: ImpairSpec{Delay: 5 * time.Millisecond, Jitter: 4 * time.Millisecond, Dup: 0.2, Seed: 5}})
	const n = 300
	for i := 0; i < n; i++ {
		src.ch <- ipip("10.77.1.1", "10.77.1.2", ipv4("10.77.255.1", "10.77.255.2", protoTCP, 64, 0, []byte{byte(i >> 8), byte(i)}))
	}
	// Collect until the last packet shows up, then until the counters match what
	// arrived (a duplicate of the last packet may follow it).
	var got []sent
	for len(got) == 0 || int(got[len(got)-1].pkt[20])<<8|int(got[len(got)-1].pkt[21]) != n-1 {
		got = append(got, recvN(t, sink, 1, 5*time.Second)...)
	}
	waitStats(t, r, func(s Stats) bool { return s.Forwarded[KindForward] == uint64(len(got)+len(sink.ch)) })
	for len(sink.ch) > 0 {
		got = append(got, <-sink.ch)
	}
	last := -1
	dups := 0
	for _, s := range got {
		seq := int(s.pkt[20])<<8 | int(s.pkt[21])
		if seq < last {
			t.Fatalf("packet %d after %d: jitter reordered", seq, last)
		}
		if seq == last {
			dups++
		}
		last = seq
	}
	if last != n-1 || dups != len(got)-n {
		t.Fatalf("last %d dups %d of %d", last, dups, len(got))
	}
	binomialWithin(t, "dup", dups, n, 0.2)
}

func TestRelayAllocs(t *testing.T) {
	allow, _ := ParseAllowlist("10.77.0.0/16")
	r, err := New(Config{Allow: allow, Mode: ModeReencap, Impair: ImpairSpec{Delay: time.Millisecond, Loss: 0.3},
		LocalAddrs: func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("10.77.1.2")}, nil },
		SourceFor:  func(netip.Addr) (netip.Addr, error) { return netip.MustParseAddr("10.77.101.2"), nil },
	}, newChanSource(), &recSink{})
	if err != nil {
		t.Fatal(err)
	}
	pkt := ipip("10.77.1.1", "10.77.1.2", ipv4("10.77.255.1", "10.77.255.2", protoTCP, 64, 0, make([]byte, 1400)))
	drain := func() {
		r.mu.Lock()
		for r.heap.Len() > 0 {
			r.putPacket(r.heap.pop())
		}
		r.mu.Unlock()
	}
	for i := 0; i < 100; i++ { // warm the pool and the heap's slices
		r.receive(pkt)
	}
	drain()
	allocs := testing.AllocsPerRun(1000, func() {
		r.receive(pkt)
		drain()
	})
	if allocs != 0 {
		t.Fatalf("receive allocates %.2f per packet", allocs)
	}
}

// TestRelayAllocsDirect covers the no-impairment path: classify, batch, Send.
func TestRelayAllocsDirect(t *testing.T) {
	allow, _ := ParseAllowlist("10.77.0.0/16")
	r, err := New(Config{Allow: allow, Mode: ModeForward,
		LocalAddrs: func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("10.77.1.2")}, nil },
	}, newChanSource(), nopSink{})
	if err != nil {
		t.Fatal(err)
	}
	pkt := ipip("10.77.1.1", "10.77.1.2", ipv4("10.77.255.1", "10.77.255.2", protoTCP, 64, 0, make([]byte, 1400)))
	for i := 0; i < 200; i++ { // warm the pool
		r.receive(pkt)
	}
	r.flushDirect()
	allocs := testing.AllocsPerRun(1000, func() {
		r.receive(pkt)
		r.receive(pkt)
		r.flushDirect()
	})
	if allocs != 0 {
		t.Fatalf("direct path allocates %.2f per batch", allocs)
	}
	if st := r.Stats(); st.Forwarded[KindForward] != 200+2*1001 {
		t.Fatalf("forwarded %d", st.Forwarded[KindForward])
	}
}

type nopSink struct{}

func (nopSink) Send(pkts [][]byte, _ []netip.Addr) (int, error) { return len(pkts), nil }

// failingSource fails its first Read.
type failingSource struct{}

func (s failingSource) Read(func([]byte)) error { return errors.New("ring broke") }
func (s failingSource) Close() error            { return nil }

func TestRelayRunReportsSourceError(t *testing.T) {
	allow, _ := ParseAllowlist("10.77.0.0/16")
	r, err := New(Config{Allow: allow, LocalAddrs: func() ([]netip.Addr, error) { return nil, nil }}, failingSource{}, nopSink{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "ring broke") {
		t.Fatalf("Run = %v, want the source's error", err)
	}
}
