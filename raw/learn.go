package raw

// Return addressing at an exit that serves any number of clients (learning mode):
//
//	inbound packet (decoded, to our ports)
//	  path   = PathOf(inner IPv4 ID)          the client's path index, set by its Encoder;
//	                                          NAT rewrites only outer headers, so this
//	                                          survives any number of address translations
//	  source = outer source (address, and port with UDP): where that path's packets come from
//	  authorized flow (Link.Authorize)? ──yes──► learned[client][path] = source (moves at once:
//	                                              a NAT rebinding is followed by the first
//	                                              authenticated packet from the new address)
//	                                    ──no───► pending[flow][path] = source (answers the
//	                                              handshake only; a ring of fixed size)
//
//	Send(path, seg to client) ──► learned[client][path]
//	                          ──► else pending[seg's flow][path] (the SYN-ACK)
//	                          ──► else another learned path of the client (path mod count:
//	                              a path of the client not learned yet; tagged with its own
//	                              index, so the client answers on it and teaches it)
//	                          ──► else drop, counted (DropNoEndpoint)
//
// Every tag also carries the number of paths its sender has (PathsOf). The exit has a
// fixed number of path slots; a client announcing fewer has the rest turned off for its
// flows (PathUsable, which the engine consults), so that no phantom path shares an
// uplink with a real one.
//
// Only flows the exit authenticated (its request's MAC verified) move a learned endpoint,
// so spoofed packets, with a wrong key or none, cannot redirect a client's paths. A packet
// that carries the 4-tuple of an authorized flow is trusted: like TCP itself, that trusts
// whoever can see the flow on the path (no per-packet MAC).

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EncapKind is an encapsulation format.
type EncapKind uint8

const (
	EncapIPIP EncapKind = iota // IPv4 in IPv4 (protocol 4): the thesis's format
	EncapUDP                   // IPv4 in UDP (Linux fou, ipproto 4): crosses NAT
)

// DefaultUDPPort is the UDP encapsulation port when --encap udp names none (the port of
// the kernel's fou examples).
const DefaultUDPPort = 5555

// Encap is an encapsulation: the format and, for UDP, the port. The zero value is IPIP.
type Encap struct {
	Kind EncapKind
	Port uint16 // UDP: source and destination port of what we send, destination of what we take
}

// ParseEncap reads "ipip", "udp" or "udp:PORT".
func ParseEncap(s string) (Encap, error) {
	switch {
	case s == "" || s == "ipip":
		return Encap{}, nil
	case s == "udp":
		return Encap{Kind: EncapUDP, Port: DefaultUDPPort}, nil
	case strings.HasPrefix(s, "udp:"):
		p, err := strconv.ParseUint(s[4:], 10, 16)
		if err != nil || p == 0 {
			return Encap{}, fmt.Errorf("encap %q: port must be 1..65535", s)
		}
		return Encap{Kind: EncapUDP, Port: uint16(p)}, nil
	}
	return Encap{}, fmt.Errorf("encap %q: want ipip, udp or udp:PORT", s)
}

func (e Encap) String() string {
	if e.Kind == EncapUDP {
		return fmt.Sprintf("udp:%d", e.Port)
	}
	return "ipip"
}

// Overhead is the bytes the encapsulation adds in front of the inner packet.
func (e Encap) Overhead() int {
	if e.Kind == EncapUDP {
		return OverheadUDP
	}
	return OverheadIPIP
}

// MSSFor is the TCP MSS that fits a path of the given MTU: the MTU less the
// encapsulation, the inner IPv4 header and the TCP header.
func (e Encap) MSSFor(mtu int) int { return mtu - e.Overhead() - ipv4HeaderLen - tcpHeaderLen }

// Learning-mode limits.
const (
	// MaxLearnedClients bounds the clients whose paths an exit remembers; the one heard
	// from least recently makes room for a new one.
	MaxLearnedClients = 4096
	// LearnedMaxAge: a client not heard from for this long is forgotten.
	LearnedMaxAge = 10 * time.Minute
	// pendingSlots bounds the endpoints kept for flows not yet authenticated (handshakes);
	// the oldest is overwritten.
	pendingSlots = 1024
	// pendingMaxAge: a handshake's endpoint is not used after this long.
	pendingMaxAge = 10 * time.Second
	// MaxPathSlots is the most path slots a learning exit can have (a path index is one
	// byte of the inner IPv4 ID; kept small for the per-client array).
	MaxPathSlots = 16
)

type learnedEP struct {
	addr    netip.AddrPort
	changed time.Time // when addr last changed
	valid   bool
}

type clientPaths struct {
	eps   [MaxPathSlots]learnedEP
	seen  time.Time // last authenticated packet
	n     int       // valid entries
	paths int       // the number of paths the client announces (PathsOf)
}

type flowKey struct {
	local, remote netip.AddrPort
}

type pendingKey struct {
	remote netip.AddrPort
	path   uint8
}

type pendingEP struct {
	addr netip.AddrPort
	at   time.Time
	slot int // index in the ring
}

// returnTable is a learning exit's state. Safe for concurrent use.
type returnTable struct {
	slots int

	// mu guards the fields below. Lookups (every Send) take the read lock; the receive
	// goroutine takes the write lock only when something changes.
	mu         sync.RWMutex
	clients    map[netip.Addr]*clientPaths
	authorized map[flowKey]struct{}
	pending    map[pendingKey]pendingEP
	ring       [pendingSlots]pendingKey
	ringUsed   [pendingSlots]bool
	next       int
}

func newReturnTable(slots int) *returnTable {
	return &returnTable{slots: slots, clients: map[netip.Addr]*clientPaths{},
		authorized: map[flowKey]struct{}{}, pending: map[pendingKey]pendingEP{}}
}

func (t *returnTable) authorize(local, remote netip.AddrPort, on bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if on {
		t.authorized[flowKey{local, remote}] = struct{}{}
	} else {
		delete(t.authorized, flowKey{local, remote})
	}
}

// learn records that a packet of the flow (local, remote) came over path (of paths, the
// number the client announces) from src. It reports whether a learned endpoint moved.
func (t *returnTable) learn(local, remote netip.AddrPort, path uint8, paths int, src netip.AddrPort, now time.Time) (moved bool, old netip.AddrPort) {
	if int(path) >= t.slots {
		return false, old
	}
	client := remote.Addr()
	t.mu.RLock()
	_, auth := t.authorized[flowKey{local, remote}]
	var same bool
	if auth {
		if c := t.clients[client]; c != nil && c.eps[path].valid && c.eps[path].addr == src && c.paths == paths && now.Sub(c.seen) < time.Second {
			same = true // the common case: nothing to write (seen is refreshed at most every second)
		}
	} else if p, ok := t.pending[pendingKey{remote, path}]; ok && p.addr == src && now.Sub(p.at) < time.Second {
		same = true
	}
	t.mu.RUnlock()
	if same {
		return false, old
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !auth {
		k := pendingKey{remote, path}
		if p, ok := t.pending[k]; ok {
			p.addr, p.at = src, now
			t.pending[k] = p
			return false, old
		}
		i := t.next
		t.next = (t.next + 1) % pendingSlots
		if t.ringUsed[i] {
			delete(t.pending, t.ring[i])
		}
		t.ring[i], t.ringUsed[i] = k, true
		t.pending[k] = pendingEP{addr: src, at: now, slot: i}
		return false, old
	}
	c := t.clients[client]
	if c == nil {
		if len(t.clients) >= MaxLearnedClients {
			t.evictLocked(now)
		}
		c = &clientPaths{}
		t.clients[client] = c
	}
	c.seen, c.paths = now, paths
	ep := &c.eps[path]
	if ep.valid && ep.addr == src {
		return false, old
	}
	moved, old = ep.valid, ep.addr
	if !ep.valid {
		c.n++
	}
	*ep = learnedEP{addr: src, changed: now, valid: true}
	return moved, old
}

// evictLocked drops the clients older than LearnedMaxAge, or else the least recently
// seen one. Only called when the table is full (a new authenticated client).
func (t *returnTable) evictLocked(now time.Time) {
	var oldest netip.Addr
	var oldestSeen time.Time
	for a, c := range t.clients {
		if now.Sub(c.seen) > LearnedMaxAge {
			delete(t.clients, a)
			continue
		}
		if !oldest.IsValid() || c.seen.Before(oldestSeen) {
			oldest, oldestSeen = a, c.seen
		}
	}
	if len(t.clients) >= MaxLearnedClients {
		delete(t.clients, oldest)
	}
}

// lookup returns where to send a segment of the flow (local, remote) on path.
func (t *returnTable) lookup(local, remote netip.AddrPort, path int, now time.Time) (netip.AddrPort, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	c := t.clients[remote.Addr()]
	if c != nil && now.Sub(c.seen) > LearnedMaxAge {
		c = nil
	}
	if c != nil && path >= 0 && path < t.slots && c.eps[path].valid {
		return c.eps[path].addr, true
	}
	if path >= 0 && path < t.slots {
		if p, ok := t.pending[pendingKey{remote, uint8(path)}]; ok && now.Sub(p.at) < pendingMaxAge {
			return p.addr, true
		}
	}
	if c != nil && c.n > 0 {
		k := max(path, 0) % c.n
		for i := range c.eps[:t.slots] {
			if c.eps[i].valid {
				if k == 0 {
					return c.eps[i].addr, true
				}
				k--
			}
		}
	}
	for p := 0; p < t.slots; p++ {
		if e, ok := t.pending[pendingKey{remote, uint8(p)}]; ok && now.Sub(e.at) < pendingMaxAge {
			return e.addr, true
		}
	}
	return netip.AddrPort{}, false
}

// usable reports whether a flow to client may use slot path: a slot below the number of
// paths the client announces, or any slot while the client has not been heard from in
// an authenticated flow (its handshake).
func (t *returnTable) usable(client netip.Addr, path int) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	c := t.clients[client]
	return c == nil || c.paths == 0 || path < c.paths
}

// LearnedPath is one learned return endpoint of a learning exit.
type LearnedPath struct {
	Client  netip.Addr     // the client's inner address
	Path    int            // the client's path index
	Addr    netip.AddrPort // where that path's packets last came from (port 0: IPIP)
	Changed time.Time      // when Addr last changed
	Seen    time.Time      // the client's last authenticated packet
	Paths   int            // the number of paths the client announces
}

func (t *returnTable) snapshot() []LearnedPath {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []LearnedPath
	for a, c := range t.clients {
		for i := range c.eps[:t.slots] {
			if e := c.eps[i]; e.valid {
				out = append(out, LearnedPath{Client: a, Path: i, Addr: e.addr, Changed: e.changed, Seen: c.seen, Paths: c.paths})
			}
		}
	}
	return out
}
