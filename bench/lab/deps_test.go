package benchlab

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"mpath/lab"
)

// TestE2EFreshDeps checks that the package list of a fresh checkout's `make deps` (the
// Makefile as committed, run on its own) covers every program `mpath bench --lab` runs,
// that the package each "not installed" error names is the one that really holds the
// program, and then runs `mpath bench --lab proxy --quick` to completion, with a plain
// "cell k of N" progress prefix on its (piped) output.
func TestE2EFreshDeps(t *testing.T) {
	r := newBenchRun(t)
	for _, tool := range []string{"git", "make", "dpkg-query"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed", tool)
		}
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	makefile, err := exec.Command("git", "-C", root, "show", "HEAD:Makefile").Output()
	if err != nil {
		t.Skipf("skipping: no committed Makefile: %v", err)
	}
	fresh := t.TempDir()
	if err := os.WriteFile(filepath.Join(fresh, "Makefile"), makefile, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("make", "-s", "-C", fresh, "print-debs").Output()
	if err != nil {
		t.Fatalf("make print-debs: %v", err)
	}
	debs := strings.Fields(string(out))
	// make deps in the fresh checkout: installs what is missing (nothing, when the
	// machine already ran it) and must succeed.
	if out, err := exec.Command("make", "-s", "-C", fresh, "deps").CombinedOutput(); err != nil {
		t.Fatalf("make deps in a fresh checkout: %v\n%s", err, out)
	}

	tools := slices.Clone(requiredTools)
	apache, err := lab.ApacheBinary()
	if err != nil {
		t.Fatal(err)
	}
	tools = append(tools, struct{ name, pkg string }{apache, "apache2"}, struct{ name, pkg string }{"nft", "nftables"})
	for _, tool := range tools {
		owner := packageOf(t, tool.name)
		if !slices.Contains(debs, tool.pkg) {
			t.Errorf("%s: package %s is not in the Makefile's DEBS %v", tool.name, tool.pkg, debs)
		}
		if owner != tool.pkg && !dependsOn(t, tool.pkg, owner) {
			t.Errorf("%s belongs to package %s, but the error names %s", tool.name, owner, tool.pkg)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, r.args("proxy")...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	t.Logf("output:\n%s", stdout.String())
	if err != nil {
		t.Fatalf("mpath bench --lab proxy --quick: %v\nstderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "[cell 1 of ") || !strings.Contains(stdout.String(), " elapsed, about ") {
		t.Error("output lacks the plain progress prefix ([cell k of N, ... elapsed, about ... left])")
	}
	b, err := os.ReadFile(filepath.Join(r.out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if res.Failures != 0 || res.Finished == "" || len(res.Tables) == 0 {
		t.Fatalf("results: %d failures %v, %d tables, finished %q", res.Failures, res.Errors, len(res.Tables), res.Finished)
	}
	r.checkNothingLeft(t)
}

// packageOf returns the Debian package that installed program name (found in PATH or
// given as a path), trying the /usr-less path too (merged /usr: dpkg records /sbin/ip).
func packageOf(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not installed after make deps", name)
	}
	cands := []string{p}
	if r, err := filepath.EvalSymlinks(p); err == nil && r != p {
		cands = append(cands, r)
	}
	for _, c := range slices.Clone(cands) {
		if s, ok := strings.CutPrefix(c, "/usr"); ok {
			cands = append(cands, s)
		}
	}
	for _, c := range cands {
		out, err := exec.Command("dpkg-query", "-S", c).Output()
		if err == nil {
			pkg, _, _ := strings.Cut(strings.TrimSpace(string(out)), ":")
			return pkg
		}
	}
	t.Fatalf("%s (%v): no Debian package owns it", name, cands)
	return ""
}

// dependsOn reports whether installed package pkg depends directly on dep (apache2 on
// apache2-bin, which holds the binary).
func dependsOn(t *testing.T, pkg, dep string) bool {
	t.Helper()
	out, err := exec.Command("dpkg-query", "-W", "-f=${Depends}", pkg).Output()
	if err != nil {
		return false
	}
	for _, d := range strings.Split(string(out), ",") {
		if f := strings.Fields(d); len(f) > 0 && f[0] == dep {
			return true
		}
	}
	return false
}
