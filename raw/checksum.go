package raw

import (
	"encoding/binary"
	"math/bits"
)

// sum adds b as big-endian 16-bit words to the ones'-complement accumulator acc,
// 8 bytes at a time with end-around carry. The result is unfolded; fold it with fold.
func sum(b []byte, acc uint64) uint64 {
	var c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[0:8]), 0)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[8:16]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[16:24]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[24:32]), c)
		acc += c
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[0:8]), 0)
		acc += c
		b = b[8:]
	}
	if len(b) >= 4 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b[0:4])), 0)
		acc += c
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b[0:2])), 0)
		acc += c
		b = b[2:]
	}
	if len(b) == 1 {
		acc, c = bits.Add64(acc, uint64(b[0])<<8, 0)
		acc += c
	}
	return acc
}

// fold reduces a 64-bit ones'-complement accumulator to 16 bits (not inverted).
func fold(acc uint64) uint16 {
	s := (acc >> 32) + (acc & 0xffffffff)
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return uint16(s)
}

// checksum is the Internet checksum (RFC 1071) of b with initial sum acc: the value to
// put in a header whose checksum field is zero. A header whose field is filled in
// correctly checksums to 0.
func checksum(b []byte, acc uint64) uint16 { return ^fold(sum(b, acc)) }

// pseudoSum is the sum of the IPv4 pseudo-header for a transport segment of length n.
func pseudoSum(src, dst []byte, proto uint8, n int) uint64 {
	return uint64(binary.BigEndian.Uint16(src[0:2])) + uint64(binary.BigEndian.Uint16(src[2:4])) +
		uint64(binary.BigEndian.Uint16(dst[0:2])) + uint64(binary.BigEndian.Uint16(dst[2:4])) +
		uint64(proto) + uint64(n)
}
