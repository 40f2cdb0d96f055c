package socks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Defaults shared by the fronts and the exit.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxConns         = 1024
	// DefaultMaxConnsPerClient bounds a front's connections from one client (one remote
	// address, IPv6 /64, or one local user on this host), so that one cannot take all
	// of MaxConns.
	DefaultMaxConnsPerClient = 256
)

// tracker is the accept loop and connection bookkeeping shared by SOCKSServer,
// HTTPServer and Exit: a connection limit (overall, and per client when perClient > 0),
// one goroutine per connection, and graceful or forced shutdown. Safe for concurrent
// use.
type tracker struct {
	max       int
	perClient int // 0: clients are not told apart (the exit)
	log       *zap.Logger
	// peerUID finds the local user owning a loopback peer's socket (clientOf).
	peerUID func(local, remote netip.AddrPort) (uint32, bool)

	accepted        atomic.Uint64
	overLimit       atomic.Uint64
	overClientLimit atomic.Uint64

	ctx    context.Context // cancelled by a forced close: ends dials, closes upstreams
	cancel context.CancelFunc
	wg     sync.WaitGroup // one per running connection handler

	mu        sync.Mutex // guards the fields below
	closing   bool
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]clientKey
	perKey    map[clientKey]int // connections per client (perClient > 0)
}

// newTracker makes a tracker for max connections (DefaultMaxConns when <= 0) and
// perClient per client: DefaultMaxConnsPerClient (at most max) when 0, none when < 0.
func newTracker(max, perClient int, log *zap.Logger) *tracker {
	if max <= 0 {
		max = DefaultMaxConns
	}
	switch {
	case perClient == 0:
		perClient = min(DefaultMaxConnsPerClient, max)
	case perClient < 0:
		perClient = 0
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &tracker{
		max:       max,
		perClient: perClient,
		log:       log,
		peerUID:   localPeerUID,
		ctx:       ctx,
		cancel:    cancel,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[net.Conn]clientKey),
		perKey:    make(map[clientKey]int),
	}
}

// serve accepts on l until it is closed and runs handle for each connection in its own
// goroutine. handle's ctx is cancelled when the connection's handler returns or when the
// server is force-closed; the tracker closes c after handle returns.
func (t *tracker) serve(l net.Listener, handle func(ctx context.Context, c net.Conn)) error {
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	t.listeners[l] = struct{}{}
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.listeners, l)
		t.mu.Unlock()
		l.Close()
	}()

	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			t.mu.Lock()
			closing := t.closing
			t.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporaryAccept(err) {
				// Out of file descriptors and the like: wait and try again.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				t.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("backoff", backoff))
				timer := time.NewTimer(backoff)
				select {
				case <-timer.C:
				case <-t.ctx.Done():
					timer.Stop()
					return ErrServerClosed
				}
				continue
			}
			return fmt.Errorf("accept on %s: %w", l.Addr(), err)
		}
		backoff = 0
		t.accepted.Add(1)
		if !t.add(c) {
			c.Close()
			continue
		}
		go func() {
			defer t.done(c)
			ctx, cancel := context.WithCancel(t.ctx)
			defer cancel()
			handle(ctx, c)
		}()
	}
}

// add registers c, or reports false (and counts why) when a limit is reached or the
// server closing.
func (t *tracker) add(c net.Conn) bool {
	var k clientKey
	if t.perClient > 0 {
		k = clientOf(c, t.peerUID) // a netlink round trip for local peers: outside the lock
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closing:
		return false
	case len(t.conns) >= t.max:
		t.overLimit.Add(1)
		return false
	case t.perClient > 0 && t.perKey[k] >= t.perClient:
		t.overClientLimit.Add(1)
		t.log.Debug("per-client connection limit", zap.Stringer("client", k), zap.Int("limit", t.perClient))
		return false
	}
	t.conns[c] = k
	if t.perClient > 0 {
		t.perKey[k]++
	}
	t.wg.Add(1)
	return true
}

// client returns the key c was registered under.
func (t *tracker) client(c net.Conn) clientKey {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns[c]
}

func (t *tracker) done(c net.Conn) {
	c.Close()
	t.mu.Lock()
	k := t.conns[c]
	delete(t.conns, c)
	if t.perClient > 0 {
		if t.perKey[k]--; t.perKey[k] <= 0 {
			delete(t.perKey, k)
		}
	}
	t.mu.Unlock()
	t.wg.Done()
}

func (t *tracker) active() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return int64(len(t.conns))
}

// shutdown stops accepting (closes the listeners), waits for the running connections
// until ctx is done, then closes what is left and waits for the handlers to return.
func (t *tracker) shutdown(ctx context.Context) error {
	t.mu.Lock()
	t.closing = true
	for l := range t.listeners {
		l.Close()
	}
	t.mu.Unlock()

	idle := make(chan struct{})
	go func() { t.wg.Wait(); close(idle) }()
	select {
	case <-idle:
		t.cancel()
		return nil
	case <-ctx.Done():
	}
	t.cancel()
	t.mu.Lock()
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	<-idle
	return ctx.Err()
}

// isTemporaryAccept reports accept errors worth retrying (EMFILE, ENFILE, ECONNABORTED...).
func isTemporaryAccept(err error) bool {
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}

// closedContext is an already-cancelled context, for Close.
func closedContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
