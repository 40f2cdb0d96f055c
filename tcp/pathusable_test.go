package tcp

import (
	"net/netip"
	"testing"
	"time"
)

// Config.PathUsable turns paths off for one connection (a learning exit: the slots
// beyond the paths a client has): nothing is sent on them, and they come back when it
// says so again (asked every 100 ms).
func TestPathUsable(t *testing.T) {
	cfg := testConfig(4)
	usable := 2
	var asked netip.Addr
	cfg.pathUsable = func(remote netip.Addr, p int) bool { asked = remote; return p < usable }
	e, now := openActive(t, cfg, 1000, 50, fullOpts(1440, 7, 1), 65535, 20*time.Millisecond)
	if asked != apB.Addr() {
		t.Fatalf("PathUsable asked about %v, want the peer %v", asked, apB.Addr())
	}
	if _, err := e.sb.write(make([]byte, 60_000)); err != nil {
		t.Fatal(err)
	}
	e.output(now)
	out := drainOut(e)
	if len(out) == 0 {
		t.Fatal("nothing sent")
	}
	for _, o := range out {
		if o.path >= 2 {
			t.Fatalf("segment %d sent on path %d, which PathUsable turned off", o.seg.Seq, o.path)
		}
	}
	usable = 4
	e.output(now.Add(50 * time.Millisecond))
	if e.view[2].Up || e.view[3].Up {
		t.Error("paths came back before the 100 ms recheck")
	}
	e.output(now.Add(100 * time.Millisecond))
	if !e.view[2].Up || !e.view[3].Up {
		t.Error("paths 2 and 3 still off after PathUsable allowed them")
	}
}
