package benchlab

// The "uplinks" scenario (issue 9): what people really add up, access links behind NAT.
// The lab is lab/uplinks.sh (the topology TestRealUplinks runs in), built with iproute2,
// tc and nftables only:
//
//	P-cli wan<w> 192.168.w.2 ── P-isp<w> (masquerade to 100.64.w.2; ISP Drop4 drops IP protocol 4)
//	                             └── P-core ── P-exit 100.64.9.2: mpath exit (no --path), Apache :80,
//	                                                              MPTCP server :8081, sink :8082
//
// tbf limits the uplinks only (both directions). mpath: a client with one relay-less
// path per uplink (--path dev=wan<w>) and a learning exit, with the row's encapsulation.
// Kernel MPTCP: curl under mptcpize from uplink 1's address, one subflow endpoint per
// other uplink (ip mptcp endpoint add 192.168.w.2 dev wan<w> subflow), through the
// same NATs. Best single uplink: kernel TCP from uplink 1's address. The bytes each
// ISP router's LAN side carried (both directions) give the split over the uplinks.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"mpath/lab"
)

// The uplinks lab's fixed addresses (lab/uplinks.sh).
const (
	upExitAddr    = "100.64.9.2"
	upExitMetrics = "127.0.0.1:9091"
	upCliMetrics  = "127.0.0.1:9090"
)

// uplinkRow is one row of the uplinks table: a topology and mpath's encapsulation.
type uplinkRow struct {
	n     int    // uplinks
	drop4 int    // the uplink whose ISP drops IP protocol 4 (0: none)
	encap string // mpath's --encap
}

func buildUplinks(q bool) []*Table {
	t := &Table{ID: "uplinks", Scenario: "uplinks", Chart: "bars", RowHead: "uplinks, direction",
		Title:   "10 Mbit/s uplinks, each behind its own masquerading ISP router: mpath vs kernel MPTCP vs the best single uplink",
		Systems: []string{sysMpath, sysMPTCP, sysSingle},
		Target:  "mpath >= 90% of the sum of the uplink rates, download and upload",
		Note: "lab/uplinks.sh: tbf on the uplinks only (both directions), no added delay. Rows: number of uplinks, " +
			"mpath's --encap, direction; in the udp rows ISP 2 drops IP protocol 4, in the ipip rows every ISP passes it. " +
			"mpath: relay-less paths (--path dev=wan<i>) to a learning exit (no --path) through the SOCKS5 front. MPTCP: curl under mptcpize from " +
			"uplink 1's address to an MPTCP server beside the exit, one subflow endpoint per other uplink, through the " +
			"same NATs. Best single uplink: kernel TCP from uplink 1 (the uplinks are equal). paths used: bytes on each " +
			"ISP router's LAN side."}
	col := "NATed uplinks"
	t.Cols = []string{col}
	rows := pick(q, []uplinkRow{{2, 2, "udp"}, {2, 0, "ipip"}, {3, 2, "udp"}}, uplinkRow{2, 2, "udp"})
	x := 0
	for _, ur := range rows {
		topo := Topo{Paths: ur.n, NAT: true, Drop4: ur.drop4}
		for _, up := range pick(q, []bool{false, true}, false) {
			dir := "download"
			if up {
				dir = "upload"
			}
			row := uplinksRow(ur.n, ur.encap, dir)
			t.Rows = append(t.Rows, row)
			m := Measure{System: sysMpath, Kind: kindMpath, Scheduler: "auto", Encap: ur.encap, Upload: up}
			mp := Measure{System: sysMPTCP, Kind: kindMPTCP, Upload: up}
			k := Measure{System: sysSingle, Kind: kindKernel, Path: 1, Upload: up}
			addCell(t, topo, &Cell{Row: row, Col: col, X: float64(x), Series: col, Nodes: ur.n, Rates: repeatRate(ur.n, mbit10)}, m, mp, k)
			x++
		}
	}
	return []*Table{t}
}

// uplinksRow names a row short enough for the chart's axis: "2 x 10 udp, download".
func uplinksRow(n int, encap, dir string) string { return fmt.Sprintf("%d x 10 %s, %s", n, encap, dir) }

// uplinksFindings: mpath against the target, MPTCP and the best single uplink, per row.
func uplinksFindings(t *Table) []string {
	var out []string
	for _, c := range t.Cells {
		m, mp, single := c.Runs[sysMpath], c.Runs[sysMPTCP], c.Runs[sysSingle]
		f := frac(c, m)
		line := fmt.Sprintf("%s: mpath %s of the sum (target 90%%: %s), MPTCP %s, best single uplink %s",
			c.Row, pct(f), met(f >= 0.90), pct(frac(c, mp)), pct(frac(c, single)))
		if m != nil && mp != nil && m.Err == "" && mp.Err == "" && mp.KBps > 0 {
			line += fmt.Sprintf("; mpath = %.2f x MPTCP", m.KBps/mp.KBps)
		}
		if m != nil && len(m.PathBytes) > 1 {
			var sh []string
			for _, s := range m.Shares() {
				sh = append(sh, fmt.Sprintf("%.0f", 100*s))
			}
			line += fmt.Sprintf("; mpath's split over the uplinks %s%%", strings.Join(sh, "/"))
		}
		out = append(out, line)
	}
	return out
}

// uplinkLab is a running lab/uplinks.sh topology with its servers and nodes.
type uplinkLab struct {
	prefix   string
	key      string // topology and rates it was built for
	n        int    // uplinks
	client   *lab.Proc
	exit     *lab.Proc
	nodesKey string
	endpts   bool // MPTCP subflow endpoints configured
}

func (u *uplinkLab) cliNS() string      { return u.prefix + "-cli" }
func (u *uplinkLab) exitNS() string     { return u.prefix + "-exit" }
func (u *uplinkLab) ispNS(w int) string { return u.prefix + "-isp" + strconv.Itoa(w) }

// clientNS is the namespace curl runs in.
func (r *runner) clientNS() string {
	if r.up != nil {
		return r.up.cliNS()
	}
	return r.lab.ClientNS()
}

// exitAddr is the address of the exit host's servers.
func (r *runner) exitAddr() string {
	if r.up != nil {
		return upExitAddr
	}
	return r.lab.ExitAddr().String()
}

// pathAddr is the client's address on path (or uplink) i, for curl --interface.
func (r *runner) pathAddr(i int) string {
	if r.up != nil {
		return fmt.Sprintf("192.168.%d.2", i)
	}
	_, a, _ := r.lab.ClientPath(i)
	return a.String()
}

// measureUplinks prepares the uplinks lab for c and m and measures once.
func (r *runner) measureUplinks(ctx context.Context, c *Cell, m Measure) (*Outcome, error) {
	run := &Outcome{System: m.System}
	fail := func(err error) (*Outcome, error) {
		run.Err = err.Error()
		return run, err
	}
	if m.CPU || m.Kind == kindTTFB {
		return fail(fmt.Errorf("the uplinks lab measures transfers only, without CPU"))
	}
	if err := r.ensureUplinks(ctx, c); err != nil {
		return fail(err)
	}
	switch m.Kind {
	case kindMpath:
		if err := r.ensureUplinkNodes(ctx, c, m); err != nil {
			return fail(err)
		}
	case kindMPTCP:
		if err := r.ensureUplinkEndpoints(ctx); err != nil {
			return fail(err)
		}
	}
	return r.transfer(ctx, c, m)
}

// ensureUplinks makes the current lab the uplinks topology of c, rebuilding it when it
// is not: lab/uplinks.sh, Apache and the servers in the exit namespace, MPTCP limits.
func (r *runner) ensureUplinks(ctx context.Context, c *Cell) error {
	var rates []string
	for _, v := range c.Rates[:c.topo.Paths] {
		rates = append(rates, strconv.FormatInt(v*8, 10)+"bit")
	}
	key := c.topo.key() + " " + strings.Join(rates, ",")
	if r.up != nil && r.up.key == key {
		return nil
	}
	r.closeLab()
	t0 := time.Now()
	u := &uplinkLab{prefix: r.opt.Prefix + "u", key: key, n: c.topo.Paths}
	_ = lab.Uplinks(ctx, "down", u.prefix) // a lab left by a crash
	if err := lab.Uplinks(ctx, "up", u.prefix, strings.Join(rates, ","), "1", strconv.Itoa(c.topo.Drop4)); err != nil {
		return fmt.Errorf("uplinks lab up: %w", err)
	}
	r.up = u
	exit := netip.MustParseAddr(upExitAddr)
	var err error
	if r.apache, err = lab.StartApache(ctx, u.exitNS(), exit, 80, r.docroot); err != nil {
		return fmt.Errorf("uplinks lab: %w", err)
	}
	if r.srv, err = startServers(u.exitNS(), exit, r.docroot); err != nil {
		return fmt.Errorf("uplinks lab: %w", err)
	}
	for _, ns := range []string{u.cliNS(), u.exitNS()} {
		if err := runCmd(ctx, "ip", "-n", ns, "mptcp", "limits", "set", "subflow", "8", "add_addr_accepted", "8"); err != nil {
			return fmt.Errorf("uplinks lab: mptcp limits: %w", err)
		}
	}
	// Unmeasured warm-up: a small download over every uplink (neighbour discovery, the
	// NATs' first mappings).
	f, err := r.fileOf(1000)
	if err != nil {
		return err
	}
	for w := 1; w <= u.n; w++ {
		var err error
		for try := 0; try < 3; try++ {
			err = runCmd(ctx, "ip", "netns", "exec", u.cliNS(), "curl", "-sS", "--fail", "-o", "/dev/null", "--max-time", "10",
				"--interface", r.pathAddr(w), r.apache.URL(f.name))
			if err == nil || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("uplinks lab: uplink %d does not carry a kernel TCP download: %w", w, err)
		}
	}
	if r.res.TCPCongestion == "" {
		_ = lab.Do(u.cliNS(), func() error {
			b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
			r.res.TCPCongestion = strings.TrimSpace(string(b))
			return err
		})
	}
	r.printf("  uplinks lab %q up: %d NATed uplinks at %s, ISP %d drops IP protocol 4 (0: none); Apache and the MPTCP server in %s (%.1f s)\n",
		u.prefix, u.n, strings.Join(rates, ","), c.topo.Drop4, u.exitNS(), time.Since(t0).Seconds())
	return nil
}

// ensureUplinkNodes (re)starts the learning exit and a client with one relay-less path
// per uplink, with m's encapsulation.
func (r *runner) ensureUplinkNodes(ctx context.Context, c *Cell, m Measure) error {
	u := r.up
	nk := m.nodesKey(c.Nodes)
	if u.client != nil && u.nodesKey == nk && !u.client.Exited() && !u.exit.Exited() {
		return nil
	}
	u.stopNodes()
	psk := filepath.Join(r.logs, "psk")
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	if err := os.WriteFile(psk, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return err
	}
	encap := m.Encap
	if encap == "" {
		encap = "ipip"
	}
	common := []string{"--psk-file", psk, "--encap", encap, "--scheduler", m.Scheduler, "--drain", "2s"}
	var err error
	u.exit, err = lab.StartProc(u.exitNS(), "exit", filepath.Join(r.logs, "exit.log"), r.opt.Bin,
		append([]string{"exit", "--listen", upExitAddr + ":7000", "--metrics", upExitMetrics}, common...)...)
	if err != nil {
		return fmt.Errorf("mpath nodes: %w", err)
	}
	if err := waitLogLine(ctx, u.exit, "exit ready"); err != nil {
		u.stopNodes()
		return fmt.Errorf("mpath nodes: %w", err)
	}
	args := append([]string{"client", "--exit", upExitAddr + ":7000", "--socks", lab.ClientSOCKS, "--metrics", upCliMetrics}, common...)
	for w := 1; w <= c.Nodes; w++ {
		args = append(args, "--path", fmt.Sprintf("dev=wan%d", w))
	}
	u.client, err = lab.StartProc(u.cliNS(), "client", filepath.Join(r.logs, "client.log"), r.opt.Bin, args...)
	if err != nil {
		u.stopNodes()
		return fmt.Errorf("mpath nodes: %w", err)
	}
	if err := waitLogLine(ctx, u.client, "client ready"); err != nil {
		u.stopNodes()
		return fmt.Errorf("mpath nodes: %w", err)
	}
	u.nodesKey = nk
	return nil
}

// waitLogLine polls p's log until it contains s (at most 20 s), failing early when p
// exits.
func waitLogLine(ctx context.Context, p *lab.Proc, s string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(p.Log)
		if strings.Contains(string(b), s) {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("mpath %s exited during startup (log %s)", p.Name, p.Log)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mpath %s did not log %q in 20 s (log %s)", p.Name, s, p.Log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // poll interval, not synchronisation
		}
	}
}

// ensureUplinkEndpoints gives the client one MPTCP subflow endpoint per uplink after the
// first, bound to its device.
func (r *runner) ensureUplinkEndpoints(ctx context.Context) error {
	u := r.up
	if u.endpts {
		return nil
	}
	if err := runCmd(ctx, "ip", "-n", u.cliNS(), "mptcp", "endpoint", "flush"); err != nil {
		return fmt.Errorf("mptcp endpoints: %w", err)
	}
	for w := 2; w <= u.n; w++ {
		if err := runCmd(ctx, "ip", "-n", u.cliNS(), "mptcp", "endpoint", "add", r.pathAddr(w), "dev", "wan"+strconv.Itoa(w), "subflow"); err != nil {
			return fmt.Errorf("mptcp endpoints: %w", err)
		}
	}
	u.endpts = true
	return nil
}

func (u *uplinkLab) stopNodes() {
	for _, p := range []*lab.Proc{u.client, u.exit} {
		if p != nil {
			p.Stop(5 * time.Second)
		}
	}
	u.client, u.exit, u.nodesKey = nil, nil, ""
}

// closeUplinks stops the nodes and removes the uplinks lab (the caller closes Apache and
// the servers first).
func (r *runner) closeUplinks() {
	if r.up == nil {
		return
	}
	r.up.stopNodes()
	if err := lab.Uplinks(context.Background(), "down", r.up.prefix); err != nil {
		r.printf("bench lab: %v (run 'bash lab/uplinks.sh down %s')\n", err, r.up.prefix)
	}
	r.up = nil
}

// uplinkBytes reads the bytes each ISP router's LAN side moved (both directions, the
// client's end of each uplink). A counter that cannot be read gives nil.
func (u *uplinkLab) uplinkBytes(ctx context.Context) []uint64 {
	out := make([]uint64, u.n)
	for w := 1; w <= u.n; w++ {
		b, err := exec.CommandContext(ctx, "ip", "-n", u.ispNS(w), "-s", "-j", "link", "show", "dev", "lan").Output()
		if err != nil {
			return nil
		}
		v, err := parseLinkBytes(b)
		if err != nil {
			return nil
		}
		out[w-1] = v
	}
	return out
}

// parseLinkBytes sums the received and sent bytes of `ip -s -j link show dev X`.
func parseLinkBytes(b []byte) (uint64, error) {
	var links []struct {
		Stats struct {
			RX struct {
				Bytes uint64 `json:"bytes"`
			} `json:"rx"`
			TX struct {
				Bytes uint64 `json:"bytes"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(b, &links); err != nil {
		return 0, fmt.Errorf("ip -s -j link: %w", err)
	}
	if len(links) != 1 {
		return 0, fmt.Errorf("ip -s -j link: %d links", len(links))
	}
	return links[0].Stats.RX.Bytes + links[0].Stats.TX.Bytes, nil
}
