package e2e

// The systemd units in contrib/systemd, as far as a machine without systemd as init can
// check them:
//
//	TestServiceUnitsVerify    systemd-analyze verify accepts each unit without a warning
//	TestServiceUnprivileged   client, relays and exit each run as a non-root user holding
//	                          exactly the capabilities its unit grants (read from the unit:
//	                          AmbientCapabilities, CapabilityBoundingSet, NoNewPrivileges),
//	                          started through setpriv as systemd would, configured by a
//	                          config file in the units' format with the key as a 0400 file
//	                          of that user; each reports READY=1 on $NOTIFY_SOCKET
//	                          (Type=notify); a download through client -> relays -> exit
//	                          is byte-exact; and the exit refuses to start with any one of
//	                          those capabilities taken away (so none of them is spare).
//
// What this does not check: the units' sandboxing (ProtectSystem, SystemCallFilter, ...),
// which only systemd applies.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mpath/lab"
	"mpath/lab/labtest"
	"mpath/socks/sockstest"
)

// serviceUID is the user the roles run as: like a DynamicUser, it has no entry in
// /etc/passwd and no supplementary groups.
const serviceUID = 61873

// unitCaps is what a unit grants its process.
type unitCaps struct {
	ambient, bounding []string // lower-case names without "cap_", e.g. "net_raw"
	noNewPrivs        bool
	dynamicUser       bool
}

// readUnit parses the [Service] section of contrib/systemd/mpath-<role>.service.
func readUnit(t *testing.T, role string) unitCaps {
	t.Helper()
	path := filepath.Join("..", "..", "contrib", "systemd", "mpath-"+role+".service")
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("unit: %v", err)
	}
	defer f.Close()
	var u unitCaps
	caps := func(v string) []string {
		var out []string
		for _, c := range strings.Fields(v) {
			out = append(out, strings.TrimPrefix(strings.ToLower(c), "cap_"))
		}
		slices.Sort(out)
		return out
	}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if section != "[Service]" || !ok || strings.HasPrefix(line, "#") {
			continue
		}
		switch k {
		case "AmbientCapabilities":
			u.ambient = caps(v)
		case "CapabilityBoundingSet":
			u.bounding = caps(v)
		case "NoNewPrivileges":
			u.noNewPrivs = v == "yes" || v == "true"
		case "DynamicUser":
			u.dynamicUser = v == "yes" || v == "true"
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("unit %s: %v", path, err)
	}
	if !u.dynamicUser || len(u.ambient) == 0 {
		t.Fatalf("unit %s: want DynamicUser=yes and AmbientCapabilities (got %+v)", path, u)
	}
	return u
}

// capMask is the /proc/PID/status hex mask of caps.
func capMask(t *testing.T, caps []string) uint64 {
	t.Helper()
	bits := map[string]uint{"net_admin": unix.CAP_NET_ADMIN, "net_raw": unix.CAP_NET_RAW,
		"net_bind_service": unix.CAP_NET_BIND_SERVICE, "sys_admin": unix.CAP_SYS_ADMIN}
	var m uint64
	for _, c := range caps {
		b, ok := bits[c]
		if !ok {
			t.Fatalf("capability %q: add it to capMask", c)
		}
		m |= 1 << b
	}
	return m
}

// wrapper writes an executable script in dir that runs bin as serviceUID with u's
// capabilities (what systemd does for the unit) and $NOTIFY_SOCKET set to notify.
func wrapper(t *testing.T, dir, name, bin, notify string, u unitCaps) string {
	t.Helper()
	list := func(caps []string) string {
		s := "-all"
		for _, c := range caps {
			s += ",+" + c
		}
		return s
	}
	args := []string{"setpriv", "--reuid=" + strconv.Itoa(serviceUID), "--regid=" + strconv.Itoa(serviceUID),
		"--clear-groups", "--inh-caps=" + list(u.ambient), "--ambient-caps=" + list(u.ambient),
		"--bounding-set=" + list(u.bounding)}
	if u.noNewPrivs {
		args = append(args, "--no-new-privs")
	}
	script := fmt.Sprintf("#!/bin/sh\nNOTIFY_SOCKET=%s\nexport NOTIFY_SOCKET\nexec %s %s \"$@\"\n",
		notify, strings.Join(args, " "), bin)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// notifySocket listens for sd_notify datagrams at path (writable by serviceUID) and
// reports each as "PID message" on the returned channel, the sender's PID taken from
// its SCM_CREDENTIALS as systemd does.
func notifySocket(t *testing.T, path string) <-chan string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, serviceUID, serviceUID); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Shutdown(fd, unix.SHUT_RDWR); unix.Close(fd) })
	ch := make(chan string, 16)
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 256)
		for {
			n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
			if err != nil || n == 0 {
				close(ch)
				return
			}
			pid := 0
			if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, m := range msgs {
					if cred, err := unix.ParseUnixCredentials(&m); err == nil {
						pid = int(cred.Pid)
					}
				}
			}
			ch <- fmt.Sprintf("%d %s", pid, buf[:n])
		}
	}()
	return ch
}

// waitReady waits for a READY=1 notification from each of pids.
func waitReady(t *testing.T, ch <-chan string, pids ...int) {
	t.Helper()
	want := map[int]bool{}
	for _, p := range pids {
		want[p] = true
	}
	timeout := time.After(readyTimeout)
	for len(want) > 0 {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatal("notify socket closed")
			}
			pid, msg, _ := strings.Cut(m, " ")
			p, _ := strconv.Atoi(pid)
			if slices.Contains(strings.Split(msg, "\n"), "READY=1") {
				delete(want, p)
			}
		case <-timeout:
			t.Fatalf("no READY=1 on $NOTIFY_SOCKET from pids %v within %v (Type=notify needs it)", want, readyTimeout)
		}
	}
}

// checkCreds fails the test unless process pid runs as serviceUID with exactly u's
// capabilities (effective, permitted, ambient, bounding) and no_new_privs as u says.
func checkCreds(t *testing.T, who string, pid int, u unitCaps) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("%s: %v", who, err)
	}
	f := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			f[k] = strings.TrimSpace(v)
		}
	}
	uid := strconv.Itoa(serviceUID)
	if got := strings.Fields(f["Uid"]); len(got) != 4 || slices.ContainsFunc(got, func(s string) bool { return s != uid }) {
		t.Errorf("%s: Uid %q, want %s everywhere", who, f["Uid"], uid)
	}
	want := map[string]uint64{"CapEff": capMask(t, u.ambient), "CapPrm": capMask(t, u.ambient),
		"CapAmb": capMask(t, u.ambient), "CapBnd": capMask(t, u.bounding)}
	for k, w := range want {
		got, err := strconv.ParseUint(f[k], 16, 64)
		if err != nil || got != w {
			t.Errorf("%s: %s %s, want %016x", who, k, f[k], w)
		}
	}
	if nnp := f["NoNewPrivs"] == "1"; nnp != u.noNewPrivs {
		t.Errorf("%s: NoNewPrivs %s, unit says %v", who, f["NoNewPrivs"], u.noNewPrivs)
	}
}

func TestServiceUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("skipping: systemd-analyze not installed (apt-get install systemd)")
	}
	bin := mpathBin(t)
	dir := t.TempDir()
	units, _ := filepath.Glob(filepath.Join("..", "..", "contrib", "systemd", "*.service"))
	if len(units) != 3 {
		t.Fatalf("want 3 units in contrib/systemd, found %v", units)
	}
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		// verify checks that ExecStart's binary exists: point it at the one under test.
		b = []byte(strings.ReplaceAll(string(b), "/usr/local/bin/mpath", bin))
		p := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		// verify exits 0 on unknown keys and unparsable values, only printing them.
		out, err := exec.Command(analyze, "verify", p).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", filepath.Base(u), err, out)
		}
	}
}

func TestServiceUnprivileged(t *testing.T) {
	labtest.RequireRoot(t)
	needTool(t, "setpriv", "util-linux")
	units := map[string]unitCaps{}
	for _, r := range []string{"client", "exit", "relay"} {
		units[r] = readUnit(t, r)
	}

	// A directory serviceUID can traverse, holding the binary, the wrappers, the notify
	// sockets, the configuration and the key (t.TempDir is 0700 root).
	dir, err := os.MkdirTemp("", "mpath-service-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "mpath")
	copyFile(t, mpathBin(t), bin, 0o755)
	notify := map[string]<-chan string{}
	wrap := map[string]string{}
	for r, u := range units {
		sock := filepath.Join(dir, "notify-"+r)
		notify[r] = notifySocket(t, sock)
		wrap[r] = wrapper(t, dir, "run-"+r, bin, sock, u)
	}

	// Two paths; the relays are started by the lab through the relay unit's wrapper.
	paths := []lab.PathSpec{{Rate: "20mbit", Delay: 2 * time.Millisecond}, {Rate: "20mbit", Delay: 4 * time.Millisecond}}
	l := labtest.New(t, lab.Config{Paths: paths, MpathBin: wrap["relay"]})
	relayPIDs := make([]int, l.N())
	for i := range relayPIDs {
		relayPIDs[i] = l.RelayPID(i + 1)
		checkCreds(t, fmt.Sprintf("relay %d", i+1), relayPIDs[i], units["relay"])
	}
	waitReady(t, notify["relay"], relayPIDs...)

	// The key as the credential the units load: a file only serviceUID can read.
	psk := writeSecret(t, dir, "psk")
	if err := os.Chown(psk, serviceUID, serviceUID); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(psk, 0o400); err != nil {
		t.Fatal(err)
	}
	xa := l.ExitAddr().String()
	exitConf := []string{fmt.Sprintf("listen %s:%d", xa, exitPort)}
	clientConf := []string{fmt.Sprintf("exit %s:%d", xa, exitPort), "socks " + socksAddr, "addr " + l.ClientAddr().String()}
	for i := 1; i <= l.N(); i++ {
		dev, _, relay := l.ExitPath(i)
		exitConf = append(exitConf, fmt.Sprintf("path dev=%s,relay=%s", dev, relay))
		dev, _, relay = l.ClientPath(i)
		clientConf = append(clientConf, fmt.Sprintf("path dev=%s,relay=%s", dev, relay))
	}
	writeConf := func(name string, lines []string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	exitArgs := []string{"exit", "--config", writeConf("exit.conf", exitConf), "--psk-file", psk, drainFlag}
	clientArgs := []string{"client", "--config", writeConf("client.conf", clientConf), "--psk-file", psk, drainFlag}

	// None of the exit unit's capabilities is spare: without any one of them it must
	// refuse to start.
	for _, drop := range units["exit"].ambient {
		u := units["exit"]
		u.ambient = slices.DeleteFunc(slices.Clone(u.ambient), func(c string) bool { return c == drop })
		w := wrapper(t, dir, "run-exit-without-"+drop, bin, filepath.Join(dir, "notify-exit"), u)
		p := startProc(t, l.ExitNS(), "exit-without-"+drop, append([]string{w}, exitArgs...)...)
		select {
		case <-p.done:
		case <-time.After(readyTimeout):
			t.Fatalf("exit without cap_%s still running after %v; log:\n%s", drop, readyTimeout, lastLines(p.log(), 20))
		}
		lg := strings.ToLower(p.log())
		if p.exitCode() == 0 || strings.Contains(lg, "exit ready") ||
			!(strings.Contains(lg, "cap_"+drop) || strings.Contains(lg, "operation not permitted")) {
			t.Fatalf("exit without cap_%s: exit code %d, want a failure for want of it; log:\n%s", drop, p.exitCode(), lastLines(p.log(), 20))
		}
		t.Logf("exit without cap_%s refuses to start: %s", drop, lastLines(p.log(), 1))
	}

	startGoHTTP(t, l.ExitNS(), xa+":80", false)
	exit := startProc(t, l.ExitNS(), "exit", append([]string{wrap["exit"]}, exitArgs...)...)
	exit.waitLog(t, "exit ready", readyTimeout)
	waitReady(t, notify["exit"], exit.cmd.Process.Pid)
	checkCreds(t, "exit", exit.cmd.Process.Pid, units["exit"])

	// A client with another key gets nothing from the exit, as the README's troubleshooting
	// says: the exit drops a SYN whose request does not verify before keeping anything and
	// answers nothing (issue 10), counted as syn_bad_mac; the client gives up at its dial
	// timeout with SOCKS reply 06 and "no answer" in its log.
	wrong := writeSecret(t, dir, "psk-wrong")
	if err := os.Chown(wrong, serviceUID, serviceUID); err != nil {
		t.Fatal(err)
	}
	wrongArgs := slices.Clone(clientArgs)
	wrongArgs[slices.Index(wrongArgs, psk)] = wrong
	bad := startProc(t, l.ClientNS(), "client-wrong-key", append([]string{wrap["client"]}, wrongArgs...)...)
	bad.waitLog(t, "client ready", readyTimeout)
	var se *socksError
	if c, err := socksDial(l.ClientNS(), socksAddr, "", "", xa+":80", 15*time.Second); !errors.As(err, &se) || se.code != 6 {
		if c != nil {
			c.Close()
		}
		t.Fatalf("client with the wrong key: %v, want SOCKS reply 06 (no answer from the exit)", err)
	}
	bad.waitLog(t, "no answer", readyTimeout)
	if ended, err := bad.stop(syscall.SIGTERM, 10*time.Second); !ended || err != nil {
		t.Fatalf("client with the wrong key on SIGTERM: ended %v, %v", ended, err)
	}
	if n := metric(labtest.ParseMetrics(labtest.Get(t, l.ExitNS(), "127.0.0.1:9465", "/metrics")), "mpath_exit_refused_total", `reason="syn_bad_mac"`); n < 1 {
		t.Errorf("exit: mpath_exit_refused_total{reason=\"syn_bad_mac\"} = %v after a wrong key", n)
	}

	client := startProc(t, l.ClientNS(), "client", append([]string{wrap["client"]}, clientArgs...)...)
	client.waitLog(t, "client ready", readyTimeout)
	waitReady(t, notify["client"], client.cmd.Process.Pid)
	checkCreds(t, "client", client.cmd.Process.Pid, units["client"])

	const size, seed = 8 << 20, 12
	c, err := socksDial(l.ClientNS(), socksAddr, "", "", xa+":80", 15*time.Second)
	if err != nil {
		t.Fatalf("socks: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	start := time.Now()
	code, n, sum, err := httpGet(c, xa, payloadURL(size, seed), nil)
	if err != nil || code != 200 {
		t.Fatalf("download: status %d, %v", code, err)
	}
	if want := sockstest.PayloadSHA256(size, seed); n != size || sum != want {
		t.Fatalf("download: %d bytes sha256 %s, want %d bytes %s", n, sum, int64(size), want)
	}
	t.Logf("8 MiB through client -> 2 relays -> exit, every role unprivileged: %s, sha256 ok", fmtRate(n, time.Since(start)))
	for i := 1; i <= l.N(); i++ {
		fwd := metric(labtest.RelayMetrics(t, l, i), "mpath_relay_forwarded_packets_total")
		if fwd == 0 {
			t.Errorf("relay %d forwarded nothing: the download did not use every path", i)
		}
	}

	// The Grafana dashboard reads only metric families the roles serve (on their default
	// loopback ports: nothing in the units or configs sets --metrics).
	served := map[string]bool{}
	for _, text := range []string{labtest.Get(t, l.ClientNS(), "127.0.0.1:9464", "/metrics"),
		labtest.Get(t, l.ExitNS(), "127.0.0.1:9465", "/metrics"), labtest.Get(t, l.RelayNS(1), l.RelayMetricsAddr(1), "/metrics")} {
		for name := range labtest.ParseMetrics(text) {
			family, _, _ := strings.Cut(name, "{")
			served[family] = true
		}
	}
	dash, err := os.ReadFile(filepath.Join("..", "..", "contrib", "grafana", "mpath.json"))
	if err != nil {
		t.Fatal(err)
	}
	used := regexp.MustCompile(`\b(?:mpath|go|process)_[a-z_]+`).FindAllString(string(dash), -1)
	if len(used) < 20 {
		t.Fatalf("dashboard: %d metric references, want the dashboard's queries", len(used))
	}
	for _, m := range used {
		if !served[m] && !strings.HasSuffix(m, "_") {
			t.Errorf("contrib/grafana/mpath.json queries %s, which no role serves", m)
		}
	}

	// SIGTERM, as systemctl stop sends: both end by themselves, exit status 0.
	for _, p := range []*proc{client, exit} {
		if ended, err := p.stop(syscall.SIGTERM, 10*time.Second); !ended || err != nil {
			t.Errorf("%s on SIGTERM: ended %v, %v", p.name, ended, err)
		}
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
