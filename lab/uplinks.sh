#!/usr/bin/env bash
# Real uplinks, built by hand with iproute2, tc and nftables only: a client with two
# access links, each behind its own ISP router doing NAT (nftables masquerade), an exit
# behind a core router. ISP 2 drops IP protocol 4 (as most home routers and carrier NATs
# do), so IPIP cannot cross it and UDP encapsulation must. The uplinks are the only rate
# limits. lab/e2e TestRealUplinks runs mpath here.
#
#   lab/uplinks.sh up PREFIX RATE1 RATE2   (tc tbf syntax: 10mbit)
#   lab/uplinks.sh rebind PREFIX           ISP 1's public address changes 100.64.1.2 -> .3
#                                          (its NAT mappings die with the old address)
#   lab/uplinks.sh down PREFIX
#
#   PREFIX-cli  wan1 192.168.1.2/24 ── PREFIX-isp1 lan 192.168.1.1, pub 100.64.1.2 (masquerade)
#               wan2 192.168.2.2/24 ── PREFIX-isp2 lan 192.168.2.1, pub 100.64.2.2 (masquerade, drops proto 4)
#   PREFIX-core c1 100.64.1.1/24, c2 100.64.2.1/24, cx 100.64.9.1/24
#   PREFIX-exit eth 100.64.9.2/24 (mpath exit and the servers)
#
# The client has one default route per uplink (metrics 1 and 2): mpath binds each path's
# socket to its device, and the kernel picks that device's route.
set -euo pipefail

die() { echo "uplinks.sh: $*" >&2; exit 2; }

up() {
	local p=$1 r1=$2 r2=$3
	trap 'down "$p"' ERR
	local ns
	for ns in cli isp1 isp2 core exit; do
		ip netns add "$p-$ns"
		ip -n "$p-$ns" link set lo up
	done
	ip link add wan1 netns "$p-cli" type veth peer name lan netns "$p-isp1"
	ip link add wan2 netns "$p-cli" type veth peer name lan netns "$p-isp2"
	ip link add pub netns "$p-isp1" type veth peer name c1 netns "$p-core"
	ip link add pub netns "$p-isp2" type veth peer name c2 netns "$p-core"
	ip link add eth netns "$p-exit" type veth peer name cx netns "$p-core"
	local i
	for i in 1 2; do
		ip -n "$p-cli" addr add "192.168.$i.2/24" dev "wan$i"
		ip -n "$p-cli" link set "wan$i" up
		ip -n "$p-cli" route add default via "192.168.$i.1" dev "wan$i" metric "$i"
		ip -n "$p-isp$i" addr add "192.168.$i.1/24" dev lan
		ip -n "$p-isp$i" addr add "100.64.$i.2/24" dev pub
		ip -n "$p-isp$i" link set lan up
		ip -n "$p-isp$i" link set pub up
		ip -n "$p-isp$i" route add default via "100.64.$i.1"
		ip netns exec "$p-isp$i" sysctl -q -w net.ipv4.ip_forward=1 net.ipv4.conf.all.promote_secondaries=1 net.ipv4.conf.pub.promote_secondaries=1
		ip -n "$p-core" addr add "100.64.$i.1/24" dev "c$i"
		ip -n "$p-core" link set "c$i" up
	done
	ip -n "$p-core" addr add 100.64.9.1/24 dev cx
	ip -n "$p-core" link set cx up
	ip netns exec "$p-core" sysctl -q -w net.ipv4.ip_forward=1
	ip -n "$p-exit" addr add 100.64.9.2/24 dev eth
	ip -n "$p-exit" link set eth up
	ip -n "$p-exit" route add default via 100.64.9.1
	for i in 1 2; do
		ip netns exec "$p-isp$i" nft add table ip nat
		ip netns exec "$p-isp$i" nft add chain ip nat ispnat '{ type nat hook postrouting priority srcnat; }'
		ip netns exec "$p-isp$i" nft add rule ip nat ispnat oifname pub masquerade
	done
	ip netns exec "$p-isp2" nft add table ip filter
	ip netns exec "$p-isp2" nft add chain ip filter ispfw '{ type filter hook forward priority filter; }'
	ip netns exec "$p-isp2" nft add rule ip filter ispfw ip protocol 4 counter drop
	# The uplinks are the bottlenecks: upload on the client's side, download on the ISP's.
	tc -n "$p-cli" qdisc add dev wan1 root tbf rate "$r1" burst 32kb latency 100ms
	tc -n "$p-isp1" qdisc add dev lan root tbf rate "$r1" burst 32kb latency 100ms
	tc -n "$p-cli" qdisc add dev wan2 root tbf rate "$r2" burst 32kb latency 100ms
	tc -n "$p-isp2" qdisc add dev lan root tbf rate "$r2" burst 32kb latency 100ms
	trap - ERR
	echo "uplinks.sh: up: client $p-cli (wan1 192.168.1.2 via $p-isp1, wan2 192.168.2.2 via $p-isp2), exit $p-exit 100.64.9.2"
}

rebind() {
	local p=$1
	# Adding the new address first keeps the subnet route (promote_secondaries); deleting
	# the old one makes the kernel drop the masquerade mappings that used it.
	ip -n "$p-isp1" addr add 100.64.1.3/24 dev pub
	ip -n "$p-isp1" addr del 100.64.1.2/24 dev pub
	ip -n "$p-isp1" route replace default via 100.64.1.1
}

down() {
	local p=$1 ns
	for ns in $(ip netns list | awk '{print $1}'); do
		case "$ns" in
		"$p"-cli | "$p"-isp1 | "$p"-isp2 | "$p"-core | "$p"-exit)
			ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 || true
			ip netns del "$ns" ;;
		esac
	done
}

case "${1:-}" in
up) [ $# -eq 4 ] || die "usage: $0 up PREFIX RATE1 RATE2"; shift; up "$@" ;;
rebind) [ $# -eq 2 ] || die "usage: $0 rebind PREFIX"; rebind "$2" ;;
down) [ $# -eq 2 ] || die "usage: $0 down PREFIX"; down "$2" ;;
*) die "usage: $0 up PREFIX RATE1 RATE2 | rebind PREFIX | down PREFIX" ;;
esac
