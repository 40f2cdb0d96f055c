package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"text/tabwriter"
)

// Info describes a lab as found on the machine: what its state file recorded and what
// actually exists.
type Info struct {
	Prefix     string
	Recorded   bool   // a state file exists
	Config     Config // from the state file (zero when not Recorded)
	Namespaces []NSInfo
	Relays     []RelayInfo
}

// NSInfo is one namespace of a lab and the IPv4 addresses on its interfaces.
type NSInfo struct {
	Name  string
	Addrs []string // "dev addr/len"
}

// RelayInfo is one relay process the state file recorded.
type RelayInfo struct {
	Path  int
	PID   int
	Alive bool
}

// Status inspects the lab with this prefix. A prefix with no namespaces and no state
// file gives an Info with nothing in it, not an error.
func Status(prefix string) (Info, error) {
	info := Info{Prefix: prefix}
	if !prefixRE.MatchString(prefix) {
		return info, fmt.Errorf("lab status: %w: prefix %q", errConfig, prefix)
	}
	b, err := os.ReadFile(stateFile(prefix))
	switch {
	case err == nil:
		var st state
		if err := json.Unmarshal(b, &st); err != nil {
			return info, fmt.Errorf("lab status: %s: %w", stateFile(prefix), err)
		}
		info.Recorded = true
		info.Config = st.Config
		for i, pid := range st.RelayPIDs {
			info.Relays = append(info.Relays, RelayInfo{Path: i + 1, PID: pid, Alive: alive(pid) && inNamespace(pid, fmt.Sprintf("%s-r%d", prefix, i+1))})
		}
	case !errors.Is(err, os.ErrNotExist):
		return info, fmt.Errorf("lab status: %w", err)
	}
	nss, err := labNamespaces(prefix)
	if err != nil {
		return info, fmt.Errorf("lab status: %w", err)
	}
	order := func(n string) string { // client, relays by number, exit
		s := strings.TrimPrefix(n, prefix+"-")
		switch {
		case s == "c":
			return "0"
		case s == "x":
			return "9"
		}
		return fmt.Sprintf("5%05s", s[1:])
	}
	sort.Slice(nss, func(a, b int) bool { return order(nss[a]) < order(nss[b]) })
	for _, ns := range nss {
		ni := NSInfo{Name: ns}
		out, err := exec.Command("ip", "-n", ns, "-j", "-4", "addr", "show").Output()
		if err == nil {
			var links []struct {
				IfName   string `json:"ifname"`
				AddrInfo []struct {
					Local     string `json:"local"`
					PrefixLen int    `json:"prefixlen"`
				} `json:"addr_info"`
			}
			if json.Unmarshal(out, &links) == nil {
				for _, l := range links {
					for _, a := range l.AddrInfo {
						if strings.HasPrefix(a.Local, "127.") {
							continue
						}
						ni.Addrs = append(ni.Addrs, fmt.Sprintf("%s %s/%d", l.IfName, a.Local, a.PrefixLen))
					}
				}
			}
		}
		info.Namespaces = append(info.Namespaces, ni)
	}
	return info, nil
}

// Up reports whether anything of the lab exists.
func (i Info) Up() bool { return i.Recorded || len(i.Namespaces) > 0 }

// Print writes a human-readable summary.
func (i Info) Print(w io.Writer) {
	if !i.Up() {
		fmt.Fprintf(w, "lab %q: not running\n", i.Prefix)
		return
	}
	fmt.Fprintf(w, "lab %q", i.Prefix)
	if i.Recorded {
		fmt.Fprintf(w, ": base 10.%d.0.0/16, %d paths, relay mode %s\n", i.Config.Base, len(i.Config.Paths), i.Config.RelayMode)
	} else {
		fmt.Fprintf(w, ": no state file (left over from a crash? run 'mpath lab down --prefix %s')\n", i.Prefix)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tADDRESSES")
	for _, ns := range i.Namespaces {
		fmt.Fprintf(tw, "%s\t%s\n", ns.Name, strings.Join(ns.Addrs, ", "))
	}
	tw.Flush()
	if i.Recorded {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PATH\tCLIENT\tRELAY\tEXIT\tRATE\tIMPAIR\tRELAY PID")
		l := &Lab{cfg: i.Config}
		for n, p := range i.Config.Paths {
			_, cl, cr := l.ClientPath(n + 1)
			_, xl, xr := l.ExitPath(n + 1)
			rate := p.Rate
			if rate == "" {
				rate = "unlimited"
			}
			pid := "-"
			if n < len(i.Relays) {
				r := i.Relays[n]
				pid = fmt.Sprintf("%d (dead)", r.PID)
				if r.Alive {
					pid = fmt.Sprintf("%d", r.PID)
				}
			}
			fmt.Fprintf(tw, "%d\tc%d %s\t%s | %s\tx%d %s\t%s\t%s\t%s\n", n+1, n+1, cl, cr, xr, n+1, xl, rate,
				p.impairSpec(i.Config.Seed+int64(n+1)), pid)
		}
		tw.Flush()
	}
}

// inNamespace reports whether process pid is in network namespace ns.
func inNamespace(pid int, ns string) bool {
	for _, p := range nsPIDs(ns) {
		if p == pid {
			return true
		}
	}
	return false
}
