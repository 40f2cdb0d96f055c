package socks

// The exit protocol: the first bytes of every flow from a client to the exit, small
// enough to ride in the SYN payload, so authenticating a new connection costs no round
// trip beyond the handshake the flow needs anyway.
//
// Request (all integers big endian):
//
//	offset  size  field
//	0       3     magic "MPX"
//	3       1     version (1)
//	4       8     timestamp: Unix time in milliseconds when the client built the request
//	12      16    nonce: random; the exit refuses a nonce it has seen inside the window
//	28      1     address type: 1 IPv4, 3 domain name, 4 IPv6 (the SOCKS5 values)
//	29      n     address: 4 bytes | 1 length byte L (1..255) + L name bytes | 16 bytes
//	29+n    2     port (1..65535)
//	31+n    32    HMAC-SHA256(key, bytes [0, 31+n) || flow)
//
// flow is not sent: it is the flow's addresses as both ends see them, client inner
// address, client port, exit inner address, exit port (each address as 16 bytes, IPv4
// mapped; ports big endian; 36 bytes). A request is therefore good for one flow only:
// replayed from another source address or port it fails the MAC. The client learns its
// port before the SYN leaves (FlowDialer builds the request then).
//
// Sizes: 67 bytes for IPv4, 79 for IPv6, 64+L for a name of L bytes (at most 319).
// The length is known from the first 30 bytes, so the exit reads exactly the request
// and never a byte of the application data that follows it.
//
// Replay: a nonce is refused once seen inside the window, and a timestamp older than
// the Verifier's NotBefore (the exit's start) is refused, so a request captured before
// an exit restart cannot be replayed after it (a client whose clock lags the exit's by
// d has its requests refused for d after an exit restart).
//
// Response: one status byte (Status). StatusOK is followed by the target's bytes; after
// any other status the exit closes the flow.

import (
	"container/heap"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Wire constants of the exit protocol.
const (
	ProtocolVersion = 2 // 2: the MAC binds the flow's addresses
	// MinKeyLen is the shortest pre-shared key accepted (bytes).
	MinKeyLen = 16
	// DefaultWindow is how far a request's timestamp may be from the exit's clock.
	DefaultWindow = 30 * time.Second
	// MaxRequestLen is the size of the largest request (a 255-byte name).
	MaxRequestLen = fixedLen + 1 + 255 + 2 + macLen
	// DefaultReplayCacheSize bounds the nonces a Verifier remembers: enough for about
	// 4000 new flows per second sustained over a 60 s window (about 16 MiB).
	DefaultReplayCacheSize = 1 << 18

	nonceLen = 16
	macLen   = sha256.Size
	fixedLen = 4 + 8 + nonceLen + 1 // magic+version, timestamp, nonce, address type

	atypIPv4   = 1
	atypDomain = 3
	atypIPv6   = 4
)

var magic = [3]byte{'M', 'P', 'X'}

// Status is the one byte the exit answers a request with. Values 0..6 are the SOCKS5
// reply codes of the same meaning.
type Status byte

// Exit statuses.
const (
	StatusOK              Status = 0x00
	StatusGeneralFailure  Status = 0x01
	StatusNotAllowed      Status = 0x02 // target denied by the exit's allow/deny lists
	StatusNetUnreachable  Status = 0x03
	StatusHostUnreachable Status = 0x04 // includes a name that does not resolve
	StatusRefused         Status = 0x05
	StatusTimeout         Status = 0x06 // dialing the target timed out
	StatusBadAuth         Status = 0x20 // bad MAC (wrong key), stale timestamp, replayed nonce
	StatusBadRequest      Status = 0x21 // not an exit request, or another protocol version
)

// String describes the status for logs and errors.
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusBadAuth:
		return "authentication rejected (wrong key, clock skew beyond the window, or replay)"
	case StatusBadRequest:
		return "malformed request or unsupported protocol version"
	}
	if s <= StatusTimeout {
		return ReplyText(byte(s))
	}
	return fmt.Sprintf("status 0x%02x", byte(s))
}

// SOCKSReply maps a status to the SOCKS5 reply a front gives its client: BadAuth is
// "not allowed" (02), BadRequest and unknown values "general failure" (01).
func (s Status) SOCKSReply() byte {
	switch {
	case s == StatusBadAuth:
		return ReplyNotAllowed
	case s <= StatusTimeout:
		return byte(s)
	}
	return ReplyGeneralFailure
}

// Refusal reasons, the keys of ExitStats.Refused.
const (
	ReasonTruncated  = "truncated"         // the flow ended before a whole request
	ReasonTimeout    = "timeout"           // no whole request within RequestTimeout
	ReasonMalformed  = "malformed"         // bad magic, address type or length
	ReasonBadVersion = "bad_version"       // magic right, version unknown
	ReasonBadMAC     = "bad_mac"           // MAC does not verify: wrong key or altered
	ReasonStale      = "stale"             // timestamp outside the window
	ReasonReplay     = "replay"            // nonce seen before inside the window
	ReasonCacheFull  = "replay_cache_full" // too many live nonces to remember another
	ReasonDenied     = "denied"            // target (or one of its addresses) not allowed
	ReasonResolve    = "resolve_failed"    // name did not resolve
	ReasonDial       = "dial_failed"       // kernel TCP dial to the target failed
)

// Sentinel errors inside *ExitError, for errors.Is.
var (
	ErrBadMAC    = errors.New("request MAC does not verify")
	ErrStale     = errors.New("request timestamp outside the window")
	ErrReplay    = errors.New("request nonce replayed")
	ErrMalformed = errors.New("malformed exit request")
	// ErrExitAuth is in the chain of the TunnelDialer's error when the exit answered
	// StatusBadAuth.
	ErrExitAuth = errors.New("exit rejected authentication")
)

// ExitError is a refusal of an exit request: the Status the exit answers with and the
// Reason it is counted under.
type ExitError struct {
	Status Status
	Reason string
	Err    error
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("exit request refused (%s, %s): %v", e.Reason, e.Status, e.Err)
}

func (e *ExitError) Unwrap() error { return e.Err }

func refusal(st Status, reason string, err error) *ExitError {
	return &ExitError{Status: st, Reason: reason, Err: err}
}

// splitTarget parses "host:port" into host and port and checks it can be carried: a
// non-empty host of at most 255 bytes, a port 1..65535.
func splitTarget(target string) (host string, port uint16, err error) {
	host, ps, err := net.SplitHostPort(target)
	if err != nil {
		return "", 0, fmt.Errorf("target %q: %w", target, err)
	}
	p, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || p == 0 {
		return "", 0, fmt.Errorf("target %q: bad port", target)
	}
	if host == "" || len(host) > 255 {
		return "", 0, fmt.Errorf("target %q: host must be 1..255 bytes", target)
	}
	if strings.ContainsAny(host, "\x00%") {
		return "", 0, fmt.Errorf("target %q: bad host", target)
	}
	return host, uint16(p), nil
}

// FlowAddrs are a flow's addresses as the exit sees them: the client's inner address
// and port, the exit's listen address and port. The request's MAC binds them.
type FlowAddrs struct {
	Client, Exit netip.AddrPort
}

// FlowOf returns c's FlowAddrs seen from the exit's side (remote is the client), for
// conns whose addresses are *net.TCPAddr (kernel TCP and engine conns).
func FlowOf(c net.Conn) FlowAddrs {
	var f FlowAddrs
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		f.Client = a.AddrPort()
	}
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
		f.Exit = a.AddrPort()
	}
	return f
}

func (f FlowAddrs) appendTo(b []byte) []byte {
	for _, ap := range [2]netip.AddrPort{f.Client, f.Exit} {
		a := ap.Addr().Unmap().As16()
		if ap.Addr().Unmap().Is4() {
			a = netip.AddrFrom4(ap.Addr().Unmap().As4()).As16() // IPv4-mapped, as documented
		}
		b = append(b, a[:]...)
		b = binary.BigEndian.AppendUint16(b, ap.Port())
	}
	return b
}

// requestMAC appends HMAC-SHA256(key, body || flow) to dst.
func requestMAC(dst, key, body []byte, flow FlowAddrs) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	var fb [36]byte
	m.Write(flow.appendTo(fb[:0]))
	return m.Sum(dst)
}

// PendingRequest is an exit request waiting for its flow's addresses (Seal adds the
// MAC). Safe for concurrent use; each Seal returns a new slice.
type PendingRequest struct {
	key  []byte
	body []byte
}

// PrepareRequest builds the body of the exit request for target ("host:port"; host an
// IPv4 or IPv6 literal or a domain name the exit resolves), stamped with now and a
// 16-byte nonce read from rand.
func PrepareRequest(key []byte, target string, now time.Time, rand io.Reader) (*PendingRequest, error) {
	b, err := requestBody(key, target, now, rand)
	if err != nil {
		return nil, err
	}
	return &PendingRequest{key: key, body: b}, nil
}

// Seal returns the whole request, its MAC binding flow.
func (r *PendingRequest) Seal(flow FlowAddrs) []byte {
	out := make([]byte, len(r.body), len(r.body)+macLen)
	copy(out, r.body)
	return requestMAC(out, r.key, r.body, flow)
}

// EncodeRequest is PrepareRequest then Seal(flow).
func EncodeRequest(key []byte, target string, flow FlowAddrs, now time.Time, rand io.Reader) ([]byte, error) {
	r, err := PrepareRequest(key, target, now, rand)
	if err != nil {
		return nil, err
	}
	return r.Seal(flow), nil
}

func requestBody(key []byte, target string, now time.Time, rand io.Reader) ([]byte, error) {
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("encode exit request: key shorter than %d bytes", MinKeyLen)
	}
	host, port, err := splitTarget(target)
	if err != nil {
		return nil, fmt.Errorf("encode exit request: %w", err)
	}
	b := make([]byte, 0, MaxRequestLen)
	b = append(b, magic[:]...)
	b = append(b, ProtocolVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(now.UnixMilli()))
	var nonce [nonceLen]byte
	if _, err := io.ReadFull(rand, nonce[:]); err != nil {
		return nil, fmt.Errorf("encode exit request: nonce: %w", err)
	}
	b = append(b, nonce[:]...)
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if ip.Is4() {
			a := ip.As4()
			b = append(b, atypIPv4)
			b = append(b, a[:]...)
		} else {
			a := ip.As16()
			b = append(b, atypIPv6)
			b = append(b, a[:]...)
		}
	} else {
		b = append(b, atypDomain, byte(len(host)))
		b = append(b, host...)
	}
	b = binary.BigEndian.AppendUint16(b, port)
	return b, nil
}

// requestLen returns the whole length of a request from its first fixedLen+1 bytes (the
// extra byte is the name length; ignored for address literals). It checks the magic and
// version.
func requestLen(head []byte) (int, *ExitError) {
	if [3]byte(head[:3]) != magic {
		return 0, refusal(StatusBadRequest, ReasonMalformed, fmt.Errorf("%w: bad magic", ErrMalformed))
	}
	if head[3] != ProtocolVersion {
		return 0, refusal(StatusBadRequest, ReasonBadVersion,
			fmt.Errorf("%w: version %d, this exit speaks %d", ErrMalformed, head[3], ProtocolVersion))
	}
	switch head[fixedLen-1] {
	case atypIPv4:
		return fixedLen + 4 + 2 + macLen, nil
	case atypIPv6:
		return fixedLen + 16 + 2 + macLen, nil
	case atypDomain:
		l := int(head[fixedLen])
		if l == 0 {
			return 0, refusal(StatusBadRequest, ReasonMalformed, fmt.Errorf("%w: empty name", ErrMalformed))
		}
		return fixedLen + 1 + l + 2 + macLen, nil
	}
	return 0, refusal(StatusBadRequest, ReasonMalformed,
		fmt.Errorf("%w: address type %d", ErrMalformed, head[fixedLen-1]))
}

// ReadRequest reads exactly one exit request from r (no read-ahead: bytes after the
// request stay in r) and returns it for Verify. Errors are *ExitError: ReasonTruncated
// when r ends early, ReasonTimeout on a deadline, ReasonMalformed/ReasonBadVersion
// as soon as the header shows it is not a request this exit understands.
func ReadRequest(r io.Reader) ([]byte, error) {
	buf := make([]byte, MaxRequestLen)
	// Magic and version first: something else (a port scan, an HTTP request) is refused
	// from its first four bytes.
	if err := readFull(r, buf[:4]); err != nil {
		return nil, err
	}
	if [3]byte(buf[:3]) != magic || buf[3] != ProtocolVersion {
		_, xerr := requestLen(buf)
		return nil, xerr
	}
	if err := readFull(r, buf[4:fixedLen+1]); err != nil {
		return nil, err
	}
	n, xerr := requestLen(buf)
	if xerr != nil {
		return nil, xerr
	}
	if err := readFull(r, buf[fixedLen+1:n]); err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func readFull(r io.Reader, b []byte) error {
	if _, err := io.ReadFull(r, b); err != nil {
		if isTimeout(err) {
			return refusal(StatusBadRequest, ReasonTimeout, fmt.Errorf("read exit request: %w", err))
		}
		return refusal(StatusBadRequest, ReasonTruncated, fmt.Errorf("read exit request: %w", err))
	}
	return nil
}

// Verifier checks exit requests: MAC with the pre-shared key (constant time), timestamp
// within ±window of the caller's clock, nonce not seen before. It remembers each accepted
// nonce until its timestamp leaves the window, at most a bounded number of them: when
// the cache is full of live nonces it refuses new requests (ReasonCacheFull) rather than
// forget one and open a replay hole. Safe for concurrent use.
type Verifier struct {
	key       []byte
	window    time.Duration
	capacity  int
	notBefore time.Time // requests stamped earlier are refused (zero: no bound)

	mu   sync.Mutex // guards the fields below
	seen map[[nonceLen]byte]nonceState
	exp  expiryHeap // the same nonces, ordered by when they may be forgotten
}

// nonceState is what the Verifier remembers of a nonce: the flow it came with and
// whether Admit let it in without the flow having claimed it yet with Verify.
type nonceState struct {
	flow     FlowAddrs
	admitted bool
}

// SetNotBefore makes v refuse requests stamped before t (the exit's start: replays of
// requests from before a restart). Call it before v is in use.
func (v *Verifier) SetNotBefore(t time.Time) {
	v.notBefore = time.UnixMilli(t.UnixMilli()) // the request's resolution
}

// NewVerifier returns a Verifier for key with the given window (DefaultWindow when
// <= 0) and DefaultReplayCacheSize.
func NewVerifier(key []byte, window time.Duration) *Verifier {
	return newVerifier(key, window, 0)
}

func newVerifier(key []byte, window time.Duration, capacity int) *Verifier {
	if window <= 0 {
		window = DefaultWindow
	}
	if capacity <= 0 {
		capacity = DefaultReplayCacheSize
	}
	return &Verifier{
		key:      append([]byte(nil), key...),
		window:   window,
		capacity: capacity,
		seen:     make(map[[nonceLen]byte]nonceState),
	}
}

// Verify checks one whole request (as returned by ReadRequest) for flow at time now and
// returns its target as "host:port" (IPv6 in brackets). Errors are *ExitError. Checks
// run in this order, so only authentic, fresh requests take a place in the replay
// cache: structure, MAC (over the request and flow), timestamp, nonce. A nonce that
// Admit let in for this same flow is claimed (once) rather than refused as a replay.
func (v *Verifier) Verify(req []byte, flow FlowAddrs, now time.Time) (string, error) {
	return v.check(req, flow, now, false)
}

// Admit is Verify for a SYN, before the flow exists: it checks the request the same way
// and records its nonce as admitted for flow, for that flow's Verify to claim.
func (v *Verifier) Admit(req []byte, flow FlowAddrs, now time.Time) error {
	_, err := v.check(req, flow, now, true)
	return err
}

// AdmitPayload is Admit for a SYN's payload: the request must be its first bytes.
func (v *Verifier) AdmitPayload(payload []byte, flow FlowAddrs, now time.Time) error {
	if len(payload) < fixedLen+1 {
		return refusal(StatusBadRequest, ReasonTruncated, fmt.Errorf("%w: %d bytes", ErrMalformed, len(payload)))
	}
	n, xerr := requestLen(payload)
	if xerr != nil {
		return xerr
	}
	if len(payload) < n {
		return refusal(StatusBadRequest, ReasonTruncated, fmt.Errorf("%w: %d bytes, header says %d", ErrMalformed, len(payload), n))
	}
	return v.Admit(payload[:n], flow, now)
}

func (v *Verifier) check(req []byte, flow FlowAddrs, now time.Time, admit bool) (string, error) {
	if len(req) < fixedLen+1 {
		return "", refusal(StatusBadRequest, ReasonTruncated, fmt.Errorf("%w: %d bytes", ErrMalformed, len(req)))
	}
	n, xerr := requestLen(req)
	if xerr != nil {
		return "", xerr
	}
	if len(req) != n {
		return "", refusal(StatusBadRequest, ReasonMalformed,
			fmt.Errorf("%w: %d bytes, header says %d", ErrMalformed, len(req), n))
	}
	body, mac := req[:n-macLen], req[n-macLen:]
	var sum [macLen]byte
	if !hmac.Equal(requestMAC(sum[:0], v.key, body, flow), mac) {
		return "", refusal(StatusBadAuth, ReasonBadMAC, ErrBadMAC)
	}

	ts := time.UnixMilli(int64(binary.BigEndian.Uint64(body[4:12])))
	if d := now.Sub(ts); d > v.window || d < -v.window {
		return "", refusal(StatusBadAuth, ReasonStale, fmt.Errorf("%w: %v off", ErrStale, d.Round(time.Millisecond)))
	}
	if ts.Before(v.notBefore) {
		return "", refusal(StatusBadAuth, ReasonStale, fmt.Errorf("%w: stamped %v before this exit started", ErrStale, v.notBefore.Sub(ts).Round(time.Millisecond)))
	}

	var host string
	addr := body[fixedLen:]
	switch body[fixedLen-1] {
	case atypIPv4:
		host = netip.AddrFrom4([4]byte(addr[:4])).String()
		addr = addr[4:]
	case atypIPv6:
		host = netip.AddrFrom16([16]byte(addr[:16])).String()
		addr = addr[16:]
	case atypDomain:
		l := int(addr[0])
		host = string(addr[1 : 1+l])
		addr = addr[1+l:]
	}
	port := binary.BigEndian.Uint16(addr)
	target := net.JoinHostPort(host, strconv.Itoa(int(port)))
	if _, _, err := splitTarget(target); err != nil {
		// Authentic but unusable (port 0, NUL in a name): a client bug, not an attack.
		return "", refusal(StatusBadRequest, ReasonMalformed, fmt.Errorf("%w: %v", ErrMalformed, err))
	}

	var nonce [nonceLen]byte
	copy(nonce[:], body[12:12+nonceLen])
	if err := v.remember(nonce, flow, admit, ts.Add(v.window), now); err != nil {
		return "", err
	}
	return target, nil
}

// remember records nonce until forget (the instant its timestamp leaves the window).
// A nonce admitted for flow may be claimed once by flow's Verify (admit false).
func (v *Verifier) remember(nonce [nonceLen]byte, flow FlowAddrs, admit bool, forget, now time.Time) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	for len(v.exp) > 0 && v.exp[0].forget.Before(now) {
		e := heap.Pop(&v.exp).(expiry)
		delete(v.seen, e.nonce)
	}
	if st, dup := v.seen[nonce]; dup {
		if !admit && st.admitted && st.flow == flow {
			v.seen[nonce] = nonceState{flow: flow}
			return nil
		}
		return refusal(StatusBadAuth, ReasonReplay, ErrReplay)
	}
	if len(v.seen) >= v.capacity {
		return refusal(StatusGeneralFailure, ReasonCacheFull,
			fmt.Errorf("replay cache holds %d live nonces", len(v.seen)))
	}
	v.seen[nonce] = nonceState{flow: flow, admitted: admit}
	heap.Push(&v.exp, expiry{forget: forget, nonce: nonce})
	return nil
}

type expiry struct {
	forget time.Time
	nonce  [nonceLen]byte
}

// expiryHeap is a min-heap of nonces by forget time (container/heap).
type expiryHeap []expiry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].forget.Before(h[j].forget) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// newStartedVerifier is the Exit's Verifier: it refuses requests stamped before now.
func newStartedVerifier(cfg ExitConfig) *Verifier {
	v := newVerifier(cfg.Key, cfg.Window, cfg.ReplayCacheSize)
	v.SetNotBefore(cfg.Now())
	return v
}

// VerifySYN is the exit's admission check for the engine's listener
// (tcp.ListenOptions.VerifySYN): the SYN's payload must start with a request that
// verifies for the flow src -> dst (MAC, timestamp, fresh nonce). Refusals are counted
// by reason like the Exit's, without a log line (anyone can send SYNs). Safe for
// concurrent use.
func (e *Exit) VerifySYN(src, dst netip.AddrPort, payload []byte) bool {
	err := e.verifier.AdmitPayload(payload, FlowAddrs{Client: src, Exit: dst}, e.cfg.Now())
	if err == nil {
		return true
	}
	reason := "internal"
	var xerr *ExitError
	if errors.As(err, &xerr) {
		reason = xerr.Reason
	}
	e.mu.Lock()
	e.refused["syn_"+reason]++
	e.mu.Unlock()
	return false
}
