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

// MinKeyBytes is the randomness a key file must hold: 32 bytes (256 bits).
const MinKeyBytes = 32

// ErrWeakKey is returned by LoadKey for a key holding less than MinKeyBytes of
// randomness.
var ErrWeakKey = errors.New("key too short or not random")

// LoadKey reads a pre-shared exit key from a file. The key is the file's first line,
// without its line ending ("\n" or "\r\n"), used as it is (the MAC key is those bytes,
// not their decoding), so every key that worked before still works the same way where it
// is strong enough. How much randomness the line holds is judged by its alphabet:
//
//	only hex digits                  4 bits a character: 64 characters for 32 bytes
//	only base64 (std or URL, '=')    6 bits a character: 43 characters for 32 bytes
//	anything else (raw bytes)        8 bits a byte:      32 bytes
//
// and a line with fewer than 10 distinct characters is refused whatever its length
// ("aaaa...", "0101..."). `mpath genkey FILE` writes a key that passes; so does
// `head -c 32 /dev/urandom | xxd -p -c 64 > FILE` (hex) or `openssl rand -base64 32`.
func LoadKey(path string) ([]byte, error) {
	k, err := firstLine(path)
	if err != nil {
		return nil, fmt.Errorf("load key: %w", err)
	}
	if n := keyStrength(k); n < MinKeyBytes {
		return nil, fmt.Errorf("load key: %s holds about %d random bytes, want at least %d: %w; make one with: mpath genkey %s",
			path, n, MinKeyBytes, ErrWeakKey, path)
	}
	return []byte(k), nil
}

// keyStrength estimates the random bytes in a key line from its alphabet (see LoadKey);
// 0 for a line with fewer than 10 distinct characters.
func keyStrength(k string) int {
	var seen [256]bool
	distinct := 0
	hex, b64 := true, true
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !seen[c] {
			seen[c] = true
			distinct++
		}
		isHex := '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
		isB64 := '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' ||
			c == '+' || c == '/' || c == '-' || c == '_'
		hex = hex && isHex
		b64 = b64 && (isB64 || c == '=' && i >= len(k)-2)
	}
	if distinct < 10 {
		return 0
	}
	switch {
	case hex:
		return len(k) / 2
	case b64:
		return len(strings.TrimRight(k, "=")) * 6 / 8
	}
	return len(k)
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
