package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

const genkeyMore = `
The key is 32 random bytes written as 64 hex digits on one line: the format --psk-file
reads (client and exit use the same file). With FILE it is created with mode 0600 (its
directory must exist) and an existing file is never overwritten; without FILE the key
goes to stdout.

Examples:
  install -d -m 0700 /etc/mpath && mpath genkey /etc/mpath/psk
  mpath genkey | ssh exit.example.net 'umask 077; cat > /etc/mpath/psk'
`

func init() {
	register("genkey", "make a pre-shared key for --psk-file (mode 0600, never overwrites)", runGenkey)
}

func runGenkey(args []string) error {
	fs := newFlagSet("genkey", "[FILE]", genkeyMore)
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usageErrorf("want at most one FILE, got %d arguments", fs.NArg())
	}
	if fs.NArg() == 0 {
		return writeKey(os.Stdout)
	}
	return genkeyFile(fs.Arg(0))
}

// genkeyFile writes a new key to a file that must not exist yet, mode 0600.
func genkeyFile(name string) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists: not overwriting a key (remove it first to replace it)", name)
	}
	if err != nil {
		return err
	}
	if err := writeKey(f); err != nil {
		f.Close()
		os.Remove(name)
		return err
	}
	return f.Close()
}

// writeKey writes 32 random bytes as hex and a newline.
func writeKey(w io.Writer) error {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return fmt.Errorf("random key: %w", err)
	}
	_, err := fmt.Fprintf(w, "%s\n", hex.EncodeToString(k[:]))
	return err
}
