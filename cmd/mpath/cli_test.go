package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"mpath/lab/labtest"
	"mpath/socks"
)

// runMpath runs the built binary with args (and env added to the environment) and
// returns its stdout, stderr and exit status.
func runMpath(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runCmd(t, env, append([]string{labtest.Mpath(t)}, args...)...)
}

func runCmd(t *testing.T, env []string, argv ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return o.String(), e.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", argv, err)
	}
	return o.String(), e.String(), 0
}

// oneLineError checks that stderr is exactly one line naming the command and (for
// usage errors) pointing at its --help.
func oneLineError(t *testing.T, stderr, role string, usage bool) {
	t.Helper()
	if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
		t.Errorf("stderr is not one line:\n%s", stderr)
	}
	if !strings.HasPrefix(stderr, "mpath "+role+": ") && !strings.HasPrefix(stderr, "mpath: ") {
		t.Errorf("stderr does not start with the command: %q", stderr)
	}
	hint := "(see 'mpath " + role + " --help')\n"
	if usage != strings.HasSuffix(stderr, hint) {
		t.Errorf("usage error %v, stderr %q", usage, stderr)
	}
}

// TestUsageErrors: bad flags, arguments and values exit 2 with one line on stderr, no
// usage dump, nothing on stdout. None of these needs root or touches the network: the
// scheduler typo, the endpoint and the log flags are checked before any socket.
func TestUsageErrors(t *testing.T) {
	path := "dev=lo,relay=127.0.0.2"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"client", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"client", "--direct", "--path", path, "--scheduler", "atuo", "--no-guard"}, `--scheduler "atuo": want one of auto, weighted, rr`},
		{[]string{"client", "--direct", "--path", path, "--metrics", "0.0.0.0:9464"}, "add --metrics-public"},
		{[]string{"client", "--direct", "--path", path, "--pprof", "192.0.2.1:6060"}, "add --pprof-public"},
		{[]string{"client", "--direct", "--path", path, "--log-level", "loud"}, `--log-level "loud"`},
		{[]string{"client", "--direct", "--path", path, "--log-format", "xml"}, `--log-format "xml"`},
		{[]string{"client", "--direct", "--path", path, "--mss", "100"}, "--mss 100: want 536..8940"},
		{[]string{"client", "--direct", "--path", "dev=lo"}, "relay= is required"},
		{[]string{"client", "--direct"}, "at least one --path"},
		{[]string{"client", "--path", path}, "--exit is required"},
		{[]string{"client", "--direct", "--path", path, "extra"}, `unexpected argument "extra"`},
		{[]string{"client", "--keepalive", "long"}, `invalid value "long" for flag -keepalive`},
		{[]string{"exit", "--listen", "10.0.0.1", "--psk-file", "/nonexistent"}, `--listen "10.0.0.1": want IPv4:port`},
		{[]string{"relay"}, "--allow, or --allow-from and --allow-to, are required"},
		{[]string{"relay", "--allow", "10.0.0.0/8", "--mode", "sideways"}, "--mode"},
		{[]string{"relay", "--allow", "10.0.0.0/8", "--metrics", ":9466"}, "add --metrics-public"},
		{[]string{"status", "--watch", "-1s"}, "must not be negative"},
		{[]string{"genkey", "a", "b"}, "at most one FILE"},
		{[]string{"lab"}, "want a subcommand"},
		{[]string{"bench"}, "want exactly one URL"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stdout, stderr, code := runMpath(t, nil, tc.args...)
			if code != 2 {
				t.Errorf("exit status %d, want 2; stderr %q", code, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q lacks %q", stderr, tc.want)
			}
			oneLineError(t, stderr, tc.args[0], true)
		})
	}
	t.Run("unknown command", func(t *testing.T) {
		_, stderr, code := runMpath(t, nil, "clinet")
		if code != 2 || stderr != "mpath: unknown command \"clinet\" (see 'mpath --help')\n" {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
}

// TestHelp: --help goes to stdout, exits 0, and shows placeholders, not types or
// examples.
func TestHelp(t *testing.T) {
	for _, role := range []string{"client", "exit", "relay", "status", "genkey", "version", "demo", "bench", "lab"} {
		stdout, stderr, code := runMpath(t, nil, role, "--help")
		if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "usage: mpath "+role) {
			t.Errorf("%s --help: exit %d, stderr %q, stdout %.80q", role, code, stderr, stdout)
		}
		if role == "client" || role == "exit" || role == "relay" {
			for _, want := range []string{"--config FILE", "MPATH_<FLAG>", "Precedence: command line, then\nenvironment, then file",
				"--metrics ADDR", "--log-format FORMAT"} {
				if !strings.Contains(stdout, want) {
					t.Errorf("%s --help lacks %q", role, want)
				}
			}
		}
		if role == "client" {
			for _, want := range []string{"--keepalive DURATION", "--mss BYTES", "--scheduler NAME", "--path dev=IFACE,relay=ADDR"} {
				if !strings.Contains(stdout, want) {
					t.Errorf("client --help lacks %q", want)
				}
			}
			for _, bad := range []string{"-keepalive long", "-scheduler auto", "(bytes)"} {
				if strings.Contains(stdout, bad) {
					t.Errorf("client --help has %q", bad)
				}
			}
			if m := regexp.MustCompile(`\n  -[a-z]`).FindString(stdout); m != "" {
				t.Errorf("client --help has a single-dash flag %q", m)
			}
		}
	}
	stdout, _, code := runMpath(t, nil, "--help")
	if code != 0 || !strings.Contains(stdout, "genkey") || !strings.Contains(stdout, "version") {
		t.Errorf("mpath --help: exit %d\n%s", code, stdout)
	}
}

// TestConfigFile: the file sets flags; its errors name the file and line.
func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		role, text, want string
	}{
		{"client", "# comment\ndirect\nscheduler atuo\n", "--scheduler \"atuo\""},
		{"client", "direct\n\npaht dev=lo,relay=127.0.0.2\n", "client.conf:3: unknown flag \"paht\""},
		{"client", "direct\nmss=abc\n", "client.conf:2: mss: parse error"},
		{"client", "direct\nmss\n", "client.conf:2: mss needs a value"},
		{"client", "config other.conf\n", "client.conf:1: a configuration file cannot name another"},
		{"exit", "listen 10.0.0.1:7000\npsk-file /x\npath relay=10.0.0.2\n", "client.conf:3: path: path \"relay=10.0.0.2\": dev= is required"},
		{"relay", "allow 10.0.0.0/8\nmetrics 0.0.0.0:1\n", "add --metrics-public"},
		{"relay", "allow 10.0.0.0/8\nmode sideways\n", "--mode"},
	} {
		file := write("client.conf", tc.text)
		_, stderr, code := runMpath(t, nil, tc.role, "--config", file)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s with %q: exit %d, stderr %q, want 2 and %q", tc.role, tc.text, code, stderr, tc.want)
		}
		oneLineError(t, stderr, tc.role, true)
	}
	_, stderr, code := runMpath(t, nil, "client", "--config", filepath.Join(dir, "missing.conf"))
	if code != 2 || !strings.Contains(stderr, "missing.conf: no such file") {
		t.Errorf("missing file: exit %d, stderr %q", code, stderr)
	}
	// The environment names the variable; MPATH_CONFIG names the file.
	_, stderr, code = runMpath(t, []string{"MPATH_MSS=big"}, "client", "--direct")
	if code != 2 || !strings.Contains(stderr, "$MPATH_MSS: parse error") {
		t.Errorf("MPATH_MSS=big: exit %d, stderr %q", code, stderr)
	}
	file := write("env.conf", "direct\nscheduler typo\n")
	_, stderr, code = runMpath(t, []string{"MPATH_CONFIG=" + file}, "client", "--path", "dev=lo,relay=127.0.0.2")
	if code != 2 || !strings.Contains(stderr, `--scheduler "typo"`) {
		t.Errorf("MPATH_CONFIG: exit %d, stderr %q", code, stderr)
	}
}

// TestPrecedence: command line over environment over file, for plain and repeatable
// flags.
func TestPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.conf")
	text := "scheduler rr\nmss 1000\nports 50000-50100\npath dev=f1,relay=10.0.0.1\npath dev=f2,relay=10.0.0.2\nno-guard\n"
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		args    []string
		sched   string
		mss     int
		ports   string
		paths   string
		noGuard bool
	}{
		{"file only", nil, nil, "rr", 1000, "50000-50100", "f1 f2", true},
		{"env over file", map[string]string{"MPATH_SCHEDULER": "weighted", "MPATH_PATH": "dev=e1,relay=10.0.1.1 dev=e2,relay=10.0.1.2 dev=e3,relay=10.0.1.3",
			"MPATH_NO_GUARD": "false"}, nil, "weighted", 1000, "50000-50100", "e1 e2 e3", false},
		{"flags over env and file", map[string]string{"MPATH_SCHEDULER": "weighted", "MPATH_MSS": "1200", "MPATH_PATH": "dev=e1,relay=10.0.1.1"},
			[]string{"--scheduler", "auto", "--path", "dev=c1,relay=10.0.2.1"}, "auto", 1200, "50000-50100", "c1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			fs := newFlagSet("client", "", "")
			var ef engineFlags
			ef.register(fs, defaultClientMetrics)
			if err := parseFlags(fs, append([]string{"--config", file}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			var devs []string
			for _, p := range ef.paths {
				devs = append(devs, p.dev)
			}
			if ef.scheduler != tc.sched || ef.mss != tc.mss || ef.ports != tc.ports || strings.Join(devs, " ") != tc.paths || ef.noGuard != tc.noGuard {
				t.Errorf("scheduler %s mss %d ports %s paths %v no-guard %v; want %s %d %s %s %v",
					ef.scheduler, ef.mss, ef.ports, devs, ef.noGuard, tc.sched, tc.mss, tc.ports, tc.paths, tc.noGuard)
			}
		})
	}
}

// TestGenkey: the key is 64 hex digits that socks.LoadKey accepts, the file is 0600
// whatever the umask, and an existing file is never overwritten.
func TestGenkey(t *testing.T) {
	file := filepath.Join(t.TempDir(), "psk")
	stdout, stderr, code := runMpath(t, nil, "genkey", file)
	if code != 0 || stdout != "" || stderr != "" {
		t.Fatalf("genkey FILE: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	key, err := socks.LoadKey(file)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).Match(key) {
		t.Errorf("key %q is not 64 hex digits", key)
	}
	_, stderr, code = runMpath(t, nil, "genkey", file)
	if code != 1 || !strings.Contains(stderr, "exists: not overwriting") {
		t.Errorf("second genkey: exit %d, stderr %q", code, stderr)
	}
	oneLineError(t, stderr, "genkey", false)
	if again, _ := socks.LoadKey(file); !bytes.Equal(again, key) {
		t.Error("the key file changed")
	}
	out1, _, _ := runMpath(t, nil, "genkey")
	out2, _, _ := runMpath(t, nil, "genkey")
	if !regexp.MustCompile(`^[0-9a-f]{64}\n$`).MatchString(out1) || out1 == out2 {
		t.Errorf("genkey to stdout: %q, %q", out1, out2)
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		stdout, _, code := runMpath(t, nil, args...)
		if code != 0 || !regexp.MustCompile(`(?m)^mpath \S+\ncommit \S+\nbuilt \S+\ngo1\.\S+ linux/`).MatchString(stdout) {
			t.Errorf("%v: exit %d\n%s", args, code, stdout)
		}
	}
}

// TestCapabilityHint runs the client and relay as an unprivileged user without
// capabilities (setpriv): the permission error names the capability and how to grant it.
// Validation still comes first: a bad --scheduler is a usage error, not EPERM.
func TestCapabilityHint(t *testing.T) {
	labtest.RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("skipping: setpriv not installed (util-linux)")
	}
	dir, err := os.MkdirTemp("", "mpath-cap-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "mpath")
	b, err := os.ReadFile(labtest.Mpath(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	nobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", bin}
	// --no-guard and --metrics off: nothing else is tried before the raw sockets.
	path := "dev=lo,relay=127.0.0.2"
	_, stderr, code := runCmd(t, nil, append(nobody, "client", "--direct", "--path", path, "--scheduler", "atuo", "--no-guard", "--metrics", "off")...)
	if code != 2 || !strings.Contains(stderr, "--scheduler") {
		t.Errorf("unprivileged bad --scheduler: exit %d, stderr %q", code, stderr)
	}
	for _, args := range [][]string{
		{"client", "--direct", "--path", path, "--no-guard", "--metrics", "off", "--log-level", "error"},
		{"relay", "--allow", "10.0.0.0/8", "--no-guard", "--metrics", "off", "--log-level", "error"},
	} {
		_, stderr, code := runCmd(t, nil, append(nobody, args...)...)
		if code != 1 || !strings.Contains(stderr, "missing capability CAP_NET_RAW") || !strings.Contains(stderr, "setcap cap_net_raw,cap_net_admin+ep") {
			t.Errorf("%s as nobody: exit %d, stderr %q", args[0], code, stderr)
		}
		oneLineError(t, stderr, args[0], false)
	}
	// CAP_NET_RAW alone: the raw sockets open, the nftables guard is refused.
	netRaw := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all,+net_raw",
		"--ambient-caps=-all,+net_raw", "--bounding-set=-all,+net_raw", bin}
	_, stderr, code = runCmd(t, nil, append(netRaw, "relay", "--allow", "10.0.0.0/8", "--metrics", "off", "--log-level", "error")...)
	if code != 1 || !strings.Contains(stderr, "missing capability CAP_NET_ADMIN") {
		t.Errorf("relay with CAP_NET_RAW only: exit %d, stderr %q", code, stderr)
	}
}

// TestStatusAllScrapesFailed: --watch with --count exits non-zero when no scrape
// answered.
func TestStatusAllScrapesFailed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	var out bytes.Buffer
	err = statusMain([]string{"--metrics", addr, "--watch", "5ms", "--count", "2"}, &out, false)
	if err == nil || !strings.Contains(err.Error(), "none answered") {
		t.Errorf("err = %v\n%s", err, out.String())
	}
}

// TestSdNotify: READY=1 arrives on $NOTIFY_SOCKET; without it nothing is sent.
func TestSdNotify(t *testing.T) {
	if err := sdNotify("READY=1"); os.Getenv("NOTIFY_SOCKET") == "" && err != nil {
		t.Fatalf("no socket: %v", err)
	}
	sock := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	if err := sdNotify("READY=1"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Errorf("got %q, %v", buf[:n], err)
	}
}

// TestEndpointCheck: loopback is allowed, anything else needs the public flag.
func TestEndpointCheck(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		public bool
		ok     bool
	}{
		{"127.0.0.1:9464", false, true}, {"[::1]:9464", false, true}, {"localhost:9464", false, true},
		{"127.1.2.3:1", false, true}, {":9464", false, false}, {"0.0.0.0:9464", false, false},
		{"10.1.1.1:9464", false, false}, {"example.net:9464", false, false}, {"10.1.1.1:9464", true, true},
		{"9464", false, false}, {"", false, true},
	} {
		err := checkEndpoint("metrics", tc.addr, tc.public)
		if (err == nil) != tc.ok || (err != nil && !isUsageError(err)) {
			t.Errorf("%q public=%v: %v", tc.addr, tc.public, err)
		}
	}
}

// TestParsePath covers host names and the required keys.
func TestParsePath(t *testing.T) {
	p, err := parsePath("dev=wan1,relay=relay-1.example.net,weight=3")
	if err != nil || p.relayName != "relay-1.example.net" || p.relay.IsValid() || p.weight != 3 {
		t.Errorf("host name: %+v, %v", p, err)
	}
	p, err = parsePath("dev=wan1,relay=192.0.2.7")
	if err != nil || p.relay != netip.MustParseAddr("192.0.2.7") {
		t.Errorf("address: %+v, %v", p, err)
	}
	for _, bad := range []string{"relay=192.0.2.7", "dev=x,relay=2001:db8::1", "dev=x,relay=bad_name", "dev=x,relay=1.2.3.4,weight=0", "dev=x,relay=1.2.3.4,colour=red"} {
		if _, err := parsePath(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	// localhost resolves without a DNS server (/etc/hosts).
	paths := pathList{{dev: "lo", relayName: "localhost"}}
	if err := resolvePaths(paths); err != nil || !paths[0].relay.IsLoopback() {
		t.Errorf("resolve localhost: %v %v", paths[0].relay, err)
	}
}

// TestHelpErr: parseArgs returns flag.ErrHelp for -h and prints to the set's output.
func TestHelpErr(t *testing.T) {
	fs := newFlagSet("status", "", "")
	var b bytes.Buffer
	fs.SetOutput(&b)
	fs.String("metrics", "", "`ADDR`")
	if err := parseArgs(fs, []string{"-h"}); err != flag.ErrHelp || !strings.Contains(b.String(), "--metrics ADDR") {
		t.Errorf("err %v, output %q", err, b.String())
	}
	b.Reset()
	if err := parseArgs(fs, []string{"--nope"}); !isUsageError(err) || b.Len() != 0 {
		t.Errorf("err %v, output %q", err, b.String())
	}
	_ = io.Discard
}
