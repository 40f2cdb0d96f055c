package relay

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// GuardTable is the nftables table (family ip) the relay's guard owns.
const GuardTable = "mpath_relay"

// NFTGuard keeps the host kernel away from the IPIP the relay handles: without an ipip
// module the kernel would answer every IPIP packet addressed to the host with ICMP
// protocol-unreachable, and with one it would decapsulate a second copy. AF_PACKET
// captures before netfilter, so the relay still sees the packets the guard drops.
//
// It drives the nft command (one atomic transaction each way). A table left by a crashed
// relay is replaced at the next start. Not safe for concurrent use.
type NFTGuard struct {
	installed bool
}

// InstallGuard replaces any stale guard table and installs one that drops inbound IPIP
// addressed to this host from the allowed sources (and from anyone else: strangers'
// IPIP must not draw ICMP either).
func InstallGuard(allow Allowlist) (*NFTGuard, error) {
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, fmt.Errorf("relay: guard: %w (apt-get install nftables)", err)
	}
	// Protocol 4 by number: nft's name "ipip" is protocol 94 (/etc/protocols), IPIP's
	// name there is "ipencap".
	script := fmt.Sprintf(`table ip %[1]s
delete table ip %[1]s
table ip %[1]s {
	chain input {
		type filter hook input priority -300; policy accept;
		ip protocol 4 ip saddr { %[2]s } counter drop comment "allowed IPIP: the relay captured it"
		ip protocol 4 counter drop comment "stranger IPIP: dropped, never answered"
	}
}
`, GuardTable, strings.Join(strings.Split(allow.String(), ","), ", "))
	if err := nft(script); err != nil {
		return nil, fmt.Errorf("relay: guard: install: %w", err)
	}
	return &NFTGuard{installed: true}, nil
}

// Remove deletes the guard table. Calling it twice is fine.
func (g *NFTGuard) Remove() error {
	if g == nil || !g.installed {
		return nil
	}
	g.installed = false
	if err := nft(fmt.Sprintf("table ip %[1]s\ndelete table ip %[1]s\n", GuardTable)); err != nil {
		return fmt.Errorf("relay: guard: remove: %w", err)
	}
	return nil
}

func nft(script string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// KernelTunnels lists the network devices of this host (namespace) that are kernel IPIP
// tunnels (ARPHRD_TUNNEL, 768, such as tunl0). Where one exists the kernel decapsulates
// IPIP too, and the inner packets would arrive twice.
func KernelTunnels() []string {
	ents, _ := os.ReadDir("/sys/class/net")
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/sys/class/net", e.Name(), "type"))
		if err == nil && strings.TrimSpace(string(b)) == "768" {
			out = append(out, e.Name())
		}
	}
	return out
}
