package socks

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
)

// ErrOpenProxy is returned by CheckListen for a non-loopback listen address without
// authentication.
var ErrOpenProxy = errors.New("refusing to listen on a non-loopback address without authentication (set a user, or force it)")

// CheckListen refuses a non-loopback listen address ("host:port") without authentication
// unless force is set. An empty host, an unspecified address (0.0.0.0, ::) and any name
// other than "localhost" count as non-loopback.
func CheckListen(addr string, auth bool, force bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("check listen address %q: %w", addr, err)
	}
	if auth || force || isLoopbackHost(host) {
		return nil
	}
	return fmt.Errorf("check listen address %q: %w", addr, ErrOpenProxy)
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// LoadUsers returns the user table for the fronts: nil (no authentication) when user and
// passwordFile are both empty, else {user: password} with the password read from the
// first line of passwordFile (without its line ending). RFC 1929 limits both to 1..255
// bytes.
func LoadUsers(user, passwordFile string) (map[string]string, error) {
	if user == "" && passwordFile == "" {
		return nil, nil
	}
	if user == "" || passwordFile == "" {
		return nil, errors.New("load users: a user needs a password file and a password file a user")
	}
	if len(user) > 255 {
		return nil, errors.New("load users: user name longer than 255 bytes")
	}
	pw, err := firstLine(passwordFile)
	if err != nil {
		return nil, fmt.Errorf("load users: %w", err)
	}
	if len(pw) == 0 || len(pw) > 255 {
		return nil, fmt.Errorf("load users: password in %s must be 1..255 bytes", passwordFile)
	}
	return map[string]string{user: pw}, nil
}

// LoadKey reads a pre-shared exit key from a file: its first line, without the line
// ending, at least MinKeyLen bytes.
func LoadKey(path string) ([]byte, error) {
	k, err := firstLine(path)
	if err != nil {
		return nil, fmt.Errorf("load key: %w", err)
	}
	if len(k) < MinKeyLen {
		return nil, fmt.Errorf("load key: key in %s is shorter than %d bytes", path, MinKeyLen)
	}
	return []byte(k), nil
}

func firstLine(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	line, _, err := bufio.NewReader(bytes.NewReader(b)).ReadLine()
	if err != nil {
		return "", fmt.Errorf("%s: empty", path)
	}
	return string(line), nil
}

// userTable checks username/password pairs in constant time (for equal-length inputs
// and independent of where they differ: both sides are hashed first). Safe for
// concurrent use (read-only).
type userTable map[string][sha256.Size]byte

func newUserTable(users map[string]string) userTable {
	if len(users) == 0 {
		return nil
	}
	t := make(userTable, len(users))
	for u, p := range users {
		t[u] = sha256.Sum256([]byte(p))
	}
	return t
}

func (t userTable) valid(user, password string) bool {
	want, ok := t[user]
	if !ok {
		// Do the same work for unknown users.
		want = [sha256.Size]byte{}
	}
	got := sha256.Sum256([]byte(password))
	return subtle.ConstantTimeCompare(want[:], got[:]) == 1 && ok
}
