package socks

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var pkey = []byte("protocol-test-key-0123456789abcd")

func mustEncode(t *testing.T, key []byte, target string, now time.Time) []byte {
	t.Helper()
	b, err := EncodeRequest(key, target, FlowAddrs{}, now, rand.Reader)
	if err != nil {
		t.Fatalf("EncodeRequest(%q): %v", target, err)
	}
	return b
}

func wantRefusal(t *testing.T, err error, st Status, reason string) {
	t.Helper()
	var xe *ExitError
	if !errors.As(err, &xe) {
		t.Fatalf("error %v is not an *ExitError", err)
	}
	if xe.Status != st || xe.Reason != reason {
		t.Fatalf("got status %v reason %q, want %v %q (%v)", xe.Status, xe.Reason, st, reason, err)
	}
}

func TestRequestRoundTrip(t *testing.T) {
	now := time.Unix(1_800_000_000, 123_000_000)
	long := strings.Repeat("a", 251) + ".com" // 255 bytes
	for _, tc := range []struct {
		target, want string
		size         int
	}{
		{"192.0.2.7:80", "192.0.2.7:80", 67},
		{"[2001:db8::1]:443", "[2001:db8::1]:443", 79},
		{"[::ffff:192.0.2.7]:8080", "192.0.2.7:8080", 67}, // mapped: carried as IPv4
		{"example.com:65535", "example.com:65535", 64 + len("example.com")},
		{long + ":1", long + ":1", MaxRequestLen},
	} {
		req := mustEncode(t, pkey, tc.target, now)
		if len(req) != tc.size {
			t.Errorf("%s: request is %d bytes, want %d", tc.target, len(req), tc.size)
		}
		// ReadRequest takes exactly the request from a stream that continues.
		r := bytes.NewReader(append(append([]byte(nil), req...), "app data"...))
		got, err := ReadRequest(r)
		if err != nil {
			t.Fatalf("%s: ReadRequest: %v", tc.target, err)
		}
		if !bytes.Equal(got, req) {
			t.Fatalf("%s: ReadRequest returned other bytes", tc.target)
		}
		rest, _ := io.ReadAll(r)
		if string(rest) != "app data" {
			t.Fatalf("%s: ReadRequest ate application bytes: rest %q", tc.target, rest)
		}
		target, err := NewVerifier(pkey, 0).Verify(got, FlowAddrs{}, now)
		if err != nil {
			t.Fatalf("%s: Verify: %v", tc.target, err)
		}
		if target != tc.want {
			t.Errorf("Verify target %q, want %q", target, tc.want)
		}
	}
	if MaxRequestLen >= 500 {
		t.Errorf("MaxRequestLen %d does not fit a SYN comfortably", MaxRequestLen)
	}
}

func TestEncodeRejectsBadInput(t *testing.T) {
	now := time.Now()
	for _, target := range []string{"", "host", ":80", "host:0", "host:65536", "host:x",
		strings.Repeat("a", 256) + ":80", "a\x00b:80", "[fe80::1%eth0]:80"} {
		if _, err := EncodeRequest(pkey, target, FlowAddrs{}, now, rand.Reader); err == nil {
			t.Errorf("EncodeRequest(%q) succeeded", target)
		}
	}
	if _, err := EncodeRequest(pkey[:MinKeyLen-1], "host:80", FlowAddrs{}, now, rand.Reader); err == nil {
		t.Error("EncodeRequest with a short key succeeded")
	}
	if _, err := EncodeRequest(pkey, "host:80", FlowAddrs{}, now, bytes.NewReader(nil)); err == nil {
		t.Error("EncodeRequest with an empty random source succeeded")
	}
}

func TestEveryBitFlipRejected(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, target := range []string{"192.0.2.1:80", "[2001:db8::2]:80", "name.example:8080"} {
		req := mustEncode(t, pkey, target, now)
		v := NewVerifier(pkey, 0)
		for bit := 0; bit < 8*len(req); bit++ {
			bad := append([]byte(nil), req...)
			bad[bit/8] ^= 1 << (bit % 8)
			// Through ReadRequest as the exit does: the header may now claim another
			// length; feed it the flipped request followed by plenty of zeroes.
			r := io.MultiReader(bytes.NewReader(bad), bytes.NewReader(make([]byte, MaxRequestLen)))
			got, err := ReadRequest(r)
			if err == nil {
				_, err = v.Verify(got, FlowAddrs{}, now)
			}
			if err == nil {
				t.Fatalf("%s: flipping bit %d was accepted", target, bit)
			}
			var xe *ExitError
			if !errors.As(err, &xe) || xe.Status == StatusOK {
				t.Fatalf("%s: bit %d: error %v is not a refusal", target, bit, err)
			}
		}
		// The untouched request still verifies: the flips did not poison the cache.
		if _, err := v.Verify(req, FlowAddrs{}, now); err != nil {
			t.Fatalf("%s: original rejected after the flips: %v", target, err)
		}
	}
}

func TestWrongKey(t *testing.T) {
	now := time.Now()
	req := mustEncode(t, []byte("another-key-another-key-another!!"), "192.0.2.1:80", now)
	_, err := NewVerifier(pkey, 0).Verify(req, FlowAddrs{}, now)
	wantRefusal(t, err, StatusBadAuth, ReasonBadMAC)
	if !errors.Is(err, ErrBadMAC) {
		t.Errorf("error %v is not ErrBadMAC", err)
	}
}

func TestTimestampWindow(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	v := NewVerifier(pkey, 30*time.Second)
	for _, tc := range []struct {
		skew time.Duration
		ok   bool
	}{
		{-31 * time.Second, false}, {31 * time.Second, false},
		{-29 * time.Second, true}, {29 * time.Second, true}, {0, true},
		{-30*time.Second - time.Millisecond, false}, {30*time.Second + time.Millisecond, false},
		{-time.Hour, false}, {time.Hour, false},
	} {
		req := mustEncode(t, pkey, "192.0.2.1:80", now.Add(tc.skew))
		_, err := v.Verify(req, FlowAddrs{}, now)
		if tc.ok && err != nil {
			t.Errorf("skew %v rejected: %v", tc.skew, err)
		}
		if !tc.ok {
			wantRefusal(t, err, StatusBadAuth, ReasonStale)
		}
	}
}

func TestReplayRejected(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	v := NewVerifier(pkey, 30*time.Second)
	req := mustEncode(t, pkey, "192.0.2.1:80", now)
	if _, err := v.Verify(req, FlowAddrs{}, now); err != nil {
		t.Fatal(err)
	}
	_, err := v.Verify(req, FlowAddrs{}, now.Add(time.Second))
	wantRefusal(t, err, StatusBadAuth, ReasonReplay)
	// Still refused just before the request leaves the window, as stale after it: a
	// request can never be used twice.
	_, err = v.Verify(req, FlowAddrs{}, now.Add(30*time.Second))
	wantRefusal(t, err, StatusBadAuth, ReasonReplay)
	_, err = v.Verify(req, FlowAddrs{}, now.Add(30*time.Second+time.Millisecond))
	wantRefusal(t, err, StatusBadAuth, ReasonStale)
}

func TestReplayCacheBoundedAndExpires(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	v := newVerifier(pkey, 30*time.Second, 4)
	for i := range 4 {
		if _, err := v.Verify(mustEncode(t, pkey, "192.0.2.1:80", now), FlowAddrs{}, now.Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	// Full of live nonces: refuse rather than forget one.
	_, err := v.Verify(mustEncode(t, pkey, "192.0.2.1:80", now), FlowAddrs{}, now)
	wantRefusal(t, err, StatusGeneralFailure, ReasonCacheFull)
	// Once their timestamps left the window they are forgotten and room is made.
	later := now.Add(31 * time.Second)
	if _, err := v.Verify(mustEncode(t, pkey, "192.0.2.1:80", later), FlowAddrs{}, later); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	v.mu.Lock()
	n := len(v.seen)
	v.mu.Unlock()
	if n != 1 {
		t.Errorf("cache holds %d nonces after expiry, want 1", n)
	}
}

func TestReadRequestTruncated(t *testing.T) {
	now := time.Now()
	for _, target := range []string{"192.0.2.1:80", "[2001:db8::1]:80", "name.example:80"} {
		req := mustEncode(t, pkey, target, now)
		for i := 0; i < len(req); i++ {
			_, err := ReadRequest(bytes.NewReader(req[:i]))
			wantRefusal(t, err, StatusBadRequest, ReasonTruncated)
			_, err = NewVerifier(pkey, 0).Verify(req[:i], FlowAddrs{}, now)
			if err == nil {
				t.Fatalf("%s: Verify accepted %d of %d bytes", target, i, len(req))
			}
		}
	}
}

func TestReadRequestMalformed(t *testing.T) {
	req := mustEncode(t, pkey, "name.example:80", time.Now())
	for _, tc := range []struct {
		name   string
		edit   func(b []byte)
		reason string
	}{
		{"magic", func(b []byte) { b[0] = 'G' }, ReasonMalformed},
		{"version", func(b []byte) { b[3] = 1 }, ReasonBadVersion}, // version 1 MACs did not bind the flow
		{"address type", func(b []byte) { b[fixedLen-1] = 2 }, ReasonMalformed},
		{"empty name", func(b []byte) { b[fixedLen] = 0 }, ReasonMalformed},
	} {
		b := append([]byte(nil), req...)
		tc.edit(b)
		_, err := ReadRequest(bytes.NewReader(b))
		wantRefusal(t, err, StatusBadRequest, tc.reason)
	}
	// An HTTP request is refused from its first bytes, without waiting for more.
	_, err := ReadRequest(bytes.NewReader([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")))
	wantRefusal(t, err, StatusBadRequest, ReasonMalformed)
}

func TestStatusSOCKSReply(t *testing.T) {
	for st, want := range map[Status]byte{
		StatusGeneralFailure: 1, StatusNotAllowed: 2, StatusNetUnreachable: 3, StatusHostUnreachable: 4,
		StatusRefused: 5, StatusTimeout: 6, StatusBadAuth: 2, StatusBadRequest: 1, Status(0x7f): 1,
	} {
		if got := st.SOCKSReply(); got != want {
			t.Errorf("%v.SOCKSReply() = %d, want %d", st, got, want)
		}
	}
}

// FuzzVerify feeds arbitrary bytes to the parser and verifier: no panics, and anything
// accepted must be a request made with the key.
func FuzzVerify(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	for _, target := range []string{"192.0.2.1:80", "[2001:db8::1]:80", "name.example:80"} {
		b, _ := EncodeRequest(pkey, target, FlowAddrs{}, now, rand.Reader)
		f.Add(b)
	}
	f.Add([]byte("MPX\x02"))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ReadRequest(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(req) > MaxRequestLen || !bytes.Equal(req, b[:len(req)]) {
			t.Fatalf("ReadRequest returned %d bytes not a prefix of its input", len(req))
		}
		target, err := NewVerifier(pkey, 0).Verify(req, FlowAddrs{}, now)
		if err != nil {
			return
		}
		if _, _, err := splitTarget(target); err != nil {
			t.Fatalf("accepted target %q is malformed: %v", target, err)
		}
	})
}

// TestMACBindsFlow: a request is good for the flow it was sealed for only; changing
// any of the four addresses or ports fails the MAC.
func TestMACBindsFlow(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	flow := FlowAddrs{Client: netip.MustParseAddrPort("10.77.0.1:61001"), Exit: netip.MustParseAddrPort("10.77.255.2:7000")}
	req, err := EncodeRequest(pkey, "192.0.2.1:80", flow, now, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	others := []FlowAddrs{
		{Client: netip.MustParseAddrPort("10.77.0.9:61001"), Exit: flow.Exit},
		{Client: netip.MustParseAddrPort("10.77.0.1:61002"), Exit: flow.Exit},
		{Client: flow.Client, Exit: netip.MustParseAddrPort("10.77.255.3:7000")},
		{Client: flow.Client, Exit: netip.MustParseAddrPort("10.77.255.2:7001")},
		{Client: flow.Exit, Exit: flow.Client},
		{},
	}
	for _, o := range others {
		_, err := NewVerifier(pkey, 0).Verify(req, o, now)
		wantRefusal(t, err, StatusBadAuth, ReasonBadMAC)
	}
	if _, err := NewVerifier(pkey, 0).Verify(req, flow, now); err != nil {
		t.Fatalf("the flow's own addresses: %v", err)
	}
}

// TestAdmitThenClaim: a SYN's request is admitted once; the flow's own Verify (the exit
// reading the request from the connection) claims it once; every other use is a replay.
func TestAdmitThenClaim(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	flow := FlowAddrs{Client: netip.MustParseAddrPort("10.77.0.1:61001"), Exit: netip.MustParseAddrPort("10.77.255.2:7000")}
	req, _ := EncodeRequest(pkey, "192.0.2.1:80", flow, now, rand.Reader)
	v := NewVerifier(pkey, 0)
	if err := v.AdmitPayload(append(append([]byte(nil), req...), "data after"...), flow, now); err != nil {
		t.Fatal(err)
	}
	wantRefusal(t, v.Admit(req, flow, now), StatusBadAuth, ReasonReplay) // a second SYN, no flow
	if _, err := v.Verify(req, flow, now); err != nil {
		t.Fatalf("claim by the admitted flow: %v", err)
	}
	_, err := v.Verify(req, flow, now)
	wantRefusal(t, err, StatusBadAuth, ReasonReplay)
	wantRefusal(t, v.AdmitPayload(req[:len(req)-1], flow, now), StatusBadRequest, ReasonTruncated)
	wantRefusal(t, v.AdmitPayload(nil, flow, now), StatusBadRequest, ReasonTruncated)
}

// TestNotBefore: a request stamped before the exit started (captured, then replayed
// after a restart, when the replay cache is empty) is refused as stale, however fresh
// by the window.
func TestNotBefore(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	old, _ := EncodeRequest(pkey, "192.0.2.1:80", FlowAddrs{}, start.Add(-time.Millisecond), rand.Reader)
	fresh, _ := EncodeRequest(pkey, "192.0.2.1:80", FlowAddrs{}, start, rand.Reader)
	v := NewVerifier(pkey, 30*time.Second)
	v.SetNotBefore(start)
	_, err := v.Verify(old, FlowAddrs{}, start.Add(29*time.Second))
	wantRefusal(t, err, StatusBadAuth, ReasonStale)
	if _, err := v.Verify(fresh, FlowAddrs{}, start.Add(29*time.Second)); err != nil {
		t.Fatalf("request stamped at the start: %v", err)
	}
}

// FuzzAdmitPayload feeds arbitrary SYN payloads and flow ports to the exit's admission
// check: no panics; nothing is admitted but a request sealed with the key for exactly
// that flow; an admitted request is claimed once by its flow and never admitted again.
func FuzzAdmitPayload(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	flow := FlowAddrs{Client: netip.MustParseAddrPort("10.77.0.1:61001"), Exit: netip.MustParseAddrPort("10.77.255.2:7000")}
	for _, target := range []string{"192.0.2.1:80", "[2001:db8::1]:80", "name.example:80"} {
		b, _ := EncodeRequest(pkey, target, flow, now, rand.Reader)
		f.Add(b, uint16(61001), uint16(7000))
		f.Add(append(b, "and data"...), uint16(61001), uint16(7000))
		f.Add(b, uint16(61002), uint16(7000))
	}
	f.Add([]byte("MPX\x02"), uint16(1), uint16(2))
	f.Fuzz(func(t *testing.T, b []byte, cport, xport uint16) {
		fl := FlowAddrs{Client: netip.AddrPortFrom(flow.Client.Addr(), cport), Exit: netip.AddrPortFrom(flow.Exit.Addr(), xport)}
		v := NewVerifier(pkey, 0)
		if err := v.AdmitPayload(b, fl, now); err != nil {
			var xe *ExitError
			if !errors.As(err, &xe) {
				t.Fatalf("refusal %v is not an *ExitError", err)
			}
			return
		}
		n, _ := requestLen(b)
		if _, err := NewVerifier(pkey, 0).Verify(b[:n], fl, now); err != nil {
			t.Fatalf("admitted a request that does not verify for its flow: %v", err)
		}
		if fl != flow {
			t.Fatalf("admitted a request sealed for %v on flow %v", flow, fl)
		}
		if v.AdmitPayload(b, fl, now) == nil {
			t.Fatalf("admitted the same request twice")
		}
		if _, err := v.Verify(b[:n], fl, now); err != nil {
			t.Fatalf("the admitted flow cannot claim its request: %v", err)
		}
	})
}
