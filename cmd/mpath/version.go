package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
)

func init() {
	register("version", "print mpath's version, commit, Go version and build date", runVersion)
}

// Set at link time when the build has no VCS information (GOFLAGS=-buildvcs=false, a
// git worktree, a tarball) or to stamp the build time rather than the commit time:
//
//	go build -ldflags "-X main.buildRevision=$(git rev-parse HEAD) -X main.buildDate=$(date -u +%FT%TZ)" ./cmd/mpath
var buildRevision, buildDate string

// build is what the binary knows about how it was built.
type build struct {
	version   string // module version, "(devel)" for a build from a checkout
	revision  string // VCS commit, with "-dirty" when the tree had changes ("unknown": none)
	time      string // commit time (RFC 3339) as recorded by the Go toolchain
	goVersion string
}

// buildInfo reads the build information the Go toolchain embeds.
func buildInfo() build {
	b := build{version: "unknown", revision: "unknown", time: "unknown", goVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = &debug.BuildInfo{}
	}
	if bi.Main.Version != "" {
		b.version = bi.Main.Version
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.revision = s.Value
		case "vcs.time":
			b.time = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && b.revision != "unknown" {
		b.revision += "-dirty"
	}
	if buildRevision != "" {
		b.revision = buildRevision
	}
	if buildDate != "" {
		b.time = buildDate
	}
	return b
}

func runVersion(args []string) error {
	fs := newFlagSet("version", "", "The build date is the commit's time as the Go toolchain records it from git ('unknown'\nwithout VCS information), unless the build set main.buildDate with -ldflags -X.")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	b := buildInfo()
	fmt.Fprintf(os.Stdout, "mpath %s\ncommit %s\nbuilt %s\n%s %s/%s\n", b.version, b.revision, b.time, b.goVersion, runtime.GOOS, runtime.GOARCH)
	return nil
}
