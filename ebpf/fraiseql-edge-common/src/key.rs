//! How a source address becomes a [`ClientKey`]. The XDP program (from packet
//! headers) and the connection tracker (from socket addresses) both use these
//! functions, so a client's packets and its connections share one key.

use crate::abi::ClientKey;

/// The IPv4-mapped form `::ffff:a.b.c.d`.
#[inline(always)]
pub fn from_ipv4(addr: [u8; 4]) -> ClientKey {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3],
    ]
}

/// True for `::ffff:0:0/96`.
#[inline(always)]
pub fn is_ipv4_mapped(addr: &[u8; 16]) -> bool {
    addr[..10] == [0; 10] && addr[10] == 0xff && addr[11] == 0xff
}

/// An IPv6 source; with `mask64` the interface identifier is zeroed so one
/// /64 (one host, usually) is one client. IPv4-mapped addresses are never masked.
#[inline(always)]
pub fn from_ipv6(mut addr: [u8; 16], mask64: bool) -> ClientKey {
    if mask64 && !is_ipv4_mapped(&addr) {
        addr[8..].copy_from_slice(&[0; 8]);
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_is_mapped() {
        let k = from_ipv4([10, 1, 2, 3]);
        assert!(is_ipv4_mapped(&k));
        assert_eq!(&k[12..], &[10, 1, 2, 3]);
    }

    #[test]
    fn ipv6_masks_to_64_unless_mapped() {
        let a = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9];
        assert_eq!(&from_ipv6(a, true)[8..], &[0; 8]);
        assert_eq!(from_ipv6(a, false), a);
        let mapped = from_ipv4([192, 0, 2, 1]);
        assert_eq!(from_ipv6(mapped, true), mapped);
    }
}
