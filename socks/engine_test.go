package socks_test

// The exit protocol over the real engine (issue 10): a client stack dials with the
// request in its SYN, built once the local port is known; the exit's listener admits
// the SYN with Exit.VerifySYN before it keeps anything. Simulated network, virtual time.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"mpath/socks"
	"mpath/tcp"
	"mpath/tcp/simnet"
)

func TestExitOverEngine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := simnet.New(1, []simnet.PathSpec{{Rate: 50e6, Delay: 5 * time.Millisecond}, {Rate: 50e6, Delay: 12 * time.Millisecond}})
		defer n.Close()
		cfg := func(a string) tcp.Config {
			return tcp.Config{Addr: netip.MustParseAddr(a), Paths: []tcp.PathConfig{{Name: "p0"}, {Name: "p1"}}, Loops: 1, AcceptSYNData: true}
		}
		cs, err := tcp.NewStack(cfg("10.77.0.1"), n.Host(0))
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		n.Host(0).Attach(cs)
		xs, err := tcp.NewStack(cfg("10.77.255.2"), n.Host(1))
		if err != nil {
			t.Fatal(err)
		}
		defer xs.Close()
		n.Host(1).Attach(xs)

		// The target: an echo server at the other end of a pipe.
		dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
			a, b := net.Pipe()
			go func() { io.Copy(b, b); b.Close() }()
			return a, nil
		}
		x, err := socks.NewExit(socks.ExitConfig{Key: testKey, Deny: []netip.Prefix{}, Dial: dial})
		if err != nil {
			t.Fatal(err)
		}
		exitAP := netip.MustParseAddrPort("10.77.255.2:7000")
		ln, err := xs.ListenOptions(exitAP.Port(), tcp.ListenOptions{VerifySYN: x.VerifySYN})
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- x.Serve(ln) }()
		defer func() {
			x.Close()
			ln.Close()
			if err := <-served; !errors.Is(err, socks.ErrServerClosed) {
				t.Errorf("Serve: %v", err)
			}
		}()
		dialer := func(key []byte) *socks.TunnelDialer {
			return &socks.TunnelDialer{Key: key, Timeout: 3 * time.Second,
				Flow: func(ctx context.Context, first func(socks.FlowAddrs) []byte) (net.Conn, error) {
					return cs.DialOptions(ctx, exitAP, tcp.DialOptions{NoTimestamps: true,
						SYNDataFunc: func(local, remote netip.AddrPort) []byte {
							return first(socks.FlowAddrs{Client: local, Exit: remote})
						}})
				}}
		}

		c, err := dialer(testKey).DialTarget(context.Background(), "192.0.2.1:80")
		if err != nil {
			t.Fatalf("dial through the exit: %v", err)
		}
		data := bytes.Repeat([]byte("mpath issue 10 "), 20_000)
		go func() {
			c.Write(data)
			c.(interface{ CloseWrite() error }).CloseWrite()
		}()
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("read the echo: %v", err)
		}
		if sha256.Sum256(got) != sha256.Sum256(data) {
			t.Fatalf("echo: %d bytes, sha256 differs from the %d sent", len(got), len(data))
		}
		c.Close()

		// The wrong key: the exit's listener drops the SYN and never answers; the
		// dialer times out. Nothing was kept for it.
		_, err = dialer([]byte("the-wrong-key-the-wrong-key-!!!!")).DialTarget(context.Background(), "192.0.2.1:80")
		var re *socks.ReplyError
		if !errors.As(err, &re) || re.Code != socks.ReplyTTLExpired {
			t.Fatalf("wrong key: %v, want a timeout", err)
		}
		st, xst := xs.Stats(), x.Stats()
		if st.DropsUnauth == 0 || xst.Refused["syn_bad_mac"] != st.DropsUnauth {
			t.Fatalf("wrong key: engine refused %d SYNs, exit counted %v", st.DropsUnauth, xst.Refused)
		}
		if xst.Relayed != 1 || xst.Accepted != 1 {
			t.Fatalf("exit stats %+v, want one flow accepted and relayed", xst)
		}
	})
}
