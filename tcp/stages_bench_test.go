package tcp

// Per-stage benchmarks of the receive path (issue 11: profile first). Each reports bytes
// per second of payload and allocations:
//
//	BenchmarkStageRecvBuffer  receive buffer alone: push 32 full segments, read them
//	BenchmarkStageInputRead   Stack.Input (copy out of the caller's buffer, hand-off to
//	                          the loop) → endpoint → receive buffer → Conn.Read, for
//	                          in-order segments of one established flow
//	BenchmarkEndpointReceive  (statemachine_test.go) the endpoint's input alone
//	BenchmarkInsertPop        (reorder) the out-of-order queue
//
// The send side: BenchmarkEndpointSend (output), raw's BenchmarkEncodeIPIP and
// BenchmarkSendReceive (encode, sendmmsg), BenchmarkDecode (decode).

import (
	"bytes"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"
)

// cpuMeter reports the process's CPU time (user + system, every goroutine: the loop, the
// reader, the collector) per GB of payload as the metric cpu-s/GB, the figure the issue
// asks for, which a loaded machine distorts much less than ns/op.
type cpuMeter struct{ start time.Duration }

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuMeter { return cpuMeter{processCPU()} }

func (m cpuMeter) report(b *testing.B, bytes int64) {
	if bytes > 0 {
		b.ReportMetric((processCPU()-m.start).Seconds()/(float64(bytes)/1e9), "cpu-s/GB")
	}
}

const stageBatch = 32 // segments per Input call: about one ring block's worth at 1 Gbit/s

func BenchmarkStageRecvBuffer(b *testing.B) {
	rb := newRecvBuffer()
	seg := streamBytes(1, 0, 1440)
	out := make([]byte, 64<<10)
	b.SetBytes(stageBatch * 1440)
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		for range stageBatch {
			rb.push(seg)
		}
		for rb.length() > 0 {
			rb.read(out)
		}
	}
	cpu.report(b, int64(b.N)*stageBatch*1440)
}

// captureLink records the last segment the stack sent (enough for a handshake).
type captureLink struct {
	mu   sync.Mutex
	last Segment
	sent chan struct{} // capacity 1
}

func (c *captureLink) Send(_ int, segs []Segment) error {
	c.mu.Lock()
	c.last = segs[len(segs)-1]
	c.last.Payload = nil
	c.mu.Unlock()
	select {
	case c.sent <- struct{}{}:
	default:
	}
	return nil
}

// stageConn opens a connection on a stack from a fake peer by feeding it the peer's
// SYN and ACK, and returns the accepted Conn with the peer's next sequence number.
func stageConn(tb testing.TB) (*Stack, *Conn, Segment) {
	tb.Helper()
	link := &captureLink{sent: make(chan struct{}, 1)}
	s, err := NewStack(Config{Addr: netip.MustParseAddr("10.9.9.1"), Paths: []PathConfig{{Name: "p0"}}, Loops: 1}, link)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	ln, err := s.Listen(80)
	if err != nil {
		tb.Fatal(err)
	}
	const peerISS = 1 << 30
	syn := Segment{
		Src: netip.MustParseAddrPort("10.9.9.2:5000"), Dst: netip.MustParseAddrPort("10.9.9.1:80"),
		Seq: peerISS, Flags: FlagSYN, Window: 65535,
		Options: Options{MSS: 1440, HasWScale: true, WScale: 7, SACKPermitted: true},
	}
	s.Input([]Segment{syn})
	<-link.sent
	link.mu.Lock()
	synack := link.last
	link.mu.Unlock()
	if synack.Flags != FlagSYN|FlagACK {
		tb.Fatalf("answer to SYN: %v", &synack)
	}
	ack := syn
	ack.Flags, ack.Options = FlagACK, Options{}
	ack.Seq, ack.Ack = peerISS+1, synack.Seq+1
	ack.Window = 65535
	s.Input([]Segment{ack})
	c, err := ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	data := ack
	data.Flags = FlagACK | FlagPSH
	return s, c.(*Conn), data
}

// BenchmarkStageInputRead: Conn.Read drains each batch at once (lag 0), or only once
// 4 MiB are waiting (a reader behind the network: what the receive buffer holds is out
// of the CPU caches, as in a long transfer).
func BenchmarkStageInputRead(b *testing.B) {
	b.Run("lag=0", func(b *testing.B) { stageInputRead(b, 0) })
	b.Run("lag=4MiB", func(b *testing.B) { stageInputRead(b, 4<<20) })
}

func stageInputRead(b *testing.B, lag int) {
	s, c, tmpl := stageConn(b)
	payload := streamBytes(1, 0, 1440)
	segs := make([]Segment, stageBatch)
	out := make([]byte, 64<<10)
	seq := tmpl.Seq
	var pos, lastPos, lastN int // stream offsets of what was read
	b.SetBytes(stageBatch * 1440)
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		for i := range segs {
			segs[i] = tmpl
			segs[i].Seq = seq
			segs[i].Payload = payload
			seq += 1440
		}
		s.Input(segs)
		for left := int(seq-tmpl.Seq) - pos - lag; left > 0; {
			n, err := c.Read(out[:min(left, len(out))])
			if err != nil {
				b.Fatal(err)
			}
			left -= n
			lastPos, lastN = pos, n
			pos += n
		}
	}
	b.StopTimer()
	cpu.report(b, int64(pos))
	// The stream is the payload repeated: the last read must match it at its offset.
	want := bytes.Repeat(payload, lastN/1440+2)[lastPos%1440:]
	if !bytes.Equal(out[:lastN], want[:lastN]) {
		b.Fatal("read bytes differ from the stream sent")
	}
}
