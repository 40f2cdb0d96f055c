package socks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
)

// SOCKS5 reply codes (RFC 1928 section 6).
const (
	ReplySucceeded            byte = 0x00
	ReplyGeneralFailure       byte = 0x01
	ReplyNotAllowed           byte = 0x02
	ReplyNetUnreachable       byte = 0x03
	ReplyHostUnreachable      byte = 0x04
	ReplyRefused              byte = 0x05
	ReplyTTLExpired           byte = 0x06
	ReplyCommandNotSupported  byte = 0x07
	ReplyAddrTypeNotSupported byte = 0x08
)

var replyText = [...]string{
	"succeeded",
	"general failure",
	"connection not allowed by ruleset",
	"network unreachable",
	"host unreachable",
	"connection refused",
	"TTL expired (timed out)",
	"command not supported",
	"address type not supported",
}

// ReplyText returns the RFC 1928 meaning of a SOCKS5 reply code.
func ReplyText(code byte) string {
	if int(code) < len(replyText) {
		return replyText[code]
	}
	return fmt.Sprintf("reply code %d", code)
}

// ReplyError is an error from a Dialer that says which SOCKS5 reply the fronts should
// give. Code is a SOCKS5 reply code 1..8. The HTTP front maps ReplyNotAllowed to 403,
// ReplyTTLExpired (and any timeout) to 504, and everything else to 502.
type ReplyError struct {
	Code byte
	Err  error
}

func (e *ReplyError) Error() string {
	if e.Err == nil {
		return ReplyText(e.Code)
	}
	return fmt.Sprintf("%s: %v", ReplyText(e.Code), e.Err)
}

func (e *ReplyError) Unwrap() error { return e.Err }

// Timeout reports whether the error is a timeout (code 06), for net.Error-style checks.
func (e *ReplyError) Timeout() bool { return e.Code == ReplyTTLExpired }

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("socks: server closed")

// replyCode returns the SOCKS5 reply code for a Dialer error: the code of a *ReplyError,
// 06 for a timeout, 01 for anything else.
func replyCode(err error) byte {
	var re *ReplyError
	if errors.As(err, &re) && re.Code != ReplySucceeded {
		return re.Code
	}
	if isTimeout(err) {
		return ReplyTTLExpired
	}
	return ReplyGeneralFailure
}

// isTimeout reports whether err is a deadline or timeout error.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
