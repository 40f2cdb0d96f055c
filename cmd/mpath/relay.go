package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"mpath/raw"
	"mpath/relay"
)

const relayMore = `
The relay receives IPIP on every interface of its host and accepts a packet only when
its outer source, inner source and inner destination are all inside --allow. Everything
else is dropped and counted by reason (not_allowed, malformed, fragment, nested_tunnel,
ttl_expired, to_self, martian, impair_loss, queue_full, send_error, overload). The relay
itself never sends ICMP, and an nftables table "mpath_relay" (owned by the process,
gone when it ends) drops the IPIP from --allow sources after the relay captured it, so
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
  mpath relay --allow 10.77.0.0/16,192.0.2.0/24 --mode reencap --metrics :9100
  mpath relay --allow 10.77.0.0/16 --plain --impair delay=40ms,loss=1%,seed=3

Metrics (Prometheus text at http://ADDR/metrics): mpath_relay_forwarded_packets_total{mode},
mpath_relay_forwarded_bytes_total{mode}, mpath_relay_dropped_packets_total{reason}.
SIGINT/SIGTERM stop the relay, remove the nftables table, log the counters, exit 0.
`

// relayFlagSet is newFlagSet, assigned in init: calling newFlagSet directly from
// runRelay makes an initialization cycle (commands -> runRelay -> newFlagSet ->
// commands) that the compiler rejects.
var relayFlagSet func(name, synopsis, more string) *flag.FlagSet

func init() { relayFlagSet = newFlagSet }

func runRelay(args []string) error {
	fs := relayFlagSet("relay", "--allow CIDR[,CIDR...] [--mode forward|reencap] [--plain] [--impair SPEC] [--metrics ADDR]", relayMore)
	allowFlag := fs.String("allow", "", "comma-separated IPv4 `CIDRs` every outer source, inner source and inner destination must be in (required), e.g. 10.77.0.0/16")
	modeFlag := fs.String("mode", "forward", "`forward` (decapsulate and route) or reencap (new outer header from this relay)")
	plain := fs.Bool("plain", false, "also forward plain (non-IPIP) IPv4 transit packets whose source and destination are in --allow, with the same impairments; for hosts with ip_forward=0 (the lab)")
	impairFlag := fs.String("impair", "", "impairments for forwarded packets (`SPEC`, keys below), e.g. delay=30ms,jitter=5ms,loss=0.5%,dup=0.1%,reorder=1%,rate=10mbit,seed=7")
	metrics := fs.String("metrics", "", "serve Prometheus metrics on this `address`, e.g. :9100 or 127.0.0.1:9100 (empty: off)")
	noGuard := fs.Bool("no-guard", false, "do not install the nftables guard (the kernel may then answer captured IPIP with ICMP)")
	debug := fs.Bool("debug", false, "debug logging")
	encapFlag := fs.String("encap", "ipip", "encapsulation `ipip|udp[:PORT]`: with udp (IPv4 in UDP to PORT, default 5555, Linux fou's format) the relay "+
		"takes UDP to PORT as well as IPIP, its guard drops UDP to PORT for the kernel, and in reencap mode it sends UDP, returning each client's "+
		"packets to the address and port that client's packets last came from (NAT)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *allowFlag == "" {
		fs.Usage()
		return errors.New("--allow is required")
	}
	allow, err := relay.ParseAllowlist(*allowFlag)
	if err != nil {
		return err
	}
	mode, err := relay.ParseMode(*modeFlag)
	if err != nil {
		return err
	}
	spec, err := relay.ParseImpair(*impairFlag)
	if err != nil {
		return err
	}
	log := newLogger(*debug).Named("relay")
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
		return err
	}
	sink, err := relay.NewRawSink()
	if err != nil {
		src.Close()
		return err
	}
	defer sink.Close()

	var guard *raw.Guard
	if !*noGuard {
		guard, err = relay.InstallGuardEncap(allow, udpPort)
		if err != nil {
			src.Close()
			return err
		}
		defer func() {
			if err := guard.Close(); err != nil {
				log.Warn("remove guard", zap.Error(err))
			}
		}()
	}

	r, err := relay.New(relay.Config{Allow: allow, Mode: mode, Plain: *plain, Impair: spec, Log: log, UDPPort: udpPort}, src, sink)
	if err != nil {
		src.Close()
		return err
	}

	var srv *http.Server
	metricsAddr := ""
	if *metrics != "" {
		reg := prometheus.NewRegistry()
		cs := append(r.Collectors(), prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mpath_relay_capture_kernel_drops_total",
			Help: "Packets the kernel dropped because the relay's receive ring was full (the relay could not keep up).",
		}, func() float64 { return float64(src.Stats().KernelDrops) }))
		for _, c := range cs {
			if err := reg.Register(c); err != nil {
				src.Close()
				return fmt.Errorf("metrics: %w", err)
			}
		}
		ln, err := net.Listen("tcp", *metrics)
		if err != nil {
			src.Close()
			return fmt.Errorf("metrics: %w", err)
		}
		metricsAddr = ln.Addr().String()
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", zap.Error(err))
			}
		}()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The lab waits for this line.
	log.Info("relay ready",
		zap.String("allow", allow.String()),
		zap.Stringer("mode", mode),
		zap.Bool("plain", *plain),
		zap.String("impair", spec.String()),
		zap.String("metrics", metricsAddr),
		zap.Bool("guard", guard != nil),
		zap.String("local", localList(r)))
	runErr := r.Run(ctx)
	if srv != nil {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = srv.Shutdown(shutdownCtx)
		cancel()
	}
	log.Info("relay stopped", append(r.Stats().Fields(), zap.Uint64("capture_kernel_drops", src.Stats().KernelDrops))...)
	return runErr
}

func localList(r *relay.Relay) string {
	addrs, _ := relay.InterfaceAddrs()
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}
