package tcp

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

var (
	errEOF         = io.EOF
	errWriteClosed = errors.New("tcp: write after CloseWrite")

	// ErrRefused: the peer answered the SYN with a reset (nothing listens there).
	ErrRefused = syscall.ECONNREFUSED
	// ErrReset: the peer reset an established connection.
	ErrReset = syscall.ECONNRESET
	// ErrTimeout: the peer stopped acknowledging for longer than the user timeout.
	ErrTimeout = syscall.ETIMEDOUT
	// ErrNoPath: every path is marked down; nothing can be sent.
	ErrNoPath = syscall.ENETUNREACH
	// ErrAborted: the local side reset the connection (Close with unread data, stack shut down).
	ErrAborted = syscall.ECONNABORTED
	// ErrPortsExhausted: no free local port in the engine's range for that destination.
	ErrPortsExhausted = syscall.EADDRNOTAVAIL
	// ErrAddrInUse: Listen on a port that already has a listener.
	ErrAddrInUse = syscall.EADDRINUSE
	// ErrNoMemory: the stack's memory budget has no room for another connection.
	ErrNoMemory = syscall.ENOBUFS
)

// timeoutError is returned when a deadline passes; it matches os.ErrDeadlineExceeded.
type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
func (timeoutError) Is(err error) bool {
	return err == os.ErrDeadlineExceeded
}

var errDeadline error = timeoutError{}

var _ net.Error = timeoutError{}
