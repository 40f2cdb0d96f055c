package raw

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"

	"mpath/raw/rawtest"
)

func TestInstanceTableNames(t *testing.T) {
	pid := os.Getpid()
	a, b := InstanceTable(""), InstanceTable("relay")
	if !strings.HasPrefix(a, fmt.Sprintf("mpath_%d", pid)) || !strings.HasPrefix(b, fmt.Sprintf("mpath_relay_%d", pid)) || a == b {
		t.Errorf("names %q %q", a, b)
	}
	if c := InstanceTable(""); c == a {
		t.Errorf("two guards of one process get the same name %q", c)
	}
	alive := func(pid int) bool { return pid == 1 }
	for _, tc := range []struct {
		name  string
		pid   int
		stale bool
	}{
		{"mpath_4000000", 4000000, true},
		{"mpath_relay_4000000", 4000000, true},
		{"mpath_client_4000000_3", 4000000, true},
		{"mpath_1", 1, false},
		{"mpath_relay_1_2", 1, false},
		{fmt.Sprintf("mpath_%d", pid), pid, false},
		{"mpath", 0, true},
		{"mpath_relay", 0, true},
		{"mpath_x_y", 0, false},
		{"mpath_12a", 0, false},
		{"mpath_1_2_3", 0, false},
		{"mpathy_4000000", 0, false},
		{"filter", 0, false},
		{"mpath_", 0, false},
	} {
		p, _ := tablePID(tc.name)
		if p != tc.pid || staleTable(tc.name, alive) != tc.stale {
			t.Errorf("%s: pid %d stale %v, want %d %v", tc.name, p, staleTable(tc.name, alive), tc.pid, tc.stale)
		}
	}
}

// Two guards with default names, one in another process, coexist in one namespace (two
// clients, or a client and an exit, on one host); a stale instance table left by a dead
// process and a legacy "mpath" table are removed; a live process's table stays.
func TestGuardsCoexist(t *testing.T) {
	rawtest.SkipUnlessRoot(t)
	ns := rawtest.NewNetns(t, "rawt")
	// Left behind by processes that are gone (4194305 is above any pid_max) and by an
	// older version; and one of a live process (pid 1), unowned as on an old kernel.
	for _, name := range []string{"mpath_4194305", "mpath_relay_4194306_2", "mpath", "mpath_1"} {
		ns.MustRun(t, "nft", "add", "table", "ip", name)
	}
	t.Cleanup(func() { ns.Command("nft", "delete", "table", "ip", "mpath_1").Run() })

	cmd := ns.Command(os.Args[0], "-test.run=^TestGuardChildProcess$")
	cmd.Env = append(os.Environ(), guardChildEnv+"=auto")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 3 || f[0] != "ready" {
		t.Fatalf("child: %q %v", line, err)
	}
	childTable := f[2]

	var g1, g2 *Guard
	if err := ns.Do(func() (err error) {
		if g1, err = NewGuard(GuardConfig{Ports: []PortRange{{61000, 61999}}}); err != nil {
			return err
		}
		g2, err = NewGuard(GuardConfig{Ports: []PortRange{{62000, 62999}}})
		return err
	}); err != nil {
		t.Fatalf("second guard on the host: %v", err)
	}
	defer g1.Close()
	defer g2.Close()
	out := ns.MustRun(t, "nft", "list", "tables")
	for _, want := range []string{childTable, g1.Table(), g2.Table(), "mpath_1"} {
		if !strings.Contains(out, "table ip "+want+"\n") {
			t.Errorf("table %s missing:\n%s", want, out)
		}
	}
	for _, gone := range []string{"mpath_4194305", "mpath_relay_4194306_2", "mpath"} {
		if strings.Contains(out, "table ip "+gone+"\n") {
			t.Errorf("stale table %s not removed:\n%s", gone, out)
		}
	}
	if g1.Table() == childTable || g2.Table() == childTable || g1.Table() == g2.Table() {
		t.Errorf("names collide: %s %s %s", childTable, g1.Table(), g2.Table())
	}
	// Each guard's rules are its own.
	if o := ns.MustRun(t, "nft", "list", "table", "ip", g2.Table()); !strings.Contains(o, "62000-62999") || strings.Contains(o, "61000") {
		t.Errorf("second guard's table:\n%s", o)
	}
}
