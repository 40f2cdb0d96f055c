package socks

import (
	"context"
	"sync"
	"time"
)

// Authentication throttle defaults.
const (
	DefaultAuthFailDelay = 250 * time.Millisecond // the first delay after a failure
	maxAuthFailDelay     = 5 * time.Second        // the delay doubles per failure up to this
	authFailMemory       = 10 * time.Minute       // a client's failures are forgotten this long after the last
	authThrottleEntries  = 4096                   // clients remembered at most
)

// authThrottle slows authentication attempts from clients that failed recently: after n
// consecutive failures each attempt waits base<<(n-1) (at most 5 s) after the previous
// one, and concurrent attempts queue behind each other, so parallel connections buy no
// extra guesses. A success forgets the client. Bounded: at most authThrottleEntries
// clients, each forgotten authFailMemory after its last failure; when full, the
// oldest of a random sample makes room. Time is passed in. Safe for concurrent use.
type authThrottle struct {
	base time.Duration // <= 0: no throttle

	mu sync.Mutex // guards m
	m  map[clientKey]*authRecord
}

type authRecord struct {
	fails int
	last  time.Time // last failure
	next  time.Time // the earliest the next attempt is checked
}

func newAuthThrottle(base time.Duration) *authThrottle {
	return &authThrottle{base: base, m: make(map[clientKey]*authRecord)}
}

func (t *authThrottle) gap(fails int) time.Duration {
	if fails > 16 {
		return maxAuthFailDelay
	}
	return min(t.base<<(fails-1), maxAuthFailDelay)
}

// acquire reserves k's next attempt and returns how long it must wait (0: at once).
func (t *authThrottle) acquire(k clientKey, now time.Time) time.Duration {
	if t.base <= 0 {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.m[k]
	if r == nil {
		return 0
	}
	if now.Sub(r.last) > authFailMemory {
		delete(t.m, k)
		return 0
	}
	at := r.next
	if at.Before(now) {
		at = now
	}
	r.next = at.Add(t.gap(r.fails))
	return at.Sub(now)
}

// failed records a failed attempt by k.
func (t *authThrottle) failed(k clientKey, now time.Time) {
	if t.base <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.m[k]
	if r == nil {
		if len(t.m) >= authThrottleEntries {
			t.evict(now)
		}
		r = &authRecord{}
		t.m[k] = r
	}
	r.fails++
	r.last = now
	if next := now.Add(t.gap(r.fails)); next.After(r.next) {
		r.next = next
	}
}

// succeeded forgets k's failures.
func (t *authThrottle) succeeded(k clientKey) {
	if t.base <= 0 {
		return
	}
	t.mu.Lock()
	delete(t.m, k)
	t.mu.Unlock()
}

// evict makes room for one record: it drops the oldest of a sample of 16 (map order
// is random), or an expired record met on the way. O(1), so a flood of new clients
// cannot make every failure scan the whole table. t.mu held.
func (t *authThrottle) evict(now time.Time) {
	var oldest clientKey
	var oldestAt time.Time
	n := 0
	for k, r := range t.m {
		if now.Sub(r.last) > authFailMemory {
			delete(t.m, k)
			return
		}
		if n == 0 || r.last.Before(oldestAt) {
			oldest, oldestAt = k, r.last
		}
		if n++; n == 16 {
			break
		}
	}
	delete(t.m, oldest)
}

func (t *authThrottle) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// wait reserves k's next attempt and sleeps until it is due or ctx ends (false).
func (t *authThrottle) wait(ctx context.Context, k clientKey) bool {
	d := t.acquire(k, time.Now())
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
