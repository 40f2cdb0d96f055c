package socks_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"mpath/socks"
)

// randomLine returns n random bytes without line breaks (a raw key line).
func randomLine(t *testing.T, n int) []byte {
	b := make([]byte, 0, n)
	for len(b) < n {
		var c [1]byte
		rand.Read(c[:])
		if c[0] != '\n' && c[0] != '\r' {
			b = append(b, c[0])
		}
	}
	return b
}

func TestLoadKeyStrength(t *testing.T) {
	r := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	for _, tc := range []struct {
		name string
		file []byte
		ok   bool
	}{
		{"hex 32 bytes", []byte(hex.EncodeToString(r(32)) + "\n"), true},
		{"hex 32 bytes CRLF", []byte(hex.EncodeToString(r(32)) + "\r\n"), true},
		{"hex upper 32 bytes", []byte(strings.ToUpper(hex.EncodeToString(r(32)))), true},
		{"hex 31 bytes", []byte(hex.EncodeToString(r(31)) + "\n"), false},
		{"base64 32 bytes", []byte(base64.StdEncoding.EncodeToString(r(32)) + "\n"), true},
		{"base64url raw 32 bytes", []byte(base64.RawURLEncoding.EncodeToString(r(32)) + "\n"), true},
		{"base64 24 bytes", []byte(base64.StdEncoding.EncodeToString(r(24)) + "\n"), false},
		{"raw 32 bytes", append(randomLine(t, 32), '\n'), true},
		{"raw 31 bytes", append(randomLine(t, 31), '\n'), false},
		{"16-byte text", []byte("0123456789abcdef\n"), false},
		{"the old 20-character test key", []byte("0123456789abcdef0123\n"), false},
		{"long but repetitive", []byte(strings.Repeat("ab", 64) + "\n"), false},
		{"long but few symbols", []byte(strings.Repeat("0123456", 20) + "\n"), false},
		{"a passphrase of 45 characters", []byte("correct horse battery staple, eleven quokkas!\n"), true},
		{"empty", []byte("\n"), false},
	} {
		p := filepath.Join(t.TempDir(), "key")
		if err := os.WriteFile(p, tc.file, 0o600); err != nil {
			t.Fatal(err)
		}
		k, err := socks.LoadKey(p)
		if (err == nil) != tc.ok {
			t.Errorf("%s: LoadKey = %v, want ok=%v", tc.name, err, tc.ok)
			continue
		}
		if err != nil {
			if tc.name != "empty" && (!errors.Is(err, socks.ErrWeakKey) || !strings.Contains(err.Error(), "mpath genkey "+p)) {
				t.Errorf("%s: error %q does not name `mpath genkey %s`", tc.name, err, p)
			}
			continue
		}
		want := bytes.TrimRight(tc.file, "\r\n")
		if !bytes.Equal(k, want) {
			t.Errorf("%s: key %q, want the first line as it is %q", tc.name, k, want)
		}
	}
}
