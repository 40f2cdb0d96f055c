package raw

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"

	"golang.org/x/net/bpf"

	"mpath/tcp"
)

func runFilter(t *testing.T, prog []bpf.Instruction, pkt []byte) bool {
	t.Helper()
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatalf("NewVM: %v", err)
	}
	n, err := vm.Run(pkt)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return n > 0
}

func TestMergeRanges(t *testing.T) {
	got := mergeRanges([]PortRange{{50, 60}, {10, 20}, {21, 30}, {55, 70}, {9, 3}, {100, 100}, {65535, 65535}, {65000, 65535}})
	want := []PortRange{{10, 30}, {50, 70}, {100, 100}, {65000, 65535}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestFilterTCPPortsOrIPIP(t *testing.T) {
	ports := []PortRange{{40000, 40099}, {8080, 8080}}
	relays := []netip.Prefix{netip.MustParsePrefix("10.77.1.2/32"), netip.MustParsePrefix("10.77.200.0/24")}
	prog := FilterTCPPortsOrIPIP(ports, relays)
	enc := NewEncoder()
	mk := func(port uint16, outer string) []byte {
		seg := tcp.Segment{Src: netip.MustParseAddrPort("10.77.255.2:80"), Dst: netip.AddrPortFrom(netip.MustParseAddr("10.77.255.1"), port), Flags: tcp.FlagACK, Payload: []byte("abc")}
		var p []byte
		var err error
		if outer == "" {
			p, err = enc.TCP(&seg)
		} else {
			p, err = enc.IPIP(netip.MustParseAddr(outer), netip.MustParseAddr("10.77.1.1"), &seg)
		}
		if err != nil {
			t.Fatal(err)
		}
		return append([]byte(nil), p...)
	}
	cases := []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"tcp-range-low", mk(40000, ""), true},
		{"tcp-range-high", mk(40099, ""), true},
		{"tcp-single", mk(8080, ""), true},
		{"tcp-below", mk(39999, ""), false},
		{"tcp-above", mk(40100, ""), false},
		{"tcp-8081", mk(8081, ""), false},
		{"ipip-relay-port-in", mk(40050, "10.77.1.2"), true},
		{"ipip-prefix-port-in", mk(8080, "10.77.200.9"), true},
		{"ipip-relay-port-out", mk(22, "10.77.1.2"), false},
		{"ipip-unknown-source", mk(40050, "10.77.1.3"), false},
		{"ipip-outside-prefix", mk(40050, "10.77.201.9"), false},
	}
	udp := mk(40000, "")
	udp[9] = 17
	cases = append(cases, struct {
		name string
		pkt  []byte
		want bool
	}{"udp", udp, false})
	frag := mk(40000, "")
	frag[7] = 10 // offset 80 bytes: the "port" bytes are payload
	cases = append(cases, struct {
		name string
		pkt  []byte
		want bool
	}{"tcp-fragment", frag, false})
	innerFrag := mk(40000, "10.77.1.2")
	innerFrag[20+7] = 10
	cases = append(cases, struct {
		name string
		pkt  []byte
		want bool
	}{"ipip-inner-fragment", innerFrag, false})
	nested := mk(40000, "10.77.1.2")
	nested[20+9] = 4
	cases = append(cases, struct {
		name string
		pkt  []byte
		want bool
	}{"ipip-nested", nested, false})
	for _, c := range cases {
		if got := runFilter(t, prog, c.pkt); got != c.want {
			t.Errorf("%s: accepted=%v, want %v", c.name, got, c.want)
		}
	}

	// No sources: no IPIP at all. No ports: every port.
	if runFilter(t, FilterTCPPortsOrIPIP(ports, nil), mk(40000, "10.77.1.2")) {
		t.Error("IPIP accepted without sources")
	}
	all := FilterTCPPortsOrIPIP(nil, []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")})
	if !runFilter(t, all, mk(1, "")) || !runFilter(t, all, mk(65535, "192.0.2.1")) {
		t.Error("empty ports must match every port")
	}
}

// TestFilterRandomRanges compares the program with a direct predicate on random ranges.
func TestFilterRandomRanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	enc := NewEncoder()
	for round := 0; round < 20; round++ {
		var ports []PortRange
		for i := 0; i < 1+rng.IntN(MaxFilterPortRanges); i++ {
			a := uint16(rng.IntN(65536))
			ports = append(ports, PortRange{a, a + uint16(rng.IntN(50))})
		}
		ports = mergeRanges(ports)
		prog := FilterTCPPortsOrIPIP(ports, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
		vm, err := bpf.NewVM(prog)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 200; i++ {
			var p uint16
			if i%2 == 0 {
				r := ports[rng.IntN(len(ports))]
				p = r.First + uint16(rng.IntN(int(r.Last-r.First)+3)) - 1
			} else {
				p = uint16(rng.IntN(65536))
			}
			seg := tcp.Segment{Src: testSrc, Dst: netip.AddrPortFrom(testDst.Addr(), p)}
			pkt, _ := enc.IPIP(netip.MustParseAddr("10.1.2.3"), testOuterDst, &seg)
			n, err := vm.Run(pkt)
			if err != nil {
				t.Fatal(err)
			}
			if want := inRanges(ports, p); (n > 0) != want {
				t.Fatalf("ranges %v port %d: accepted=%v want %v", ports, p, n > 0, want)
			}
		}
	}
}

func TestFilterLimits(t *testing.T) {
	var ports []PortRange
	var srcs []netip.Prefix
	for i := 0; i < MaxFilterPortRanges; i++ {
		ports = append(ports, PortRange{uint16(10 * i), uint16(10*i + 1)})
	}
	for i := 0; i < MaxFilterSources; i++ {
		srcs = append(srcs, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 1}), 32))
	}
	prog := FilterTCPPortsOrIPIP(ports, srcs) // must not panic at the documented limits
	if _, err := bpf.Assemble(prog); err != nil {
		t.Fatalf("assemble: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("no panic beyond the limit")
		}
	}()
	FilterTCPPortsOrIPIP(append(ports, PortRange{60000, 60001}), srcs)
}
