package raw

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DisableOffloads turns off TSO, GSO and GRO on the device dev in the caller's network
// namespace (what `ethtool -K dev tso off gso off gro off` does).
//
// Why it matters: a kernel TCP socket sending over veth hands the pair segments of up
// to 64 KB (TSO/GSO), and AF_PACKET on the far end sees them as one packet: measured
// 8688-byte packets on a 1500-byte veth. The engine's Receiver copes (such a packet
// decodes, its offloaded checksum is completed), but a userspace relay cannot forward
// it through a 1500-byte path. Lab topologies where kernel TCP (Apache, curl) crosses a
// userspace relay should call this on the kernel side's veths.
func DisableOffloads(dev string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("raw: offloads %s: %w", dev, err)
	}
	defer unix.Close(fd)
	for _, cmd := range []uint32{unix.ETHTOOL_STSO, unix.ETHTOOL_SGSO, unix.ETHTOOL_SGRO} {
		if err := ethtoolSet(fd, dev, cmd, 0); err != nil {
			return fmt.Errorf("raw: offloads %s: ethtool %#x: %w", dev, cmd, err)
		}
	}
	return nil
}

// ethtoolValue is struct ethtool_value.
type ethtoolValue struct {
	cmd, data uint32
}

// ifreqData is struct ifreq with the ifr_data member.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

func ethtoolSet(fd int, dev string, cmd, val uint32) error {
	if len(dev) >= unix.IFNAMSIZ {
		return unix.EINVAL
	}
	v := ethtoolValue{cmd: cmd, data: val}
	var ifr ifreqData
	copy(ifr.name[:], dev)
	ifr.data = unsafe.Pointer(&v)
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	if e != 0 {
		return e
	}
	return nil
}
