package socks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Defaults shared by the fronts and the exit.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxConns         = 1024
)

// tracker is the accept loop and connection bookkeeping shared by SOCKSServer,
// HTTPServer and Exit: a connection limit, one goroutine per connection, and graceful
// or forced shutdown. Safe for concurrent use.
type tracker struct {
	max int
	log *zap.Logger

	accepted  atomic.Uint64
	overLimit atomic.Uint64

	ctx    context.Context // cancelled by a forced close: ends dials, closes upstreams
	cancel context.CancelFunc
	wg     sync.WaitGroup // one per running connection handler

	mu        sync.Mutex // guards the fields below
	closing   bool
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
}

func newTracker(max int, log *zap.Logger) *tracker {
	if max <= 0 {
		max = DefaultMaxConns
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &tracker{
		max:       max,
		log:       log,
		ctx:       ctx,
		cancel:    cancel,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[net.Conn]struct{}),
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
			t.overLimit.Add(1)
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

// add registers c, or reports false when the limit is reached or the server closing.
func (t *tracker) add(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing || len(t.conns) >= t.max {
		return false
	}
	t.conns[c] = struct{}{}
	t.wg.Add(1)
	return true
}

func (t *tracker) done(c net.Conn) {
	c.Close()
	t.mu.Lock()
	delete(t.conns, c)
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
