package main

import (
	"strings"
	"testing"
)

func TestCheckDebugListen(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		public bool
		ok     bool
	}{
		{"", false, true},
		{"127.0.0.1:9090", false, true},
		{"127.8.0.1:9090", false, true},
		{"[::1]:9090", false, true},
		{"localhost:9090", false, true},
		{":9090", false, false},
		{"0.0.0.0:9090", false, false},
		{"[::]:9090", false, false},
		{"10.77.255.2:9091", false, false},
		{"metrics.example:9090", false, false},
		{"10.77.255.2:9091", true, true},
		{":9100", true, true},
		{"no-port", false, false},
	} {
		err := checkEndpoint("metrics", tc.addr, tc.public)
		if (err == nil) != tc.ok {
			t.Errorf("checkEndpoint(%q, public=%v) = %v", tc.addr, tc.public, err)
		}
		if err != nil && tc.addr != "no-port" && !strings.Contains(err.Error(), "--metrics-public") {
			t.Errorf("%q: error %q does not name --metrics-public", tc.addr, err)
		}
	}
}

func TestRelayRefusesPublicMetrics(t *testing.T) {
	err := runRelay([]string{"--allow", "10.77.0.0/16", "--metrics", ":9100"})
	if err == nil || !strings.Contains(err.Error(), "--metrics-public") {
		t.Errorf("runRelay with --metrics :9100: %v, want a refusal naming --metrics-public", err)
	}
}
