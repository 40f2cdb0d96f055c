package main

// `mpath status`: scrape a node's metrics endpoint and print the per-path table
// (rendering lives in lab/table, shared with `mpath demo`).

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"mpath/lab/table"
)

const statusMore = `
Reads http://ADDR/metrics from a running 'mpath client' or 'mpath exit' (their --metrics
flag; by default a client on 127.0.0.1:9464, else an exit on 127.0.0.1:9465) and prints one row per path:

  STATE         up, or DOWN when health checks marked the path down
  SHARE tx/rx   the path's share of the bytes this node sent (acknowledged) / received
  BYTES tx/rx   bytes sent / received on the path, headers included
  Mbit/s tx/rx  send / receive rate since the previous sample (only with --watch)
  SRTT, MIN RTT smoothed and minimum round-trip time (live connections only)
  CWND          congestion windows, IN FLIGHT bytes unacknowledged (live connections)
  RETRANS/LOST  segments re-sent / declared lost on the path

then node lines: flows, reordering, drops by reason, the proxy fronts' or the exit's
counters. A client shows a download in its rx columns, an exit in its tx columns.

Examples:
  mpath status
  mpath status --watch 1s
  mpath status --metrics 127.0.0.1:9465                       # an exit on this host
  ip netns exec mpath-c mpath status --metrics 127.0.0.1:9090 --watch 2s   # the demo's client
  ip netns exec mpath-x mpath status --metrics 10.77.255.2:9091            # the demo's exit
`

func init() {
	register("status", "live per-path table from a running node's metrics endpoint", runStatus)
}

func runStatus(args []string) error {
	return statusMain(args, os.Stdout, isTerminal(os.Stdout))
}

// statusMain is runStatus writing to w; clear says whether to redraw in place (w is a
// terminal).
func statusMain(args []string, w io.Writer, clear bool) error {
	fs := newFlagSet("status", "[--metrics ADDR] [--watch INTERVAL] [--count N]", statusMore)
	addr := fs.String("metrics", "", "the node's metrics `ADDR` host:port (its --metrics flag) or a full http:// URL; default: a client on "+defaultClientMetrics+", else an exit on "+defaultExitMetrics)
	watch := fs.Duration("watch", 0, "refresh every `INTERVAL`, e.g. 1s, with rates since the previous sample (0: print once)")
	count := fs.Int("count", 0, "with --watch, stop after `N` samples (0: until Ctrl-C), e.g. 5")
	timeout := fs.Duration("timeout", 5*time.Second, "time (`DURATION`) one scrape may take, e.g. 2s")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if *watch < 0 || *count < 0 {
		return usageErrorf("--watch and --count must not be negative")
	}
	ctx, cancel := signalContext()
	defer cancel()
	client := &http.Client{Timeout: *timeout}
	if *addr == "" {
		// The roles' default endpoints: the first that answers as a client or exit.
		var errs []error
		for _, a := range []string{defaultClientMetrics, defaultExitMetrics} {
			if _, err := table.Fetch(ctx, client, a); err != nil {
				errs = append(errs, err)
				continue
			}
			*addr = a
			break
		}
		if *addr == "" {
			return fmt.Errorf("no node on the default metrics addresses (give --metrics ADDR): %w", errors.Join(errs...))
		}
	}
	var prev *table.Snapshot
	ok := 0
	for n := 1; ; n++ {
		snap, err := table.Fetch(ctx, client, *addr)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil // interrupted
		case err != nil && *watch == 0:
			return err
		case err != nil:
			fmt.Fprintf(w, "%s  %v\n", time.Now().Format("15:04:05"), err)
		default:
			ok++
			if clear && *watch > 0 {
				fmt.Fprint(w, "\033[H\033[2J")
			}
			printStatus(w, *addr, snap, prev, *watch)
			prev = snap
		}
		if *watch == 0 || (*count > 0 && n >= *count) {
			if ok == 0 {
				return fmt.Errorf("%d scrapes of %s, none answered", n, *addr)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*watch):
		}
	}
}

func printStatus(w io.Writer, addr string, s, prev *table.Snapshot, watch time.Duration) {
	fmt.Fprintf(w, "mpath %s at %s, %s", s.Role, addr, s.Time.Format("2006-01-02 15:04:05"))
	if watch > 0 {
		fmt.Fprintf(w, " (every %v, rates since the previous sample)", watch)
	}
	fmt.Fprintln(w)
	table.StatusTable(s, prev).Render(w)
	table.NodeLines(w, s)
	if watch > 0 {
		fmt.Fprintln(w)
	}
}
