//! Conversions between IP addresses / networks and the kernel's 16-byte
//! client keys (IPv4-mapped for IPv4).

use std::net::{IpAddr, Ipv6Addr};

use fraiseql_edge_common::{ClientKey, key};
use ipnet::IpNet;

/// The key the XDP program computes for packets from `addr`.
pub fn from_ip(addr: IpAddr, ipv6_mask64: bool) -> ClientKey {
    match addr {
        IpAddr::V4(v4) => key::from_ipv4(v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => key::from_ipv4(v4.octets()),
            None => key::from_ipv6(v6.octets(), ipv6_mask64),
        },
    }
}

/// The address a key stands for (IPv4 for mapped keys).
pub fn to_ip(key: &ClientKey) -> IpAddr {
    let v6 = Ipv6Addr::from(*key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// A network as an LPM-trie prefix over client keys: (prefix bits, key).
pub fn prefix(net: &IpNet) -> (u32, ClientKey) {
    match net {
        IpNet::V4(n) => (
            96 + u32::from(n.prefix_len()),
            key::from_ipv4(n.network().octets()),
        ),
        IpNet::V6(n) => (u32::from(n.prefix_len()), n.network().octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in ["10.1.2.3", "2001:db8::1", "::ffff:192.0.2.7"] {
            let ip: IpAddr = s.parse().unwrap();
            let back = to_ip(&from_ip(ip, false));
            assert_eq!(back.to_canonical(), ip.to_canonical());
        }
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        let (len, key) = prefix(&net);
        assert_eq!(len, 104);
        assert_eq!(&key[12..], &[10, 0, 0, 0]);
        let net6: IpNet = "2001:db8::/32".parse().unwrap();
        let (len, key) = prefix(&net6);
        assert_eq!((len, &key[..4]), (32, &[0x20, 0x01, 0x0d, 0xb8][..]));
    }

    #[test]
    fn ipv6_clients_are_masked_like_the_kernel_does() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(from_ip(a, true), from_ip(b, true));
        assert_ne!(from_ip(a, false), from_ip(b, false));
    }
}
