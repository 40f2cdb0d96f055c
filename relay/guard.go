package relay

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"mpath/raw"
)

// GuardTable returns the name of the nftables table (family ip) a relay guard of this
// process owns: mpath_relay_<pid>, so relays and engines share a host.
func GuardTable() string { return raw.InstanceTable("relay") }

// InstallGuard installs raw's nftables guard for the relay: inbound IPIP from the
// allowed sources is dropped in prerouting, after AF_PACKET captured it. Without it the
// kernel would answer every such packet with ICMP protocol-unreachable (no ipip module)
// or decapsulate a second copy (with one). The table is owned by the process: the kernel
// removes it when the process ends, however it ends; Close removes it earlier.
//
// IPIP from sources outside --allow is not dropped by the guard: the relay drops and
// counts it, and the kernel may answer it with ICMP if it has a route back.
func InstallGuard(allow Allowlist) (*raw.Guard, error) { return InstallGuardEncap(allow, 0) }

// InstallGuardEncap is InstallGuard that also drops inbound UDP to udpPort (the
// encapsulation port, 0: none), which the kernel would answer with ICMP port
// unreachable.
func InstallGuardEncap(allow Allowlist, udpPort uint16) (*raw.Guard, error) {
	g, err := raw.NewGuard(raw.GuardConfig{Table: GuardTable(), IPIPSources: allow.Prefixes(), UDPPort: udpPort})
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	return g, nil
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
