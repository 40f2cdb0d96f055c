#!/usr/bin/env bash
# A multipath lab built by hand with iproute2 and tc only: no mpath code is involved in
# building it. It is what an operator would set up to try mpath on one machine, and the
# lab/e2e test TestHandBuiltLab runs mpath in it (relays in reencap and forward mode),
# so mpath is checked in a topology it did not make.
#
#   lab/byhand.sh up PREFIX RATE [RATE ...]   one path per RATE (tc tbf syntax: 10mbit, 1mbit)
#   lab/byhand.sh down PREFIX                 remove every namespace named PREFIX-*
#
# Namespaces and addresses (path i = 1..N):
#
#   PREFIX-cli   wan<i> 172.30.<i>.2/24            the user's machine
#   PREFIX-rly<i> lan 172.30.<i>.1/24, uplink 172.31.<i>.1/24   a stock Linux host, ip_forward=1
#   PREFIX-srv   eth<i> 172.31.<i>.2/24            the jump host (mpath exit, a web server)
#
# Plain traffic from the client goes through relay 1 (default route); a relay routes
# 172.30/16 towards the client and 172.31/16 towards the server. Each path is limited to
# its RATE in both directions (tbf on wan<i> and on the relay's lan). Offloads are left
# as the kernel sets them.
set -euo pipefail

die() { echo "byhand.sh: $*" >&2; exit 2; }

up() {
	local p=$1; shift
	[ $# -ge 1 ] || die "up needs at least one RATE"
	[ $# -le 8 ] || die "at most 8 paths"
	local n=$#
	trap 'down "$p"' ERR
	ip netns add "$p-cli"
	ip netns add "$p-srv"
	local i=0 rate
	for rate in "$@"; do
		i=$((i + 1))
		local r="$p-rly$i"
		ip netns add "$r"
		ip link add "wan$i" netns "$p-cli" type veth peer name lan netns "$r"
		ip link add "eth$i" netns "$p-srv" type veth peer name uplink netns "$r"
		ip -n "$r" addr add "172.30.$i.1/24" dev lan
		ip -n "$r" addr add "172.31.$i.1/24" dev uplink
		ip -n "$r" link set lo up
		ip -n "$r" link set lan up
		ip -n "$r" link set uplink up
		ip -n "$r" route add 172.30.0.0/16 via "172.30.$i.2"
		ip -n "$r" route add 172.31.0.0/16 via "172.31.$i.2"
		ip netns exec "$r" sysctl -q -w net.ipv4.ip_forward=1
		ip -n "$p-cli" addr add "172.30.$i.2/24" dev "wan$i"
		ip -n "$p-cli" link set "wan$i" up
		ip -n "$p-srv" addr add "172.31.$i.2/24" dev "eth$i"
		ip -n "$p-srv" link set "eth$i" up
		tc -n "$p-cli" qdisc add dev "wan$i" root tbf rate "$rate" burst 32kb latency 100ms
		tc -n "$r" qdisc add dev lan root tbf rate "$rate" burst 32kb latency 100ms
	done
	ip -n "$p-cli" link set lo up
	ip -n "$p-srv" link set lo up
	ip -n "$p-cli" route add default via 172.30.1.1
	ip -n "$p-srv" route add default via 172.31.1.1
	trap - ERR
	echo "byhand.sh: $n paths up: client $p-cli (172.30.i.2), relays $p-rly1..$n (172.30.i.1 / 172.31.i.1), server $p-srv (172.31.i.2)"
}

down() {
	local p=$1 ns
	for ns in $(ip netns list | awk '{print $1}'); do
		case "$ns" in
		"$p"-cli | "$p"-srv | "$p"-rly*) ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 || true
			ip netns del "$ns" ;;
		esac
	done
}

case "${1:-}" in
up) [ $# -ge 3 ] || die "usage: $0 up PREFIX RATE [RATE ...]"; shift; up "$@" ;;
down) [ $# -eq 2 ] || die "usage: $0 down PREFIX"; down "$2" ;;
*) die "usage: $0 up PREFIX RATE [RATE ...] | down PREFIX" ;;
esac
