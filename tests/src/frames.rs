//! Crafted Ethernet frames for the kernel tests and benchmarks.
//!
//! A [`Packet`] describes a frame header by header — Ethernet, VLAN tags,
//! IPv4 (options, fragment fields, deliberately wrong version/IHL/length) or
//! IPv6 (extension-header chains), TCP/UDP — and [`Packet::build`] turns it
//! into bytes plus the offset where each header starts, so a test can cut a
//! valid frame at any boundary. Checksums (IPv4 header, TCP/UDP with the
//! pseudo-header) are computed unless a field is overridden on purpose.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Length of the Ethernet header without VLAN tags.
pub const ETH_HLEN: usize = 14;

/// EtherType values.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q VLAN tag (customer tag).
    pub const VLAN_8021Q: u16 = 0x8100;
    /// 802.1ad VLAN tag (service tag, outer tag of QinQ).
    pub const VLAN_8021AD: u16 = 0x88a8;
}

/// IP protocol / IPv6 next-header numbers.
pub mod proto {
    /// IPv6 hop-by-hop options.
    pub const HOP_BY_HOP: u8 = 0;
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Authentication header.
    pub const AUTH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 "no next header".
    pub const NO_NEXT: u8 = 59;
    /// IPv6 destination options.
    pub const DEST_OPTS: u8 = 60;
}

/// TCP flag bits (byte 13 of the TCP header).
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// An IPv4 header. Fields left at `None` are computed.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Version nibble; anything but 4 makes a malformed header.
    pub version: u8,
    /// IHL in 32-bit words; `None`: `5 + options / 4`.
    pub ihl: Option<u8>,
    /// Option bytes, zero-padded to a multiple of 4 (at most 40).
    pub options: Vec<u8>,
    /// DF flag.
    pub dont_fragment: bool,
    /// MF flag.
    pub more_fragments: bool,
    /// Fragment offset in 8-byte units (13 bits).
    pub fragment_offset: u16,
    /// Total length; `None`: the real length of header and payload.
    pub total_len: Option<u16>,
    /// Protocol; `None`: taken from the transport header.
    pub protocol: Option<u8>,
    /// Time to live.
    pub ttl: u8,
}

/// An IPv6 extension header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtHeader {
    /// Hop-by-hop options, `(len + 1) * 8` bytes.
    HopByHop {
        /// Hdr Ext Len (8-octet units beyond the first 8).
        len: u8,
    },
    /// Routing header, `(len + 1) * 8` bytes (segments left 0).
    Routing {
        /// Hdr Ext Len.
        len: u8,
    },
    /// Destination options, `(len + 1) * 8` bytes.
    DestOpts {
        /// Hdr Ext Len.
        len: u8,
    },
    /// Authentication header, `(len + 2) * 4` bytes.
    Auth {
        /// Payload Len (4-octet units minus 2).
        len: u8,
    },
    /// Fragment header, 8 bytes.
    Fragment {
        /// Fragment offset in 8-byte units (13 bits).
        offset: u16,
        /// M flag.
        more: bool,
    },
}

impl ExtHeader {
    /// The next-header value that announces this header.
    pub fn protocol(self) -> u8 {
        match self {
            Self::HopByHop { .. } => proto::HOP_BY_HOP,
            Self::Routing { .. } => proto::ROUTING,
            Self::DestOpts { .. } => proto::DEST_OPTS,
            Self::Auth { .. } => proto::AUTH,
            Self::Fragment { .. } => proto::FRAGMENT,
        }
    }

    /// Length on the wire.
    pub fn wire_len(self) -> usize {
        match self {
            Self::HopByHop { len } | Self::Routing { len } | Self::DestOpts { len } => {
                (usize::from(len) + 1) * 8
            }
            Self::Auth { len } => (usize::from(len) + 2) * 4,
            Self::Fragment { .. } => 8,
        }
    }

    fn write(self, next: u8, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.wire_len(), 0);
        let hdr = &mut out[start..];
        hdr[0] = next;
        match self {
            // Options are Pad1 (zero) bytes: valid and skippable.
            Self::HopByHop { len } | Self::DestOpts { len } => hdr[1] = len,
            Self::Routing { len } => {
                hdr[1] = len;
                hdr[2] = 4; // segment routing header type; segments left 0
            }
            Self::Auth { len } => {
                hdr[1] = len;
                hdr[4..8].copy_from_slice(&0x100u32.to_be_bytes()); // SPI
            }
            Self::Fragment { offset, more } => {
                let field = (offset & 0x1fff) << 3 | u16::from(more);
                hdr[2..4].copy_from_slice(&field.to_be_bytes());
                hdr[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
            }
        }
    }
}

/// An IPv6 header with its extension-header chain.
#[derive(Clone, Debug)]
pub struct Ipv6 {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Version nibble; anything but 6 makes a malformed header.
    pub version: u8,
    /// Extension headers, in order, between the fixed header and the transport.
    pub ext: Vec<ExtHeader>,
    /// Hop limit.
    pub hop_limit: u8,
}

/// The network layer of a frame.
#[derive(Clone, Debug)]
pub enum Network {
    /// IPv4.
    V4(Ipv4),
    /// IPv6.
    V6(Ipv6),
    /// Any other EtherType with an opaque body (the transport is ignored).
    Raw {
        /// EtherType after the VLAN tags.
        ethertype: u16,
        /// Bytes after the Ethernet header.
        body: Vec<u8>,
    },
}

/// The transport layer of a frame.
#[derive(Clone, Debug)]
pub enum Transport {
    /// TCP, fixed 20-byte header plus `options`.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flag byte, see [`tcp_flags`].
        flags: u8,
        /// Data offset in 32-bit words; `None`: `5 + options / 4`.
        data_offset: Option<u8>,
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// Any other protocol: raw header bytes.
    Other {
        /// IP protocol number.
        protocol: u8,
        /// Header bytes.
        bytes: Vec<u8>,
    },
}

impl Transport {
    /// IP protocol number.
    pub fn protocol(&self) -> u8 {
        match self {
            Self::Tcp { .. } => proto::TCP,
            Self::Udp { .. } => proto::UDP,
            Self::Other { protocol, .. } => *protocol,
        }
    }
}

/// A frame to build. Fields are public: tweak them to craft a broken frame.
#[derive(Clone, Debug)]
pub struct Packet {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// VLAN tags, outermost first: (TPID, TCI).
    pub vlans: Vec<(u16, u16)>,
    /// Network layer.
    pub network: Network,
    /// Transport layer (ignored for [`Network::Raw`]).
    pub transport: Transport,
    /// Bytes after the transport header.
    pub payload: Vec<u8>,
}

/// Where a header starts inside a built frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Boundary {
    /// Header name: `ethernet`, `vlan`, `ipv4`, `ipv6`, `ipv6-ext`, `tcp`, `udp`, `l4`, `payload`.
    pub name: &'static str,
    /// Offset of its first byte.
    pub offset: usize,
}

/// A built frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The bytes on the wire (no FCS).
    pub bytes: Vec<u8>,
    /// Offset of the network header.
    pub l3: usize,
    /// Offset of the transport header.
    pub l4: usize,
    /// Offset just past the transport header (where the payload starts).
    pub l4_end: usize,
    /// Every header's start, in order.
    pub boundaries: Vec<Boundary>,
}

impl Frame {
    /// The first `len` bytes (at most the whole frame).
    pub fn cut(&self, len: usize) -> &[u8] {
        &self.bytes[..len.min(self.bytes.len())]
    }

    /// The header a cut of `len` bytes ends inside (or `payload`/`end`).
    pub fn header_at(&self, len: usize) -> &'static str {
        self.boundaries
            .iter()
            .rev()
            .find(|b| b.offset <= len)
            .map_or("ethernet", |b| b.name)
    }
}

const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

impl Ipv4 {
    /// A plain 20-byte header from `src` to `dst`.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Self {
            src,
            dst,
            version: 4,
            ihl: None,
            options: Vec::new(),
            dont_fragment: true,
            more_fragments: false,
            fragment_offset: 0,
            total_len: None,
            protocol: None,
            ttl: 64,
        }
    }
}

impl Ipv6 {
    /// A 40-byte header from `src` to `dst`, no extension headers.
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        Self {
            src,
            dst,
            version: 6,
            ext: Vec::new(),
            hop_limit: 64,
        }
    }
}

impl Packet {
    fn with_network(network: Network) -> Self {
        Self {
            dst_mac: DST_MAC,
            src_mac: SRC_MAC,
            vlans: Vec::new(),
            network,
            transport: Transport::Udp {
                sport: 40000,
                dport: 8080,
            },
            payload: Vec::new(),
        }
    }

    /// IPv4 from `src` to `dst` (UDP 40000 → 8080 until a transport is set).
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Self::with_network(Network::V4(Ipv4::new(src, dst)))
    }

    /// IPv6 from `src` to `dst` (UDP 40000 → 8080 until a transport is set).
    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        Self::with_network(Network::V6(Ipv6::new(src, dst)))
    }

    /// Any EtherType with an opaque body.
    pub fn raw(ethertype: u16, body: Vec<u8>) -> Self {
        Self::with_network(Network::Raw { ethertype, body })
    }

    /// An ARP request (who-has `target` tell `sender`).
    pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Self {
        let mut body = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
        body.extend_from_slice(&SRC_MAC);
        body.extend_from_slice(&sender.octets());
        body.extend_from_slice(&[0; 6]);
        body.extend_from_slice(&target.octets());
        let mut p = Self::raw(ethertype::ARP, body);
        p.dst_mac = [0xff; 6];
        p
    }

    /// Appends a VLAN tag (inside the ones already added).
    pub fn vlan(mut self, tpid: u16, vid: u16) -> Self {
        self.vlans.push((tpid, vid & 0x0fff));
        self
    }

    /// TCP from `sport` to `dport` with `flags`.
    pub fn tcp(mut self, sport: u16, dport: u16, flags: u8) -> Self {
        self.transport = Transport::Tcp {
            sport,
            dport,
            flags,
            data_offset: None,
        };
        self
    }

    /// UDP from `sport` to `dport`.
    pub fn udp(mut self, sport: u16, dport: u16) -> Self {
        self.transport = Transport::Udp { sport, dport };
        self
    }

    /// Another transport protocol with the given header bytes.
    pub fn other(mut self, protocol: u8, bytes: Vec<u8>) -> Self {
        self.transport = Transport::Other { protocol, bytes };
        self
    }

    /// Payload after the transport header.
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// Edits the IPv4 header. Panics on another network layer.
    pub fn ipv4_with(mut self, edit: impl FnOnce(&mut Ipv4)) -> Self {
        match &mut self.network {
            Network::V4(h) => edit(h),
            other => panic!("ipv4_with on {other:?}"),
        }
        self
    }

    /// Appends an IPv6 extension header. Panics on another network layer.
    pub fn ext(mut self, header: ExtHeader) -> Self {
        match &mut self.network {
            Network::V6(h) => h.ext.push(header),
            other => panic!("ext on {other:?}"),
        }
        self
    }

    /// Edits the IPv6 header. Panics on another network layer.
    pub fn ipv6_with(mut self, edit: impl FnOnce(&mut Ipv6)) -> Self {
        match &mut self.network {
            Network::V6(h) => edit(h),
            other => panic!("ipv6_with on {other:?}"),
        }
        self
    }

    /// Serializes the frame.
    pub fn build(&self) -> Frame {
        let mut out = Vec::with_capacity(128);
        let mut boundaries = vec![Boundary {
            name: "ethernet",
            offset: 0,
        }];
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_mac);
        for (tpid, tci) in &self.vlans {
            // A tag is a TPID where the EtherType would be, then the TCI; the
            // tag "starts" at its TCI (the TPID is read as the EtherType).
            out.extend_from_slice(&tpid.to_be_bytes());
            boundaries.push(Boundary {
                name: "vlan",
                offset: out.len(),
            });
            out.extend_from_slice(&tci.to_be_bytes());
        }
        let ethertype = match &self.network {
            Network::V4(_) => ethertype::IPV4,
            Network::V6(_) => ethertype::IPV6,
            Network::Raw { ethertype, .. } => *ethertype,
        };
        out.extend_from_slice(&ethertype.to_be_bytes());
        let l3 = out.len();

        let transport = self.transport_bytes();
        let l4_len = transport.len();
        let (l4, l4_end) = match &self.network {
            Network::Raw { body, .. } => {
                boundaries.push(Boundary {
                    name: "l3-raw",
                    offset: l3,
                });
                out.extend_from_slice(body);
                return Frame {
                    l3,
                    l4: out.len(),
                    l4_end: out.len(),
                    bytes: out,
                    boundaries,
                };
            }
            Network::V4(h) => {
                boundaries.push(Boundary {
                    name: "ipv4",
                    offset: l3,
                });
                let l4_total = l4_len + self.payload.len();
                out.extend_from_slice(&ipv4_header(h, self.transport.protocol(), l4_total));
                let l4 = out.len();
                let mut seg = transport;
                seg.extend_from_slice(&self.payload);
                let pseudo = pseudo_v4(h, self.transport.protocol(), seg.len());
                fill_l4_checksum(&self.transport, &pseudo, &mut seg);
                out.extend_from_slice(&seg);
                (l4, l4 + l4_len)
            }
            Network::V6(h) => {
                boundaries.push(Boundary {
                    name: "ipv6",
                    offset: l3,
                });
                let ext_len: usize = h.ext.iter().map(|e| e.wire_len()).sum();
                let payload_len = ext_len + l4_len + self.payload.len();
                out.push(h.version << 4);
                out.extend_from_slice(&[0, 0, 0]);
                out.extend_from_slice(&(payload_len as u16).to_be_bytes());
                let protocol = self.transport.protocol();
                let first_next = h.ext.first().map_or(protocol, |e| e.protocol());
                out.push(first_next);
                out.push(h.hop_limit);
                out.extend_from_slice(&h.src.octets());
                out.extend_from_slice(&h.dst.octets());
                for (i, ext) in h.ext.iter().enumerate() {
                    boundaries.push(Boundary {
                        name: "ipv6-ext",
                        offset: out.len(),
                    });
                    let next = h.ext.get(i + 1).map_or(protocol, |e| e.protocol());
                    ext.write(next, &mut out);
                }
                let l4 = out.len();
                let mut seg = transport;
                seg.extend_from_slice(&self.payload);
                let pseudo = pseudo_v6(h, protocol, seg.len());
                fill_l4_checksum(&self.transport, &pseudo, &mut seg);
                out.extend_from_slice(&seg);
                (l4, l4 + l4_len)
            }
        };
        boundaries.push(Boundary {
            name: match self.transport {
                Transport::Tcp { .. } => "tcp",
                Transport::Udp { .. } => "udp",
                Transport::Other { .. } => "l4",
            },
            offset: l4,
        });
        boundaries.push(Boundary {
            name: "payload",
            offset: l4_end,
        });
        Frame {
            bytes: out,
            l3,
            l4,
            l4_end,
            boundaries,
        }
    }

    /// The transport header with a zero checksum.
    fn transport_bytes(&self) -> Vec<u8> {
        match &self.transport {
            Transport::Tcp {
                sport,
                dport,
                flags,
                data_offset,
            } => {
                let mut h = vec![0u8; 20];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[4..8].copy_from_slice(&1000u32.to_be_bytes()); // seq
                if flags & tcp_flags::ACK != 0 {
                    h[8..12].copy_from_slice(&2000u32.to_be_bytes());
                }
                h[12] = data_offset.unwrap_or(5) << 4;
                h[13] = *flags;
                h[14..16].copy_from_slice(&64240u16.to_be_bytes()); // window
                h
            }
            Transport::Udp { sport, dport } => {
                let mut h = vec![0u8; 8];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                let len = 8 + self.payload.len();
                h[4..6].copy_from_slice(&(len as u16).to_be_bytes());
                h
            }
            Transport::Other { bytes, .. } => bytes.clone(),
        }
    }
}

fn ipv4_header(h: &Ipv4, protocol: u8, l4_total: usize) -> Vec<u8> {
    let mut options = h.options.clone();
    options.resize(options.len().div_ceil(4) * 4, 0);
    assert!(options.len() <= 40, "IPv4 options are at most 40 bytes");
    let header_len = 20 + options.len();
    let mut b = vec![0u8; 20];
    let ihl = h.ihl.unwrap_or((header_len / 4) as u8);
    b[0] = (h.version << 4) | (ihl & 0x0f);
    let total = h.total_len.unwrap_or((header_len + l4_total) as u16);
    b[2..4].copy_from_slice(&total.to_be_bytes());
    b[4..6].copy_from_slice(&0x4242u16.to_be_bytes()); // identification
    let frag = (u16::from(h.dont_fragment) << 14)
        | (u16::from(h.more_fragments) << 13)
        | (h.fragment_offset & 0x1fff);
    b[6..8].copy_from_slice(&frag.to_be_bytes());
    b[8] = h.ttl;
    b[9] = h.protocol.unwrap_or(protocol);
    b[12..16].copy_from_slice(&h.src.octets());
    b[16..20].copy_from_slice(&h.dst.octets());
    b.extend_from_slice(&options);
    let sum = internet_checksum(&b);
    b[10..12].copy_from_slice(&sum.to_be_bytes());
    b
}

fn pseudo_v4(h: &Ipv4, protocol: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&h.src.octets());
    p.extend_from_slice(&h.dst.octets());
    p.extend_from_slice(&[0, protocol]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

fn pseudo_v6(h: &Ipv6, protocol: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(&h.src.octets());
    p.extend_from_slice(&h.dst.octets());
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, protocol]);
    p
}

/// Writes the TCP/UDP checksum (pseudo-header + segment) into `seg`.
fn fill_l4_checksum(transport: &Transport, pseudo: &[u8], seg: &mut [u8]) {
    let at = match transport {
        Transport::Tcp { .. } => 16,
        Transport::Udp { .. } => 6,
        Transport::Other { .. } => return,
    };
    let mut all = pseudo.to_vec();
    all.extend_from_slice(seg);
    let mut sum = internet_checksum(&all);
    if sum == 0 && matches!(transport, Transport::Udp { .. }) {
        sum = 0xffff; // 0 means "no checksum" in UDP
    }
    seg[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// RFC 1071 one's-complement checksum of `data` (odd length padded with 0).
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

    #[test]
    fn ipv4_checksum_matches_a_known_header() {
        // The classic example header (checksum field zeroed): 0xb861.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&hdr), 0xb861);
    }

    #[test]
    fn built_ipv4_tcp_frame_has_valid_checksums_and_offsets() {
        let f = Packet::ipv4(A, B)
            .tcp(1234, 8080, tcp_flags::SYN)
            .payload(b"hi")
            .build();
        assert_eq!((f.l3, f.l4, f.l4_end, f.bytes.len()), (14, 34, 54, 56));
        assert_eq!(
            internet_checksum(&f.bytes[14..34]),
            0,
            "IPv4 header sums to 0"
        );
        let mut pseudo = pseudo_v4(&Ipv4::new(A, B), proto::TCP, 22);
        pseudo.extend_from_slice(&f.bytes[34..]);
        assert_eq!(internet_checksum(&pseudo), 0, "TCP checksum verifies");
        assert_eq!(&f.bytes[36..38], &8080u16.to_be_bytes());
        assert_eq!(f.bytes[47], tcp_flags::SYN);
        assert_eq!(f.header_at(20), "ipv4");
        assert_eq!(f.header_at(54), "payload");
    }

    #[test]
    fn vlan_tags_and_ipv6_extension_chain_are_laid_out() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let f = Packet::ipv6(src, Ipv6Addr::LOCALHOST)
            .vlan(ethertype::VLAN_8021AD, 100)
            .vlan(ethertype::VLAN_8021Q, 200)
            .ext(ExtHeader::HopByHop { len: 0 })
            .ext(ExtHeader::Fragment {
                offset: 0,
                more: true,
            })
            .udp(1, 8080)
            .build();
        assert_eq!(&f.bytes[12..14], &ethertype::VLAN_8021AD.to_be_bytes());
        assert_eq!(&f.bytes[16..18], &ethertype::VLAN_8021Q.to_be_bytes());
        assert_eq!(&f.bytes[20..22], &ethertype::IPV6.to_be_bytes());
        assert_eq!(f.l3, 22);
        assert_eq!(f.bytes[f.l3 + 6], proto::HOP_BY_HOP);
        assert_eq!(f.bytes[f.l3 + 40], proto::FRAGMENT);
        assert_eq!(f.bytes[f.l3 + 48], proto::UDP);
        assert_eq!(f.bytes[f.l3 + 51], 1, "M flag, offset 0");
        assert_eq!(f.l4, f.l3 + 56);
        assert_eq!(
            u16::from_be_bytes([f.bytes[f.l3 + 4], f.bytes[f.l3 + 5]]),
            24
        );
    }
}
