package raw

// The guard keeps the host kernel away from engine flows:
//
//	table ip <name> {                                 # flags owner: dies with the process
//	  chain prerouting { type filter hook prerouting priority raw;
//	    [ip daddr A] tcp dport P-Q counter drop       # no kernel RSTs for engine segments
//	    ip protocol 4 ip saddr S counter drop         # no ICMP "protocol unreachable" for IPIP
//	    udp dport U counter drop                      # no ICMP "port unreachable" for UDP encapsulation
//	  }
//	  chain output { type filter hook output priority raw;
//	    [ip saddr A] tcp sport P-Q tcp flags & rst != 0 meta mark != PacketMark counter drop
//	  }
//	}
//
// AF_PACKET taps packets before netfilter, so the Receiver still sees everything dropped
// here. Priority raw (-300) runs before conntrack, which therefore never tracks engine
// flows.
//
// How it is installed: google/nftables builds the messages (captured through its test
// dialer instead of being sent), the table message is rewritten with NFTA_TABLE_FLAGS =
// NFT_TABLE_F_OWNER (the library always sends 0), and the whole batch
//
//	NEWTABLE (create-if-missing) ; DELTABLE (the stale one) ; NEWTABLE owner ; chains ; rules
//
// goes to the kernel in one atomic transaction on a netlink socket the Guard keeps open.
// The kernel binds an owner table to that socket and removes it when the socket closes:
// on Close, on exit, on any signal, on kill -9. A table of the same name owned by another
// live process makes NewGuard fail with EPERM rather than steal it.
//
// Names are per instance, mpath_<pid> (or mpath_<role>_<pid>, see InstanceTable), so
// two clients, or a client and an exit, share a host. Before installing, NewGuard
// removes the instance tables whose process is gone (left by a crash on a kernel
// without owner tables, < 5.12) and the pre-instance names "mpath" and "mpath_relay";
// a table a live process owns refuses the delete (EPERM) and stays.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// GuardConfig says what the Guard drops.
type GuardConfig struct {
	Table       string         // nftables table name (family ip); default InstanceTable("")
	Ports       []PortRange    // inbound TCP to these dports dropped; outbound RST from these sports dropped
	Addrs       []netip.Addr   // optional: only for these local (inner) addresses
	IPIPSources []netip.Prefix // inbound IPv4 protocol 4 from these sources dropped
	// UDPPort: inbound UDP to this port (the encapsulation port), from anywhere, dropped;
	// 0 = no rule. The host has no socket there, so the kernel would answer with ICMP.
	UDPPort uint16
}

// Guard is an installed nftables table owned by this process. Safe for concurrent use.
type Guard struct {
	table string
	owned bool

	mu   sync.Mutex // guards conn
	conn *netlink.Conn
}

const nftTableFlagOwner = 0x2 // NFT_TABLE_F_OWNER, Linux >= 5.12

var errCaptured = errors.New("captured")

// NewGuard installs the table, replacing a stale one of the same name in the same
// transaction. The table belongs to the calling process (kernel owner flag) and
// disappears when the process ends, however it ends; Close removes it earlier. On a
// kernel without owner tables (< 5.12) the table is installed without the flag and Owned
// reports false: then only Close removes it, and the next NewGuard replaces it.
func NewGuard(cfg GuardConfig) (*Guard, error) {
	if cfg.Table == "" {
		cfg.Table = InstanceTable("")
	}
	for _, a := range cfg.Addrs {
		if !a.Is4() {
			return nil, fmt.Errorf("raw: guard: address %v is not IPv4", a)
		}
	}
	for _, p := range cfg.IPIPSources {
		if !p.Addr().Is4() {
			return nil, fmt.Errorf("raw: guard: source %v is not IPv4", p)
		}
	}
	msgs, err := guardBatch(cfg)
	if err != nil {
		return nil, fmt.Errorf("raw: guard: build rules: %w", err)
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("raw: guard: netlink: %w", err)
	}
	removeStaleTables(conn, cfg.Table)
	owned := true
	err = execBatch(conn, setTableFlags(msgs, cfg.Table, nftTableFlagOwner))
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
		owned = false
		err = execBatch(conn, msgs)
	}
	if err != nil {
		conn.Close()
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("raw: guard: table %q: owned by another live process or no CAP_NET_ADMIN: %w", cfg.Table, err)
		}
		return nil, fmt.Errorf("raw: guard: install table %q: %w", cfg.Table, err)
	}
	return &Guard{table: cfg.Table, owned: owned, conn: conn}, nil
}

var instanceSeq atomic.Uint32

// InstanceTable returns a table name for a new guard of this process: mpath_<pid> for
// role "", else mpath_<role>_<pid> (role: lower-case letters), with _<n> added for the
// n-th (n >= 2) name this process asks for. The pid lets a later instance tell a stale
// table (its process gone) from a live one.
func InstanceTable(role string) string {
	name := "mpath_"
	if role != "" {
		name += role + "_"
	}
	name += strconv.Itoa(os.Getpid())
	if n := instanceSeq.Add(1); n > 1 {
		name += "_" + strconv.Itoa(int(n))
	}
	return name
}

// legacyTables are the fixed names earlier versions used.
var legacyTables = map[string]bool{"mpath": true, "mpath_relay": true}

// tablePID returns the pid in an instance table name (see InstanceTable).
func tablePID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "mpath_")
	if !ok {
		return 0, false
	}
	f := strings.Split(rest, "_")
	i := 0
	if len(f) > 0 && f[0] != "" && strings.Trim(f[0], "abcdefghijklmnopqrstuvwxyz") == "" {
		i = 1 // role
	}
	if len(f)-i < 1 || len(f)-i > 2 {
		return 0, false
	}
	for _, d := range f[i:] {
		if d == "" || strings.Trim(d, "0123456789") != "" || len(d) > 9 {
			return 0, false
		}
	}
	pid, _ := strconv.Atoi(f[i])
	return pid, pid > 0
}

// staleTable reports whether name is an mpath table that no live process of this host
// can own: an instance table whose pid is gone, or a legacy name.
func staleTable(name string, alive func(pid int) bool) bool {
	if legacyTables[name] {
		return true
	}
	pid, ok := tablePID(name)
	return ok && pid != os.Getpid() && !alive(pid)
}

func pidAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// removeStaleTables deletes the stale mpath tables (staleTable) other than keep, one
// transaction each; failures (EPERM: owned by a live process) are ignored.
func removeStaleTables(conn *netlink.Conn, keep string) {
	c, err := nftables.New()
	if err != nil {
		return
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return
	}
	for _, t := range tables {
		if t.Name == keep || !staleTable(t.Name, pidAlive) {
			continue
		}
		msgs, err := captureMessages(func(c *nftables.Conn) {
			c.DelTable(&nftables.Table{Name: t.Name, Family: nftables.TableFamilyIPv4})
		})
		if err == nil {
			execBatch(conn, msgs)
		}
	}
}

// Table returns the table name.
func (g *Guard) Table() string { return g.table }

// Owned reports whether the kernel ties the table to this process (removed on any exit).
func (g *Guard) Owned() bool { return g.owned }

// Close removes the table and closes the netlink socket. Idempotent.
func (g *Guard) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conn == nil {
		return nil
	}
	conn := g.conn
	g.conn = nil
	msgs, err := captureMessages(func(c *nftables.Conn) {
		c.DelTable(&nftables.Table{Name: g.table, Family: nftables.TableFamilyIPv4})
	})
	if err == nil {
		err = execBatch(conn, msgs)
		if errors.Is(err, unix.ENOENT) { // someone removed it already: the goal is met
			err = nil
		}
	}
	if cerr := conn.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("raw: guard: remove table %q: %w", g.table, err)
	}
	return nil
}

// captureMessages runs build on an nftables.Conn whose "kernel" is a function that keeps
// the batch instead of sending it, and returns that batch (begin and end included).
func captureMessages(build func(c *nftables.Conn)) ([]netlink.Message, error) {
	var got []netlink.Message
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		got = append(got, req...)
		return nil, errCaptured
	}))
	if err != nil {
		return nil, err
	}
	build(c)
	if err := c.Flush(); !errors.Is(err, errCaptured) {
		return nil, fmt.Errorf("nftables: %v", err)
	}
	for i := range got { // let the real socket number them
		got[i].Header.Length, got[i].Header.Sequence, got[i].Header.PID = 0, 0, 0
	}
	return got, nil
}

// guardBatch builds the install transaction.
func guardBatch(cfg GuardConfig) ([]netlink.Message, error) {
	return captureMessages(func(c *nftables.Conn) {
		t := &nftables.Table{Name: cfg.Table, Family: nftables.TableFamilyIPv4}
		c.AddTable(t) // exists afterwards whether or not it did: the delete cannot fail
		c.DelTable(t)
		c.AddTable(t)
		accept := nftables.ChainPolicyAccept
		pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Policy: &accept})
		out := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRaw, Policy: &accept})
		addrs := cfg.Addrs
		if len(addrs) == 0 {
			addrs = []netip.Addr{{}} // one rule set without an address match
		}
		for _, r := range mergeRanges(cfg.Ports) {
			for _, a := range addrs {
				in := ipAddrMatch(16, a) // ip daddr
				in = append(in, tcpPortMatch(2, r)...)
				c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: append(in, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})})

				o := ipAddrMatch(12, a) // ip saddr
				o = append(o, tcpPortMatch(0, r)...)
				o = append(o,
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
					&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x04}, Xor: []byte{0}},
					&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0}},
					&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
					&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, PacketMark)},
					&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
				c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: o})
			}
		}
		for _, p := range cfg.IPIPSources {
			p = p.Masked()
			mask := binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-p.Bits()))
			if p.Bits() == 0 {
				mask = []byte{0, 0, 0, 0}
			}
			e := []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 9, Len: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoIPIP}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
				&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop},
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: e})
		}
		if cfg.UDPPort != 0 {
			c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoUDP}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, cfg.UDPPort)},
				&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop},
			}})
		}
	})
}

// ipAddrMatch matches the IPv4 address at offset off of the network header (12 saddr,
// 16 daddr); nothing when a is the zero Addr.
func ipAddrMatch(off uint32, a netip.Addr) []expr.Any {
	if !a.IsValid() {
		return nil
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
	}
}

// tcpPortMatch matches TCP with the port at transport offset off (0 sport, 2 dport) in r.
func tcpPortMatch(off uint32, r PortRange) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoTCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
		&expr.Range{Op: expr.CmpOpEq, Register: 1,
			FromData: binary.BigEndian.AppendUint16(nil, r.First), ToData: binary.BigEndian.AppendUint16(nil, r.Last)},
	}
}

// setTableFlags returns a copy of msgs in which the last NEWTABLE message for table
// carries NFTA_TABLE_FLAGS = flags. This is the one message google/nftables v0.3.0
// cannot produce; its layout is nfgenmsg + NFTA_TABLE_NAME + NFTA_TABLE_FLAGS.
func setTableFlags(msgs []netlink.Message, table string, flags uint32) []netlink.Message {
	out := append([]netlink.Message(nil), msgs...)
	newTable := netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE)
	for i := len(out) - 1; i >= 0; i-- {
		if out[i].Header.Type != newTable || len(out[i].Data) < 4 {
			continue
		}
		attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
			{Type: unix.NFTA_TABLE_NAME, Data: []byte(table + "\x00")},
			{Type: unix.NFTA_TABLE_FLAGS, Data: binary.BigEndian.AppendUint32(nil, flags)},
		})
		if err != nil {
			return msgs
		}
		out[i].Data = append(append([]byte(nil), out[i].Data[:4]...), attrs...) // keep nfgenmsg
		break
	}
	return out
}

// execBatch sends one nfnetlink batch and collects an acknowledgement for every message
// that asked for one; the first error the kernel reports is returned (the kernel has
// then rolled the whole batch back).
func execBatch(conn *netlink.Conn, msgs []netlink.Message) error {
	want := 0
	for _, m := range msgs {
		if m.Header.Flags&netlink.Acknowledge != 0 {
			want++
		}
	}
	if _, err := conn.SendMessages(msgs); err != nil {
		return err
	}
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	defer conn.SetReadDeadline(time.Time{})
	for got := 0; got < want; {
		replies, err := conn.Receive()
		if err != nil {
			return err
		}
		got += len(replies)
	}
	return nil
}
