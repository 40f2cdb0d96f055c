package e2e

// The README's "Deploying on real uplinks" (a) commands, run as printed: the test reads
// the section's code blocks from README.md (so the README cannot drift from what is
// tested), builds the section's picture in namespaces with the picture's addresses (a
// laptop with two uplinks, each behind a masquerading NAT, ISP 2 dropping IP protocol 4,
// a VPS behind an internet router) and runs the VPS block in the VPS namespace and the
// laptop block in the laptop namespace. The only substitutions are the mpath binary and
// the key file's path; example.org resolves to the VPS at the exit (/etc/netns/NS/hosts,
// which ip netns exec mounts over /etc/hosts) and is served there over HTTPS with a
// certificate curl trusts (CURL_CA_BUNDLE). The download is checked by sha256 and each
// uplink must carry a fair share of it.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"mpath/lab"
	"mpath/lab/labtest"
	"mpath/socks/sockstest"
)

// readmeSection is the heading of the section whose commands the test runs.
const readmeSection = "### (a) Two ISP uplinks at home, exit on a VPS"

// readmeUplinks is what the test takes from the README: the picture and the two
// command blocks, each command as its words (continuations joined, comments dropped).
type readmeUplinks struct {
	picture string
	vps     [][]string
	laptop  [][]string
}

// readReadmeUplinks extracts section (a)'s code blocks (indented by four spaces) from
// README.md.
func readReadmeUplinks(t *testing.T) readmeUplinks {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.Index(text, "\n"+readmeSection+"\n")
	if i < 0 {
		t.Fatalf("README.md has no %q", readmeSection)
	}
	var blocks []string
	var cur []string
	for _, line := range strings.Split(text[i+len(readmeSection)+2:], "\n") {
		if strings.HasPrefix(line, "#") {
			break
		}
		if rest, ok := strings.CutPrefix(line, "    "); ok {
			cur = append(cur, rest)
			continue
		}
		if len(cur) > 0 {
			blocks = append(blocks, strings.Join(cur, "\n"))
			cur = nil
		}
	}
	var r readmeUplinks
	for _, blk := range blocks {
		switch {
		case strings.Contains(blk, "[NAT 1]"):
			r.picture = blk
		case strings.HasPrefix(blk, "mpath exit"):
			r.vps = readmeCommands(t, blk)
		case strings.Contains(blk, "mpath client"):
			r.laptop = readmeCommands(t, blk)
		default:
			t.Fatalf("README section (a): a code block the test does not know:\n%s", blk)
		}
	}
	if r.picture == "" || len(r.vps) == 0 || len(r.laptop) == 0 {
		t.Fatalf("README section (a): want a picture, the VPS's commands and the laptop's; got %d blocks", len(blocks))
	}
	return r
}

// readmeCommands splits a block into commands: lines ending in a backslash continue,
// "# ..." after a command is a comment. Quoting would need a shell: refused.
func readmeCommands(t *testing.T, blk string) [][]string {
	t.Helper()
	var out [][]string
	var cur string
	for _, line := range strings.Split(blk, "\n") {
		if c, ok := strings.CutSuffix(strings.TrimRight(line, " "), "\\"); ok {
			cur += c + " "
			continue
		}
		cur += line
		if i := strings.Index(cur, " #"); i >= 0 {
			cur = cur[:i]
		}
		if strings.ContainsAny(cur, "'\"$`;|&<>") {
			t.Fatalf("README command %q needs a shell; the test runs plain words", cur)
		}
		if f := strings.Fields(cur); len(f) > 0 {
			out = append(out, f)
		}
		cur = ""
	}
	return out
}

// TestReadmeUplinksCommands: the README's section (a) has the shape the root test runs
// (also without root, so that a README edit that breaks it fails everywhere).
func TestReadmeUplinksCommands(t *testing.T) {
	r := readReadmeUplinks(t)
	for _, a := range readmeAddrs {
		if !strings.Contains(r.picture, a) {
			t.Errorf("the README's picture lacks %s, which the test's namespaces use", a)
		}
	}
	if len(r.vps) != 1 || r.vps[0][0] != "mpath" {
		t.Errorf("VPS block: %q, want one mpath exit command", r.vps)
	}
	var tools []string
	for _, c := range r.laptop {
		tools = append(tools, c[0])
	}
	if got := strings.Join(tools, " "); got != "ip ip mpath curl" {
		t.Errorf("laptop block runs %q, want ip ip mpath curl", got)
	}
}

// The picture's addresses, which the test's namespaces carry.
var readmeAddrs = []string{"192.168.1.2", "192.168.1.1", "198.51.100.7", "192.168.2.2", "192.168.2.1", "100.64.20.9", "203.0.113.10"}

func TestReadmeUplinks(t *testing.T) {
	labtest.RequireRoot(t)
	needTool(t, "curl", "curl")
	r := readReadmeUplinks(t)
	_, p := labtest.Reserve(t)
	pre := "rd" + strings.TrimPrefix(p, "lt")
	lap, nat1, nat2, inet, vps := pre+"-lap", pre+"-nat1", pre+"-nat2", pre+"-net", pre+"-vps"
	nss := []string{lap, nat1, nat2, inet, vps}
	t.Cleanup(func() {
		// The processes' own cleanups (registered later) have stopped them by now.
		for _, ns := range nss {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
		os.RemoveAll(filepath.Join("/etc/netns", vps))
	})
	const rate = "20mbit"
	build := []string{
		"link add wan1 netns " + lap + " type veth peer name lan netns " + nat1,
		"link add wan2 netns " + lap + " type veth peer name lan netns " + nat2,
		"link add pub netns " + nat1 + " type veth peer name n1 netns " + inet,
		"link add pub netns " + nat2 + " type veth peer name n2 netns " + inet,
		"link add eth0 netns " + vps + " type veth peer name v netns " + inet,
		"-n " + lap + " addr add 192.168.1.2/24 dev wan1",
		"-n " + lap + " addr add 192.168.2.2/24 dev wan2",
		"-n " + nat1 + " addr add 192.168.1.1/24 dev lan",
		"-n " + nat1 + " addr add 198.51.100.7/24 dev pub",
		"-n " + nat2 + " addr add 192.168.2.1/24 dev lan",
		"-n " + nat2 + " addr add 100.64.20.9/24 dev pub",
		"-n " + inet + " addr add 198.51.100.1/24 dev n1",
		"-n " + inet + " addr add 100.64.20.1/24 dev n2",
		"-n " + inet + " addr add 203.0.113.1/24 dev v",
		"-n " + vps + " addr add 203.0.113.10/24 dev eth0",
	}
	for _, ns := range nss {
		mustRun(t, "ip", "netns", "add", ns)
		mustRun(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	for _, c := range build {
		mustRun(t, "ip", strings.Fields(c)...)
	}
	for ns, devs := range map[string][]string{lap: {"wan1", "wan2"}, nat1: {"lan", "pub"}, nat2: {"lan", "pub"}, inet: {"n1", "n2", "v"}, vps: {"eth0"}} {
		for _, d := range devs {
			mustRun(t, "ip", "-n", ns, "link", "set", d, "up")
		}
	}
	mustRun(t, "ip", "-n", nat1, "route", "add", "default", "via", "198.51.100.1")
	mustRun(t, "ip", "-n", nat2, "route", "add", "default", "via", "100.64.20.1")
	mustRun(t, "ip", "-n", vps, "route", "add", "default", "via", "203.0.113.1")
	for _, ns := range []string{nat1, nat2, inet} {
		mustRun(t, "ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	}
	for _, ns := range []string{nat1, nat2} {
		mustRun(t, "ip", "netns", "exec", ns, "nft", "add table ip nat; add chain ip nat post { type nat hook postrouting priority srcnat; }; add rule ip nat post oifname pub masquerade")
	}
	mustRun(t, "ip", "netns", "exec", nat2, "nft", "add table ip filter; add chain ip filter fw { type filter hook forward priority filter; }; add rule ip filter fw ip protocol 4 drop")
	for _, nd := range [][2]string{{lap, "wan1"}, {lap, "wan2"}, {nat1, "lan"}, {nat2, "lan"}} {
		mustRun(t, "tc", "-n", nd[0], "qdisc", "add", "dev", nd[1], "root", "tbf", "rate", rate, "burst", "32kb", "latency", "100ms")
	}

	// example.org is the VPS, served over HTTPS with a certificate curl trusts.
	if err := os.MkdirAll(filepath.Join("/etc/netns", vps), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("/etc/netns", vps, "hosts"), []byte("127.0.0.1 localhost\n203.0.113.10 example.org\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := serveExampleOrg(t, vps, dir)
	const n, seed = int64(8 << 20), 41
	psk := writeSecret(t, dir, "psk")
	sub := func(c []string) []string {
		out := make([]string, len(c))
		for i, w := range c {
			switch {
			case i == 0 && w == "mpath":
				w = mpathBin(t)
			case w == "/etc/mpath/psk" || w == "~/.mpath/psk":
				w = psk
			case strings.HasPrefix(w, "~"):
				t.Fatalf("README command %q: the test knows no %s", c, w)
			}
			out[i] = w
		}
		return out
	}
	exit := startProc(t, vps, "exit", sub(r.vps[0])...)
	exit.waitLog(t, "exit ready", readyTimeout)
	var out string
	for _, c := range r.laptop {
		switch c[0] {
		case "mpath":
			cl := startProc(t, lap, "client", sub(c)...)
			cl.waitLog(t, "client ready", readyTimeout)
		case "curl":
			if c[len(c)-2] != "-o" {
				t.Fatalf("README curl %q: want -o FILE last", c)
			}
			out = filepath.Join(dir, c[len(c)-1])
			before := [2]uint64{natBytes(t, nat1), natBytes(t, nat2)}
			cmd := lab.Command(lap, c[0], c[1:]...)
			cmd.Dir = dir
			cmd.Env = append(cleanEnv(), "CURL_CA_BUNDLE="+ca)
			start := time.Now()
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("README curl %q: %v\n%s", c, err, b)
			}
			dur := time.Since(start)
			got, sum := fileSHA256(t, out)
			if got != n || sum != sockstest.PayloadSHA256(n, seed) {
				t.Fatalf("README curl wrote %d bytes sha256 %s, want %d %s", got, sum, n, sockstest.PayloadSHA256(n, seed))
			}
			d1, d2 := natBytes(t, nat1)-before[0], natBytes(t, nat2)-before[1]
			share := float64(d1) / float64(d1+d2)
			t.Logf("FIGURE readme uplinks: %d B in %v: %s = %.0f%% of the 2 x %s uplinks; uplink 1 carried %.0f%% of the bytes",
				n, dur.Round(time.Millisecond), fmtRate(n, dur), 100*float64(n)*8/dur.Seconds()/40e6, rate, 100*share)
			if share < 0.25 || share > 0.75 {
				t.Errorf("uplink 1 carried %.0f%% of the download's bytes, want each uplink 25-75%%", 100*share)
			}
		default:
			mustRun(t, "ip", append([]string{"netns", "exec", lap}, c...)...)
		}
	}
	if out == "" {
		t.Fatal("the README's laptop block downloaded nothing")
	}
}

// serveExampleOrg serves big.iso (sockstest.Payload(8 MiB, 41)) over HTTPS on
// 203.0.113.10:443 in ns with a self-signed certificate for example.org, and returns
// the certificate's PEM file.
func serveExampleOrg(t *testing.T, ns, dir string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "example.org"},
		DNSNames: []string{"example.org"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /big.iso", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", strconv.FormatInt(8<<20, 10))
		io.Copy(w, sockstest.Payload(8<<20, 41))
	})
	s := httptest.NewUnstartedServer(mux)
	s.Listener.Close()
	s.Listener = listenIn(t, ns, "203.0.113.10:443")
	s.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	s.StartTLS()
	t.Cleanup(s.Close)
	return ca
}

// natBytes is what a NAT's LAN side sent towards the laptop (its uplink's download).
func natBytes(t *testing.T, ns string) uint64 {
	t.Helper()
	out, err := runIn(ns, "ip", "-s", "-j", "link", "show", "dev", "lan")
	if err != nil {
		t.Fatalf("%s: %v", ns, err)
	}
	var links []struct {
		Stats struct {
			TX struct {
				Bytes uint64 `json:"bytes"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("%s: ip -s -j link: %v %s", ns, err, out)
	}
	return links[0].Stats.TX.Bytes
}

// fileSHA256 returns a file's size and hex sha256.
func fileSHA256(t *testing.T, path string) (int64, string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	return n, hex.EncodeToString(h.Sum(nil))
}
