package lab

// Apache in a lab namespace: Debian's apache2 binary with a generated minimal
// configuration in a temporary directory, nothing from /etc/apache2 but the modules.
//
//	StartApache ──► <tmp>/httpd.conf ──► ip netns exec NS apache2 -f <tmp>/httpd.conf -DFOREGROUND
//	            ──► poll until <tmp>/httpd.pid names our process and addr:port accepts
//	Stop        ──► SIGTERM, wait, SIGKILL the process group if needed, rm -r <tmp>

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ApacheUser is the account Apache's workers run as (Debian's www-data). The document
// root and every directory above it must be readable and searchable by it.
const ApacheUser = "www-data"

var errApache = errors.New("apache")

// apacheModules are the modules the generated configuration loads: the event MPM,
// Require, DirectoryIndex and Content-Type. No access log (log_config is left out).
var apacheModules = []string{"mpm_event", "authz_core", "dir", "mime"}

// apacheModuleDir is where Debian installs Apache's modules.
const apacheModuleDir = "/usr/lib/apache2/modules"

// Apache is a running apache2 serving one directory on one address in a namespace.
// Its methods are safe for concurrent use; Stop may be called more than once.
type Apache struct {
	ns      string
	addr    netip.AddrPort
	docroot string
	dir     string // temporary directory: config, pid file, logs
	pid     int
	done    chan struct{} // closed when the process has been waited for

	stopOnce sync.Once
	stopErr  error
}

// ApacheBinary returns the path of Debian's apache2 binary, looked up in PATH and then
// in /usr/sbin (which a non-login root shell may lack in PATH).
func ApacheBinary() (string, error) {
	if p, err := exec.LookPath("apache2"); err == nil {
		return p, nil
	}
	const p = "/usr/sbin/apache2"
	if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
		return p, nil
	}
	return "", fmt.Errorf("%w: apache2 not installed (apt-get install apache2)", errApache)
}

// InstallApache installs Debian's apache2 package with apt-get when the binary is
// missing, writing what it does to w. It returns true when it installed something. It
// needs root; without root and without apache2 it returns an error saying how to
// install it.
func InstallApache(ctx context.Context, w io.Writer) (bool, error) {
	if _, err := ApacheBinary(); err == nil {
		return false, nil
	}
	if os.Geteuid() != 0 {
		return false, fmt.Errorf("install apache: %w: apache2 is missing and installing it needs root (apt-get install apache2)", errApache)
	}
	fmt.Fprintln(w, "apache2 is not installed: running apt-get install -y apache2")
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, args := range [][]string{
		{"apt-get", "update", "-qq"},
		{"apt-get", "install", "-y", "-qq", "--no-install-recommends", "apache2"},
	} {
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Stdout, cmd.Stderr, cmd.Env = w, w, env
		if err := cmd.Run(); err != nil {
			return false, fmt.Errorf("install apache: %s: %w", strings.Join(args, " "), err)
		}
	}
	// Debian starts the system-wide apache2 service on install; the lab's instances do
	// not need it, and it would hold port 80 in the root namespace. Leave it: stopping a
	// service the user may want is not ours to do.
	if _, err := ApacheBinary(); err != nil {
		return false, fmt.Errorf("install apache: %w", err)
	}
	return true, nil
}

// MakeDocroot creates an empty document root under os.TempDir that Apache's workers can
// read (mode 0755). The caller removes it.
func MakeDocroot() (string, error) {
	dir, err := os.MkdirTemp("", "mpath-www-")
	if err != nil {
		return "", fmt.Errorf("make docroot: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("make docroot: %w", err)
	}
	return dir, nil
}

// WriteRandomFile writes size random bytes to dir/name (mode 0644, readable by Apache)
// and returns their sha256.
func WriteRandomFile(dir, name string, size int64) ([32]byte, error) {
	var sum [32]byte
	if size < 0 || name == "" || strings.ContainsRune(name, '/') {
		return sum, fmt.Errorf("write random file: bad name %q or size %d", name, size)
	}
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return sum, fmt.Errorf("write random file: %w", err)
	}
	h := sha256.New()
	_, err = io.CopyN(io.MultiWriter(f, h), rand.Reader, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(path, 0o644) // umask may have narrowed it
	}
	if err != nil {
		os.Remove(path)
		return sum, fmt.Errorf("write random file %s: %w", path, err)
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// checkReadable fails when some directory from / down to dir is not searchable by
// others or dir itself is not readable by others: Apache's workers run as www-data and
// would answer 403 for every file.
func checkReadable(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", abs)
	}
	if st.Mode().Perm()&0o005 != 0o005 {
		return fmt.Errorf("%s has mode %v: %s cannot list it (chmod 755 it, or use lab.MakeDocroot)", abs, st.Mode().Perm(), ApacheUser)
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s has mode %v: %s cannot reach the document root below it (use lab.MakeDocroot)", d, st.Mode().Perm(), ApacheUser)
		}
		if d == "/" {
			return nil
		}
	}
}

// apacheConfig renders the configuration file.
func apacheConfig(dir, docroot string, addr netip.AddrPort) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# generated by mpath lab.StartApache\nServerRoot /etc/apache2\n")
	for _, m := range apacheModules {
		fmt.Fprintf(&b, "LoadModule %s_module %s/mod_%s.so\n", m, apacheModuleDir, m)
	}
	fmt.Fprintf(&b, "User %s\nGroup %s\n", ApacheUser, ApacheUser)
	fmt.Fprintf(&b, "ServerName %s\n", addr.Addr())
	fmt.Fprintf(&b, "Listen %s\n", addr)
	fmt.Fprintf(&b, "PidFile %s\n", filepath.Join(dir, "httpd.pid"))
	fmt.Fprintf(&b, "DefaultRuntimeDir %s\n", dir)
	fmt.Fprintf(&b, "ErrorLog %s\nLogLevel warn\n", filepath.Join(dir, "error.log"))
	fmt.Fprintf(&b, "TypesConfig /etc/mime.types\n")
	// Keep-alive on, as Debian ships it; no server-side timeouts shorter than a slow lab
	// path needs to move a large file.
	fmt.Fprintf(&b, "KeepAlive On\nTimeout 300\n")
	fmt.Fprintf(&b, "DocumentRoot %q\n<Directory %q>\n  Require all granted\n</Directory>\n", docroot, docroot)
	return b.String()
}

// StartApache runs Debian's apache2 in namespace ns ("" = the caller's namespace),
// serving docroot on addr:port, and returns once the server accepts connections (at
// most 15 s, or until ctx ends). The configuration, pid file and error log live in a
// fresh temporary directory that Stop removes. docroot and its parents must be
// readable by www-data (MakeDocroot makes one). On failure nothing is left running.
func StartApache(ctx context.Context, ns string, addr netip.Addr, port int, docroot string) (*Apache, error) {
	if !addr.IsValid() || port < 1 || port > 65535 {
		return nil, fmt.Errorf("start apache: %w: bad address %v port %d", errApache, addr, port)
	}
	bin, err := ApacheBinary()
	if err != nil {
		return nil, fmt.Errorf("start apache: %w", err)
	}
	docroot, err = filepath.Abs(docroot)
	if err != nil {
		return nil, fmt.Errorf("start apache: %w", err)
	}
	if err := checkReadable(docroot); err != nil {
		return nil, fmt.Errorf("start apache: %w: docroot: %w", errApache, err)
	}
	dir, err := os.MkdirTemp("", "mpath-apache-")
	if err != nil {
		return nil, fmt.Errorf("start apache: %w", err)
	}
	ap := netip.AddrPortFrom(addr, uint16(port))
	conf := filepath.Join(dir, "httpd.conf")
	if err := os.WriteFile(conf, []byte(apacheConfig(dir, docroot, ap)), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start apache: %w", err)
	}
	out, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start apache: %w", err)
	}
	defer out.Close()
	args := []string{"-f", conf, "-DFOREGROUND"}
	var cmd *exec.Cmd
	if ns == "" {
		cmd = exec.Command(bin, args...)
	} else {
		cmd = Command(ns, bin, args...) // ip netns exec execs apache2: same pid
	}
	cmd.Stdout, cmd.Stderr = out, out
	// Own session and process group: Stop can kill the workers with the parent, and a
	// terminal's Ctrl-C reaches the caller, which decides.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start apache: %w", err)
	}
	a := &Apache{ns: ns, addr: ap, docroot: docroot, dir: dir, pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(a.done) }()
	if err := a.waitReady(ctx, 15*time.Second); err != nil {
		logs := a.Logs()
		a.Stop()
		return nil, fmt.Errorf("start apache in %q on %s: %w\n%s", ns, ap, err, logs)
	}
	return a, nil
}

// waitReady polls until the pid file names our process (Apache writes it after binding
// its listener) and the port accepts a connection from inside the namespace.
func (a *Apache) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		select {
		case <-a.done:
			return fmt.Errorf("%w: apache2 exited during startup", errApache)
		default:
		}
		if b, err := os.ReadFile(filepath.Join(a.dir, "httpd.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid == a.pid {
				if a.dial() == nil {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: not accepting on %s after %v", errApache, a.addr, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.done:
		case <-time.After(20 * time.Millisecond): // poll interval, not synchronisation
		}
	}
}

func (a *Apache) dial() error {
	dial := func() error {
		c, err := net.DialTimeout("tcp", a.addr.String(), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	if a.ns == "" {
		return dial()
	}
	return Do(a.ns, dial)
}

// Addr is the address and port Apache listens on.
func (a *Apache) Addr() netip.AddrPort { return a.addr }

// URL returns http://addr:port/path for a path under the document root ("file" or
// "/file").
func (a *Apache) URL(path string) string {
	host := a.addr.Addr().String()
	if a.addr.Port() != 80 {
		host = a.addr.String()
	}
	return "http://" + host + "/" + strings.TrimPrefix(path, "/")
}

// Docroot is the directory Apache serves.
func (a *Apache) Docroot() string { return a.docroot }

// Dir is the temporary directory holding the configuration, pid file and logs.
func (a *Apache) Dir() string { return a.dir }

// PID is the Apache parent process's id.
func (a *Apache) PID() int { return a.pid }

// Logs returns the tail of Apache's error log and of its stderr (startup errors land
// there before the error log is open).
func (a *Apache) Logs() string {
	var b strings.Builder
	for _, f := range []string{"stderr.log", "error.log"} {
		data, err := os.ReadFile(filepath.Join(a.dir, f))
		if err != nil || len(data) == 0 {
			continue
		}
		fmt.Fprintf(&b, "--- apache %s:\n%s", f, tail(data, 2000))
		if data[len(data)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// Stop terminates Apache (SIGTERM to the parent, which stops its workers; SIGKILL to
// the whole process group after 10 s) and removes the temporary directory. It returns
// an error only when the processes could not be stopped or the directory removed.
func (a *Apache) Stop() error {
	a.stopOnce.Do(func() {
		_ = unix.Kill(a.pid, unix.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(10 * time.Second):
		}
		// Setsid made the pid the process group id; workers left behind by a parent
		// that died or hung go with it.
		_ = unix.Kill(-a.pid, unix.SIGKILL)
		select {
		case <-a.done:
		case <-time.After(5 * time.Second):
			a.stopErr = fmt.Errorf("stop apache: %w: process %d did not exit", errApache, a.pid)
		}
		if err := os.RemoveAll(a.dir); err != nil && a.stopErr == nil {
			a.stopErr = fmt.Errorf("stop apache: %w", err)
		}
	})
	return a.stopErr
}
