package lab

import (
	"context"
	_ "embed" // the uplinks topology script
	"fmt"
	"os"
	"path/filepath"
)

// uplinksScript is lab/uplinks.sh: the NATed-uplinks topology (a client with several
// access links, each behind its own ISP router doing masquerade NAT, an exit behind a
// core router), built with iproute2, tc and nftables only. lab/e2e TestRealUplinks runs
// the file itself; `mpath bench --lab uplinks` runs this copy of it.
//
//go:embed uplinks.sh
var uplinksScript []byte

// Uplinks runs lab/uplinks.sh with args ("up PREFIX RATES [CLIENTS [DROP4]]", "rebind
// PREFIX" or "down PREFIX"; see the script's header) and returns its output in the
// error when it fails.
func Uplinks(ctx context.Context, args ...string) error {
	dir, err := os.MkdirTemp("", "mpath-uplinks-")
	if err != nil {
		return fmt.Errorf("uplinks: %w", err)
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "uplinks.sh")
	if err := os.WriteFile(p, uplinksScript, 0o755); err != nil {
		return fmt.Errorf("uplinks: %w", err)
	}
	return run(ctx, "bash", append([]string{p}, args...)...)
}
