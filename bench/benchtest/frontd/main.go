// Command frontd is a test helper, not part of mpath: it serves one socks front (SOCKS5
// or HTTP proxy, dialing targets directly with the kernel's TCP) on a loopback port in
// a process of its own, so that rate comparisons between tools are not skewed by the
// front sharing the test process (and its race detector) with the tool under test.
//
// It prints the address it listens on as the first line of stdout, serves until its
// stdin reaches EOF (the test closed it, or died) or it gets SIGTERM, and then prints
// the front's counters as "relayed=N down=BYTES" on the next line.
//
// Usage: frontd -kind socks|http
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"mpath/socks"
)

type front interface {
	Serve(net.Listener) error
	Close() error
	Stats() socks.FrontStats
}

func main() {
	kind := flag.String("kind", "socks", "socks (SOCKS5) or http (HTTP proxy)")
	flag.Parse()
	var f front
	var err error
	switch *kind {
	case "socks":
		f, err = socks.NewSOCKSServer(socks.SOCKSConfig{Dialer: &socks.DirectDialer{}})
	case "http":
		f, err = socks.NewHTTPServer(socks.HTTPConfig{Dialer: &socks.DirectDialer{}})
	default:
		err = fmt.Errorf("unknown kind %q", *kind)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "frontd:", err)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "frontd:", err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	served := make(chan struct{})
	go func() { f.Serve(ln); close(served) }()

	stop := make(chan struct{}, 2)
	go func() { io.Copy(io.Discard, os.Stdin); stop <- struct{}{} }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	go func() { <-sig; stop <- struct{}{} }()
	<-stop
	f.Close()
	<-served
	st := f.Stats()
	fmt.Printf("relayed=%d down=%d\n", st.Relayed, st.BytesDown)
}
