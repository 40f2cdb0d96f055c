package main

import (
	"testing"

	"mpath/raw"
)

func TestParsePathWithoutRelay(t *testing.T) {
	p, err := parsePath("dev=wan1")
	if err != nil || p.dev != "wan1" || p.relay.IsValid() {
		t.Fatalf("parsePath(dev=wan1) = %+v, %v", p, err)
	}
	if _, err := parsePath("dev=wan1,relay=bad_name"); err == nil {
		t.Fatal("bad relay accepted")
	}
}

func TestPathMSS(t *testing.T) {
	udp := raw.Encap{Kind: raw.EncapUDP, Port: 5555}
	for _, c := range []struct {
		devs  []string
		encap raw.Encap
		want  int
	}{
		{[]string{"no-such-dev0"}, raw.Encap{}, 1440}, // unknown MTU: 1500
		{[]string{"no-such-dev0"}, udp, 1432},
		{nil, udp, 1432},                            // a learning exit
		{[]string{"lo", "no-such-dev0"}, udp, 1432}, // the smallest MTU wins (lo's is 65536)
	} {
		f := &engineFlags{}
		for _, d := range c.devs {
			f.paths = append(f.paths, pathSpec{dev: d})
		}
		if got := pathMSS(f, c.encap); got != c.want {
			t.Errorf("pathMSS(%v, %v) = %d, want %d", c.devs, c.encap, got, c.want)
		}
	}
}
