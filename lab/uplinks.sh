#!/usr/bin/env bash
# Real uplinks, built by hand with iproute2, tc and nftables only: a client with two
# access links, each behind its own ISP router doing NAT (nftables masquerade), an exit
# behind a core router. ISP 2 drops IP protocol 4 (as most home routers and carrier NATs
# do), so IPIP cannot cross it and UDP encapsulation must. The uplinks are the only rate
# limits. lab/e2e TestRealUplinks runs mpath here.
#
#   lab/uplinks.sh up PREFIX RATE[,RATE...] [CLIENTS [DROP4]]
#                                          one uplink per RATE (tc tbf syntax: 10mbit);
#                                          CLIENTS clients (default 1), each with its own
#                                          ISPs; the ISP of uplink DROP4 drops IP protocol
#                                          4 (default 2; 0: none does)
#   lab/uplinks.sh rebind PREFIX           ISP 1's public address changes 100.64.1.2 -> .3
#                                          (its NAT mappings die with the old address)
#   lab/uplinks.sh down PREFIX
#
#   PREFIX-cli  wan1 192.168.1.2/24 ── PREFIX-isp1 lan 192.168.1.1, pub 100.64.1.2 (masquerade)
#               wan2 192.168.2.2/24 ── PREFIX-isp2 lan 192.168.2.1, pub 100.64.2.2 (masquerade, drops proto 4)
#   PREFIX-core c1 100.64.1.1/24, c2 100.64.2.1/24, cx 100.64.9.1/24
#   PREFIX-exit eth 100.64.9.2/24 (mpath exit and the servers)
#   PREFIX-rly  eth 100.64.8.2/24 (a host for a relay, behind the core router)
#   uplink w of client k (W uplinks each): wan<w> 192.168.<i>.2 behind PREFIX-isp<i>,
#   i = (k-1)*W + w (at most 7 ISPs); client k > 1 is PREFIX-cli<k>
#
# The client has one default route per uplink (metrics 1, 2, ...): mpath binds each
# path's socket to its device, and the kernel picks that device's route. Kernel MPTCP
# (mpath bench --lab uplinks) binds its subflows to source addresses instead, so each
# uplink's address also has a policy route (table 10+w) out of its own uplink.
set -euo pipefail

die() { echo "uplinks.sh: $*" >&2; exit 2; }

up() {
	local p=$1 rates=$2 clients=${3:-1} drop4=${4:-2}
	local -a rate
	IFS=, read -r -a rate <<<"$rates"
	local nw=${#rate[@]}
	[ $((nw * clients)) -le 7 ] || die "at most 7 ISPs (uplinks x clients)"
	trap 'down "$p"' ERR
	local ns k i w
	for ns in core exit rly; do
		ip netns add "$p-$ns"
		ip -n "$p-$ns" link set lo up
	done
	for k in $(seq 1 "$clients"); do
		ns=$(cli "$p" "$k")
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		for w in $(seq 1 "$nw"); do
			i=$(((k - 1) * nw + w)) # ISP i serves client k's uplink w
			ip netns add "$p-isp$i"
			ip -n "$p-isp$i" link set lo up
			ip link add "wan$w" netns "$ns" type veth peer name lan netns "$p-isp$i"
			ip link add pub netns "$p-isp$i" type veth peer name "c$i" netns "$p-core"
			ip -n "$ns" addr add "192.168.$i.2/24" dev "wan$w"
			ip -n "$ns" link set "wan$w" up
			ip -n "$ns" route add default via "192.168.$i.1" dev "wan$w" metric "$w"
			ip -n "$ns" route add default via "192.168.$i.1" dev "wan$w" table $((10 + w))
			ip -n "$ns" rule add from "192.168.$i.2" table $((10 + w))
			ip -n "$p-isp$i" addr add "192.168.$i.1/24" dev lan
			ip -n "$p-isp$i" addr add "100.64.$i.2/24" dev pub
			ip -n "$p-isp$i" link set lan up
			ip -n "$p-isp$i" link set pub up
			ip -n "$p-isp$i" route add default via "100.64.$i.1"
			ip netns exec "$p-isp$i" sysctl -q -w net.ipv4.ip_forward=1 net.ipv4.conf.all.promote_secondaries=1 net.ipv4.conf.pub.promote_secondaries=1
			ip -n "$p-core" addr add "100.64.$i.1/24" dev "c$i"
			ip -n "$p-core" link set "c$i" up
			ip netns exec "$p-isp$i" nft add table ip nat
			ip netns exec "$p-isp$i" nft add chain ip nat ispnat '{ type nat hook postrouting priority srcnat; }'
			ip netns exec "$p-isp$i" nft add rule ip nat ispnat oifname pub masquerade
			if [ "$w" = "$drop4" ]; then # this uplink's ISP drops IP protocol 4
				ip netns exec "$p-isp$i" nft add table ip filter
				ip netns exec "$p-isp$i" nft add chain ip filter ispfw '{ type filter hook forward priority filter; }'
				ip netns exec "$p-isp$i" nft add rule ip filter ispfw ip protocol 4 counter drop
			fi
			# The uplinks are the bottlenecks: upload on the client's side, download on the ISP's.
			tc -n "$ns" qdisc add dev "wan$w" root tbf rate "${rate[w - 1]}" burst 32kb latency 100ms
			tc -n "$p-isp$i" qdisc add dev lan root tbf rate "${rate[w - 1]}" burst 32kb latency 100ms
		done
	done
	ip link add eth netns "$p-exit" type veth peer name cx netns "$p-core"
	ip -n "$p-core" addr add 100.64.9.1/24 dev cx
	ip -n "$p-core" link set cx up
	ip netns exec "$p-core" sysctl -q -w net.ipv4.ip_forward=1
	ip -n "$p-exit" addr add 100.64.9.2/24 dev eth
	ip -n "$p-exit" link set eth up
	ip -n "$p-exit" route add default via 100.64.9.1
	ip link add eth netns "$p-rly" type veth peer name cr netns "$p-core"
	ip -n "$p-core" addr add 100.64.8.1/24 dev cr
	ip -n "$p-core" link set cr up
	ip -n "$p-rly" addr add 100.64.8.2/24 dev eth
	ip -n "$p-rly" link set eth up
	ip -n "$p-rly" route add default via 100.64.8.1
	trap - ERR
	echo "uplinks.sh: up: $clients client(s) $p-cli.. with $nw NATed uplinks each, exit $p-exit 100.64.9.2"
}

# cli names client k's namespace: PREFIX-cli, PREFIX-cli2, ...
cli() {
	if [ "$2" = 1 ]; then echo "$1-cli"; else echo "$1-cli$2"; fi
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
		"$p"-cli | "$p"-cli[0-9] | "$p"-isp[0-9] | "$p"-core | "$p"-exit | "$p"-rly)
			ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 || true
			ip netns del "$ns" ;;
		esac
	done
}

case "${1:-}" in
up) [ $# -ge 3 ] && [ $# -le 5 ] || die "usage: $0 up PREFIX RATE[,RATE...] [CLIENTS [DROP4]]"; shift; up "$@" ;;
rebind) [ $# -eq 2 ] || die "usage: $0 rebind PREFIX"; rebind "$2" ;;
down) [ $# -eq 2 ] || die "usage: $0 down PREFIX"; down "$2" ;;
*) die "usage: $0 up PREFIX RATE[,RATE...] [CLIENTS [DROP4]] | rebind PREFIX | down PREFIX" ;;
esac
