package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"mpath/raw"
	"mpath/relay"
)

const relayMore = `
The relay receives IPIP on every interface of its host and forwards a packet only when
its outer source is in --allow-from (who may send: the clients' uplink or NAT addresses
and the exit), its inner source and destination are in --allow-to (the endpoints' inner
addresses: the exit and the clients) and the inner packet is TCP. --allow is the
shorthand for both lists (either specific flag overrides it). Plain transit (--plain)
needs its source in --allow-from and its destination in --allow-to. Everything else is
dropped and counted by reason (not_allowed, protocol, malformed, fragment,
nested_tunnel, ttl_expired, to_self, martian, impair_loss, queue_full, send_error,
overload). The relay
itself never sends ICMP, and an nftables table "mpath_relay" (owned by the process,
gone when it ends) drops the IPIP from --allow-from sources after the relay captured it, so
the kernel neither answers it with ICMP nor decapsulates a second copy. It never
forwards to its own addresses.

Modes:
  forward  strip the outer header, TTL-1, route the inner packet (a stock ipip relay)
  reencap  TTL-1, wrap the inner packet in a new outer header from this relay to the
           inner destination (no foreign source address leaves the relay)

--impair keys (comma-separated key=value; applied to every forwarded packet, one way):
  delay=30ms jitter=5ms    delay, uniform jitter around it (jitter never reorders)
  loss=0.5% dup=0.1%       random loss and duplication (percent or fraction)
  reorder=1% gap=5ms       reordered packets go out ahead of their slot (or are held
                           back by gap when there is no delay)
  rate=10mbit limit=65536  serialisation rate (bit, kbit, mbit, gbit; bps... bytes/s)
                           with a tail-drop queue of limit bytes
  seed=7                   random seed: the same seed replays the same fates

Examples:
  mpath relay --allow 10.77.0.0/16
  mpath relay --allow-from 198.51.100.0/24,203.0.113.7 --allow-to 10.77.255.1,10.77.255.2
  mpath relay --allow 10.77.0.0/16,192.0.2.0/24 --mode reencap --metrics :9466 --metrics-public
  mpath relay --allow 10.77.0.0/16 --plain --impair delay=40ms,loss=1%,seed=3

Metrics (Prometheus text at http://ADDR/metrics): mpath_relay_forwarded_packets_total{mode},
mpath_relay_forwarded_bytes_total{mode}, mpath_relay_dropped_packets_total{reason}.
SIGINT/SIGTERM stop the relay, remove the nftables table, log the counters, exit 0.
`

func init() {
	register("relay", "userspace IPIP forwarder with an allowlist and impairments", runRelay)
}

func runRelay(args []string) error {
	fs := newFlagSet("relay", "(--allow CIDR[,CIDR...] | --allow-from CIDRS --allow-to CIDRS) [--mode forward|reencap] [--plain] [--impair SPEC] [flags]", relayMore)
	config := fs.String("config", "", "read flags from `FILE`, one per line (\"allow 10.77.0.0/16\"); see Configuration below")
	allowFlag := fs.String("allow", "", "comma-separated IPv4 `CIDRS`: shorthand for --allow-from and --allow-to with the same list, e.g. 10.77.0.0/16")
	fromFlag := fs.String("allow-from", "", "comma-separated IPv4 `CIDRS` that may send IPIP through the relay (outer sources: clients' uplinks, the exit)")
	toFlag := fs.String("allow-to", "", "comma-separated IPv4 `CIDRS` inner packets may come from and go to (the endpoints' inner addresses: exit and clients)")
	modeFlag := fs.String("mode", "forward", "`MODE`: forward (decapsulate and route) or reencap (new outer header from this relay)")
	plain := fs.Bool("plain", false, "also forward plain (non-IPIP) IPv4 transit packets whose source and destination are in --allow-to, with the same impairments; for hosts with ip_forward=0 (the lab)")
	impairFlag := fs.String("impair", "", "impairments for forwarded packets (`SPEC`, keys below), e.g. delay=30ms,jitter=5ms,loss=0.5%,dup=0.1%,reorder=1%,rate=10mbit,seed=7")
	noGuard := fs.Bool("no-guard", false, "do not install the nftables guard (the kernel may then answer captured IPIP with ICMP)")
	encapFlag := fs.String("encap", "ipip", "encapsulation `ipip|udp[:PORT]`: with udp (IPv4 in UDP to PORT, default 5555, Linux fou's format) the relay "+
		"takes UDP to PORT as well as IPIP, its guard drops UDP to PORT for the kernel, and in reencap mode it sends UDP, returning each client's "+
		"packets to the address and port that client's packets last came from (NAT)")
	var ops opsFlags
	ops.register(fs, defaultRelayMetrics)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	_ = config
	if err := noArgs(fs); err != nil {
		return err
	}
	from, to, err := relayLists(*allowFlag, *fromFlag, *toFlag)
	if err != nil {
		return usageErrorf("%w", err)
	}
	mode, err := relay.ParseMode(*modeFlag)
	if err != nil {
		return usageErrorf("--mode: %w", err)
	}
	spec, err := relay.ParseImpair(*impairFlag)
	if err != nil {
		return usageErrorf("--impair: %w", err)
	}
	if err := ops.check(); err != nil {
		return err
	}
	log := ops.logger("relay")
	defer func() { _ = log.Sync() }()

	if tun := relay.KernelTunnels(); len(tun) > 0 {
		log.Warn("kernel IPIP tunnel devices exist on this host: the kernel may decapsulate too and inner packets would arrive twice; remove them (ip link del) or do not run mpath relay here",
			zap.Strings("devices", tun))
	}

	encap, err := raw.ParseEncap(*encapFlag)
	if err != nil {
		return err
	}
	var udpPort uint16
	if encap.Kind == raw.EncapUDP {
		udpPort = encap.Port
	}
	src, err := relay.NewRawSourceEncap(*plain, udpPort)
	if err != nil {
		return capabilityHint(err)
	}
	running := false // Run closes src when it ends
	defer func() {
		if !running {
			src.Close()
		}
	}()
	sink, err := relay.NewRawSink()
	if err != nil {
		return capabilityHint(err)
	}
	defer sink.Close()

	var guard *raw.Guard
	if !*noGuard {
		guard, err = relay.InstallGuardEncap(from, udpPort)
		if err != nil {
			return capabilityHint(err)
		}
		defer func() {
			if err := guard.Close(); err != nil {
				log.Warn("remove guard", zap.Error(err))
			}
		}()
	}

	r, err := relay.New(relay.Config{From: from, To: to, Mode: mode, Plain: *plain, Impair: spec, Log: log, UDPPort: udpPort}, src, sink)
	if err != nil {
		return err
	}

	ctx, stop := signalContext()
	defer stop()
	reg, err := relayRegistry(r, func() uint64 { return src.Stats().KernelDrops })
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	if err := ops.startEndpoints(ctx, log, reg, errc); err != nil {
		return err
	}
	// The lab waits for this line.
	log.Info("relay ready",
		zap.String("allow_from", from.String()),
		zap.String("allow_to", to.String()),
		zap.Stringer("mode", mode),
		zap.Bool("plain", *plain),
		zap.String("impair", spec.String()),
		zap.String("metrics", ops.metrics),
		zap.Bool("guard", guard != nil),
		zap.String("local", localList(r)))
	if err := sdNotify("READY=1"); err != nil {
		log.Warn("readiness notification", zap.Error(err))
	}
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	stopErr := make(chan error, 1) // a serving goroutine's error ends the relay
	go func() {
		select {
		case err := <-errc:
			log.Error("stopping", zap.Error(err))
			stopErr <- err
			rcancel()
		case <-rctx.Done():
		}
	}()
	running = true
	runErr := r.Run(rctx)
	rcancel()
	_ = sdNotify("STOPPING=1")
	log.Info("relay stopped", append(r.Stats().Fields(), zap.Uint64("capture_kernel_drops", src.Stats().KernelDrops))...)
	if runErr == nil {
		select {
		case runErr = <-stopErr:
		default:
		}
	}
	return runErr
}

// relayLists resolves --allow, --allow-from and --allow-to into the two lists.
func relayLists(allow, from, to string) (relay.Allowlist, relay.Allowlist, error) {
	if from == "" {
		from = allow
	}
	if to == "" {
		to = allow
	}
	if from == "" || to == "" {
		return relay.Allowlist{}, relay.Allowlist{}, errors.New("--allow, or --allow-from and --allow-to, are required")
	}
	f, err := relay.ParseAllowlist(from)
	if err != nil {
		return relay.Allowlist{}, relay.Allowlist{}, fmt.Errorf("--allow-from: %w", err)
	}
	t, err := relay.ParseAllowlist(to)
	if err != nil {
		return relay.Allowlist{}, relay.Allowlist{}, fmt.Errorf("--allow-to: %w", err)
	}
	return f, t, nil
}

// relayRegistry is the relay's metrics registry; kernelDrops reads the capture ring's
// drop counter.
func relayRegistry(r *relay.Relay, kernelDrops func() uint64) (*prometheus.Registry, error) {
	return newRegistry(append(r.Collectors(), prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "mpath_relay_capture_kernel_drops_total",
		Help: "Packets the kernel dropped because the relay's receive ring was full (the relay could not keep up).",
	}, func() float64 { return float64(kernelDrops()) }))...)
}

func localList(r *relay.Relay) string {
	addrs, _ := relay.InterfaceAddrs()
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}
