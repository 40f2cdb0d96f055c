package socks

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Dialer is how the fronts reach a target. target is "host:port"; host is an IPv4/IPv6
// literal or a domain name (resolved where the Dialer decides: at the exit in tunnel
// mode). Errors that carry a reply code are *ReplyError; any other error is answered
// "general failure" (SOCKS 01, HTTP 502), or as a timeout (06, 504) when it is one.
type Dialer interface {
	DialTarget(ctx context.Context, target string) (net.Conn, error)
}

// FlowDialer opens the transport to the exit: a new connection whose first bytes on the
// wire are first(addrs), addrs being the flow's addresses (the request's MAC binds
// them), called once the local port is chosen and before anything is sent. The engine
// provides it (first's bytes go in the SYN payload); tests use kernel TCP (net.Dial,
// then Write).
type FlowDialer func(ctx context.Context, first func(FlowAddrs) []byte) (net.Conn, error)

// DefaultTunnelTimeout bounds opening a flow and waiting for the exit's status.
const DefaultTunnelTimeout = 10 * time.Second

// TunnelDialer speaks the exit protocol over a FlowDialer: it builds the authenticated
// request for the target, opens the flow with it, reads the exit's status byte (bounded
// by Timeout), maps a refusal to *ReplyError, and returns the conn ready for the
// application's bytes. Names are sent to the exit unresolved.
//
// Fields are read-only once DialTarget is in use; then safe for concurrent use.
type TunnelDialer struct {
	Key     []byte           // pre-shared key, at least MinKeyLen bytes
	Flow    FlowDialer       // opens a flow to the exit
	Timeout time.Duration    // flow open + status; DefaultTunnelTimeout when 0
	Now     func() time.Time // time.Now when nil
	Rand    io.Reader        // crypto/rand.Reader when nil
	Logger  *zap.Logger      // nil: no logs
}

// DialTarget implements Dialer.
func (d *TunnelDialer) DialTarget(ctx context.Context, target string) (net.Conn, error) {
	now, rnd := d.Now, d.Rand
	if now == nil {
		now = time.Now
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = DefaultTunnelTimeout
	}
	req, err := PrepareRequest(d.Key, target, now(), rnd)
	if err != nil {
		return nil, &ReplyError{Code: ReplyGeneralFailure, Err: fmt.Errorf("tunnel dial: %w", err)}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	c, err := d.Flow(ctx, req.Seal)
	if err != nil {
		code := ReplyGeneralFailure
		if isTimeout(err) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			code = ReplyTTLExpired
			// An engine exit drops a SYN whose request does not verify without a word.
			err = fmt.Errorf("no answer (exit unreachable, or it dropped the request: wrong key, or clocks apart by more than the window): %w", err)
		}
		return nil, &ReplyError{Code: code, Err: fmt.Errorf("tunnel dial %s: open flow to exit: %w", target, err)}
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetReadDeadline(dl)
	}
	// Cancellation (the front's client went away, Shutdown) unblocks the read as well.
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	var st [1]byte
	_, err = io.ReadFull(c, st[:])
	if !stop() && err == nil {
		err = ctx.Err() // the deadline may have been set under us: do not hand c out
	}
	if err != nil {
		c.Close()
		code := ReplyGeneralFailure
		if isTimeout(err) || ctx.Err() != nil {
			code = ReplyTTLExpired
			err = fmt.Errorf("no status from exit within %v: %w", timeout, err)
		} else if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			err = fmt.Errorf("exit closed the flow without a status (not an mpath exit?): %w", err)
		}
		return nil, &ReplyError{Code: code, Err: fmt.Errorf("tunnel dial %s: %w", target, err)}
	}
	c.SetReadDeadline(time.Time{})
	if s := Status(st[0]); s != StatusOK {
		c.Close()
		xerr := &ExitError{Status: s, Reason: "exit", Err: errors.New(s.String())}
		var err error = xerr
		if s == StatusBadAuth {
			err = fmt.Errorf("%w: %w", ErrExitAuth, xerr)
			if d.Logger != nil {
				d.Logger.Error("exit rejected authentication: check that client and exit use the same key and that their clocks agree",
					zap.String("target", target))
			}
		}
		return nil, &ReplyError{Code: s.SOCKSReply(), Err: fmt.Errorf("tunnel dial %s: %w", target, err)}
	}
	return c, nil
}

// DirectDialer dials targets with the kernel's TCP from this host (direct mode, tests),
// resolving names locally, and maps dial errors to *ReplyError. The zero value works.
// Safe for concurrent use.
type DirectDialer struct {
	Timeout time.Duration // DefaultTunnelTimeout when 0
	// Dial replaces net.Dialer.DialContext when set.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// DialTarget implements Dialer.
func (d *DirectDialer) DialTarget(ctx context.Context, target string) (net.Conn, error) {
	if _, _, err := splitTarget(target); err != nil {
		return nil, &ReplyError{Code: ReplyGeneralFailure, Err: fmt.Errorf("direct dial: %w", err)}
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = DefaultTunnelTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dial := d.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	c, err := dial(ctx, "tcp", target)
	if err != nil {
		return nil, &ReplyError{Code: dialStatus(err).SOCKSReply(), Err: fmt.Errorf("direct dial %s: %w", target, err)}
	}
	return c, nil
}

// dialStatus maps a kernel dial error to the status (and SOCKS reply) it deserves.
func dialStatus(err error) Status {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return StatusRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return StatusNetUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN), errors.As(err, &dnsErr):
		return StatusHostUnreachable
	case isTimeout(err):
		return StatusTimeout
	}
	return StatusGeneralFailure
}
