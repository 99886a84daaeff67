//! The XDP program on crafted frames, through `BPF_PROG_TEST_RUN`.
//!
//! Each test loads its own copy of the object (maps pinned in a private
//! bpffs directory), writes a configuration with the daemon's own
//! `KernelMaps::apply`, runs frames built by `fraiseql_edge_tests::frames`
//! and asserts the verdict and the exact change of every counter: a test
//! that expects `passed + 1` also proves that nothing else moved.
//!
//! Limits use 1 packet/s refills where a drop must follow a burst: a burst
//! and the next packet are sent within microseconds, and a run that took
//! longer than half a refill (a stalled machine) is repeated with a fresh
//! client instead of asserting on timing.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, RingBuf},
    programs::{ProgramError, TestRun, TestRunOptions, Xdp},
};
use fraiseql_edge::{
    config::Config,
    kernel::{self, KernelMaps, MapsError, maps::open_pin},
};
use fraiseql_edge_common::{
    ClientKey, ConnCount, Counter, DropEvent, DropReason, FlowKey, PENDING_TIMEOUT_NS, PendingConn,
    key, maps, programs,
};
use fraiseql_edge_tests::{
    PinDir,
    frames::{ETH_HLEN, ExtHeader, Frame, Packet, Transport, ethertype, proto, tcp_flags},
    kernel_tests_enabled,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const PORT: u16 = 8080;
const COUNTERS: usize = Counter::COUNT as usize;
/// A burst and its next packet must fit in this to prove a drop (refill 1/s).
const REFILL_GUARD: Duration = Duration::from_millis(500);

const HOST_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const HOST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

/// Generous limits: classification tests never hit them.
const ROOMY: &str = "rate = 1000\nburst = 1000\nmax_conns = 0\n";

fn client_v4(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, n)
}

fn client_v6(net: u16, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, net, 0, 0, 0, host)
}

fn udp4(src: Ipv4Addr, dport: u16) -> Packet {
    Packet::ipv4(src, HOST_V4).udp(40000, dport)
}

fn tcp4(src: Ipv4Addr, dport: u16, flags: u8) -> Packet {
    Packet::ipv4(src, HOST_V4).tcp(40000, dport, flags)
}

fn udp6(src: Ipv6Addr, dport: u16) -> Packet {
    Packet::ipv6(src, HOST_V6).udp(40000, dport)
}

fn tcp6(src: Ipv6Addr, dport: u16, flags: u8) -> Packet {
    Packet::ipv6(src, HOST_V6).tcp(40000, dport, flags)
}

fn verdict(v: u32) -> &'static str {
    match v {
        0 => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        3 => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "unknown",
    }
}

/// Non-zero counter changes, by name, in index order.
fn named(delta: &[u64; COUNTERS]) -> Vec<(&'static str, u64)> {
    Counter::ALL
        .iter()
        .map(|(c, name)| (*name, delta[*c as usize]))
        .filter(|(_, n)| *n != 0)
        .collect()
}

fn want(changes: &[(Counter, u64)]) -> [u64; COUNTERS] {
    let mut w = [0; COUNTERS];
    for (c, n) in changes {
        w[*c as usize] += n;
    }
    w
}

/// What one frame did: the verdict and every counter's change.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    verdict: &'static str,
    counted: Vec<(&'static str, u64)>,
}

impl Outcome {
    fn new(v: u32, changes: &[(Counter, u64)]) -> Self {
        Self {
            verdict: verdict(v),
            counted: named(&want(changes)),
        }
    }
}

/// One loaded copy of the object with its own pinned maps.
struct Prog {
    ebpf: Ebpf,
    maps: KernelMaps,
    pin: PinDir,
}

impl Prog {
    /// Loads the object and the XDP program; the configuration is not written.
    fn load_unconfigured(name: &str) -> Self {
        let pin = PinDir::new(name);
        let mut ebpf = kernel::load_object(&pin.0, false).expect("load object");
        let xdp: &mut Xdp = ebpf
            .program_mut(programs::XDP)
            .expect("XDP program in object")
            .try_into()
            .expect("XDP program type");
        xdp.load().expect("verifier accepts the XDP program");
        let maps =
            KernelMaps::from_source(|name| ebpf.take_map(name).ok_or(MapsError::Missing(name)))
                .expect("maps");
        Self { ebpf, maps, pin }
    }

    /// Loads the object and applies `[kernel]` settings `extra` (on top of
    /// `protected_ports = [8080]`).
    fn load(name: &str, extra: &str) -> Self {
        let mut prog = Self::load_unconfigured(name);
        prog.apply(extra);
        prog
    }

    fn apply(&mut self, extra: &str) {
        let toml = format!("[kernel]\ninterfaces = [\"lo\"]\nprotected_ports = [{PORT}]\n{extra}");
        let cfg = Config::from_toml(&toml).expect("test config").kernel;
        self.maps.apply(&cfg).expect("apply config");
    }

    fn run(&self, frame: &[u8]) -> Result<u32, ProgramError> {
        let xdp: &Xdp = self
            .ebpf
            .program(programs::XDP)
            .expect("XDP program")
            .try_into()
            .expect("XDP type");
        xdp.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..TestRunOptions::new()
        })
        .map(|r| r.return_value)
    }

    fn stats(&self) -> [u64; COUNTERS] {
        let mut out = [0; COUNTERS];
        for (c, _) in Counter::ALL {
            out[c as usize] = self.maps.counter(c).expect("read counter");
        }
        out
    }

    /// Runs one frame; returns its verdict and counter changes.
    fn observe(&self, frame: &[u8]) -> Outcome {
        let before = self.stats();
        let v = self
            .run(frame)
            .unwrap_or_else(|e| panic!("test_run on a {}-byte frame: {e}", frame.len()));
        let after = self.stats();
        let mut delta = [0; COUNTERS];
        for i in 0..COUNTERS {
            delta[i] = after[i] - before[i];
        }
        Outcome {
            verdict: verdict(v),
            counted: named(&delta),
        }
    }

    /// Runs one frame and asserts its verdict and the exact counter changes.
    #[track_caller]
    fn expect(&self, what: &str, frame: &[u8], v: u32, changes: &[(Counter, u64)]) {
        assert_eq!(self.observe(frame), Outcome::new(v, changes), "{what}");
    }

    /// A pinned map of this object, opened as a hash map.
    fn hash_map<V: aya::Pod>(&self, name: &'static str) -> BpfHashMap<MapData, ClientKey, V> {
        BpfHashMap::try_from(open_pin(&self.pin.0, name).expect("open pin")).expect("hash map")
    }
}

/// Runs `attempt(i)` (which must use a client of its own for each `i`)
/// until one run finishes within [`REFILL_GUARD`]; returns its observations.
fn before_refill<T>(mut attempt: impl FnMut(u8) -> T) -> T {
    for i in 0..5 {
        let start = Instant::now();
        let out = attempt(i);
        if start.elapsed() < REFILL_GUARD {
            return out;
        }
        eprintln!(
            "attempt {i} took {:?}; retrying with a new client",
            start.elapsed()
        );
    }
    panic!("five attempts in a row took longer than {REFILL_GUARD:?}");
}

/// Expected counter changes.
type Changes = &'static [(Counter, u64)];

const FIRST_PASS: &[(Counter, u64)] = &[(Counter::Passed, 1), (Counter::NewClients, 1)];
const PASS: &[(Counter, u64)] = &[(Counter::Passed, 1)];
const NOT_PROTECTED: &[(Counter, u64)] = &[(Counter::NotProtected, 1)];
const MALFORMED: &[(Counter, u64)] = &[(Counter::Malformed, 1)];
const FRAGMENT: &[(Counter, u64)] = &[(Counter::Fragments, 1)];

#[test]
fn program_passes_everything_until_configured() {
    if !kernel_tests_enabled("program_passes_everything_until_configured") {
        return;
    }
    let mut p = Prog::load_unconfigured("prog-unconfigured");
    let frame = udp4(client_v4(1), PORT).build();
    p.expect("before apply", &frame.bytes, XDP_PASS, NOT_PROTECTED);
    p.apply(ROOMY);
    p.expect("after apply", &frame.bytes, XDP_PASS, FIRST_PASS);
}

#[test]
fn program_ipv4_tcp_and_udp_to_protected_port_pass_counted() {
    if !kernel_tests_enabled("program_ipv4_tcp_and_udp_to_protected_port_pass_counted") {
        return;
    }
    let p = Prog::load("prog-ipv4", ROOMY);
    let c = client_v4(1);
    p.expect(
        "first TCP SYN",
        &tcp4(c, PORT, tcp_flags::SYN).build().bytes,
        XDP_PASS,
        FIRST_PASS,
    );
    p.expect(
        "TCP ACK with payload",
        &tcp4(c, PORT, tcp_flags::ACK | tcp_flags::PSH)
            .payload(b"POST /graphql")
            .build()
            .bytes,
        XDP_PASS,
        PASS,
    );
    p.expect(
        "UDP",
        &udp4(c, PORT).payload(&[0; 100]).build().bytes,
        XDP_PASS,
        PASS,
    );
    p.expect(
        "UDP from another client",
        &udp4(client_v4(2), PORT).build().bytes,
        XDP_PASS,
        FIRST_PASS,
    );
    let state = p
        .maps
        .client(IpAddr::V4(c))
        .unwrap()
        .expect("client tracked");
    assert_eq!((state.passed, state.dropped), (3, 0));
}

#[test]
fn program_unprotected_ports_and_protocols_pass_uncounted() {
    if !kernel_tests_enabled("program_unprotected_ports_and_protocols_pass_uncounted") {
        return;
    }
    let p = Prog::load("prog-unprotected", ROOMY);
    let c = client_v4(3);
    let cases = [
        ("TCP to port 80", tcp4(c, 80, tcp_flags::SYN)),
        ("UDP to port 53", udp4(c, 53)),
        ("TCP to port 8081", tcp4(c, 8081, tcp_flags::ACK)),
        (
            "UDP from port 8080 to port 40000",
            Packet::ipv4(c, HOST_V4).udp(PORT, 40000),
        ),
        (
            "ICMP echo",
            Packet::ipv4(c, HOST_V4).other(proto::ICMP, vec![8, 0, 0, 0, 0, 1, 0, 1]),
        ),
        (
            "ICMPv6 echo",
            Packet::ipv6(client_v6(1, 1), HOST_V6)
                .other(proto::ICMPV6, vec![128, 0, 0, 0, 0, 1, 0, 1]),
        ),
        ("IPv6 UDP to port 53", udp6(client_v6(1, 1), 53)),
    ];
    for (what, packet) in cases {
        p.expect(what, &packet.build().bytes, XDP_PASS, NOT_PROTECTED);
    }
    assert_eq!(p.maps.client(IpAddr::V4(c)).unwrap(), None, "no state kept");
}

#[test]
fn program_ipv6_tcp_and_udp_are_classified() {
    if !kernel_tests_enabled("program_ipv6_tcp_and_udp_are_classified") {
        return;
    }
    let p = Prog::load("prog-ipv6", ROOMY);
    let c = client_v6(1, 1);
    p.expect(
        "IPv6 SYN",
        &tcp6(c, PORT, tcp_flags::SYN).build().bytes,
        XDP_PASS,
        FIRST_PASS,
    );
    p.expect("IPv6 UDP", &udp6(c, PORT).build().bytes, XDP_PASS, PASS);
    // An IPv4-mapped source is the IPv4 client.
    let mapped = Ipv4Addr::new(198, 18, 0, 77).to_ipv6_mapped();
    p.expect(
        "IPv4-mapped IPv6 source",
        &udp6(mapped, PORT).build().bytes,
        XDP_PASS,
        FIRST_PASS,
    );
    p.expect(
        "the same client over IPv4",
        &udp4(Ipv4Addr::new(198, 18, 0, 77), PORT).build().bytes,
        XDP_PASS,
        PASS,
    );
}

#[test]
fn program_vlan_tags_single_and_double() {
    if !kernel_tests_enabled("program_vlan_tags_single_and_double") {
        return;
    }
    let p = Prog::load("prog-vlan", ROOMY);
    let c = client_v4(4);
    let q = ethertype::VLAN_8021Q;
    let ad = ethertype::VLAN_8021AD;
    p.expect(
        "802.1Q UDP",
        &udp4(c, PORT).vlan(q, 10).build().bytes,
        XDP_PASS,
        FIRST_PASS,
    );
    p.expect(
        "802.1ad + 802.1Q (QinQ) TCP",
        &tcp4(c, PORT, tcp_flags::ACK)
            .vlan(ad, 100)
            .vlan(q, 10)
            .build()
            .bytes,
        XDP_PASS,
        PASS,
    );
    p.expect(
        "802.1Q + 802.1Q IPv6",
        &udp6(client_v6(1, 1), PORT)
            .vlan(q, 1)
            .vlan(q, 2)
            .build()
            .bytes,
        XDP_PASS,
        FIRST_PASS,
    );
    p.expect(
        "802.1Q to an unprotected port",
        &udp4(c, 53).vlan(q, 10).build().bytes,
        XDP_PASS,
        NOT_PROTECTED,
    );
    // A third tag is beyond what the program walks: not classified, passed.
    p.expect(
        "three tags",
        &udp4(c, PORT)
            .vlan(ad, 1)
            .vlan(q, 2)
            .vlan(q, 3)
            .build()
            .bytes,
        XDP_PASS,
        NOT_PROTECTED,
    );
    p.expect(
        "802.1Q carrying ARP",
        &Packet::arp_request(c, HOST_V4).vlan(q, 10).build().bytes,
        XDP_PASS,
        NOT_PROTECTED,
    );
}

/// Cuts `frame` at every length from 0 to its end: shorter than an Ethernet
/// header the kernel refuses the run; every other cut passes, and is
/// `malformed` while any header the program needs is incomplete, `full`
/// once the transport header is whole.
fn check_every_cut(p: &Prog, what: &str, frame: &Frame, full: &[(Counter, u64)]) {
    for len in 0..=frame.bytes.len() {
        let cut = frame.cut(len);
        let at = frame.header_at(len);
        if len < ETH_HLEN {
            let before = p.stats();
            // BPF_PROG_TEST_RUN rejects XDP input shorter than ETH_HLEN with
            // EINVAL: such a frame never reaches the program.
            assert!(p.run(cut).is_err(), "{what}: kernel ran a {len}-byte frame");
            assert_eq!(p.stats(), before, "{what}: {len} bytes counted");
            continue;
        }
        let expected = if len < frame.l4_end { MALFORMED } else { full };
        assert_eq!(
            p.observe(cut),
            Outcome::new(XDP_PASS, expected),
            "{what}: cut at {len} bytes (inside {at})"
        );
    }
}

#[test]
fn program_truncation_at_every_length_passes() {
    if !kernel_tests_enabled("program_truncation_at_every_length_passes") {
        return;
    }
    let p = Prog::load("prog-truncation", ROOMY);
    let q = ethertype::VLAN_8021Q;
    let ad = ethertype::VLAN_8021AD;
    // Every template is first sent whole once so that the full-length cut
    // counts an existing client (`passed` only).
    let templates: Vec<(&str, Frame, Changes)> = vec![
        (
            "IPv4 TCP",
            tcp4(client_v4(10), PORT, tcp_flags::SYN).build(),
            PASS,
        ),
        ("IPv4 UDP", udp4(client_v4(11), PORT).build(), PASS),
        (
            "IPv4 with 8 bytes of options, TCP",
            tcp4(client_v4(12), PORT, tcp_flags::ACK)
                .ipv4_with(|h| h.options = vec![1; 8])
                .build(),
            PASS,
        ),
        (
            "QinQ IPv4 UDP",
            udp4(client_v4(13), PORT).vlan(ad, 5).vlan(q, 6).build(),
            PASS,
        ),
        ("IPv6 UDP", udp6(client_v6(1, 1), PORT).build(), PASS),
        (
            // An atomic fragment: a cut first fragment (M set) is dropped,
            // see program_fragments_and_header_chains_cannot_bypass_enforcement.
            "802.1Q IPv6 hop-by-hop + atomic fragment + TCP",
            tcp6(client_v6(2, 1), PORT, tcp_flags::SYN)
                .vlan(q, 7)
                .ext(ExtHeader::HopByHop { len: 1 })
                .ext(ExtHeader::Fragment {
                    offset: 0,
                    more: false,
                })
                .build(),
            PASS,
        ),
        (
            "IPv4 TCP to an unprotected port",
            tcp4(client_v4(14), 443, tcp_flags::SYN).build(),
            NOT_PROTECTED,
        ),
        (
            "IPv6 UDP to an unprotected port",
            udp6(client_v6(3, 1), 53).build(),
            NOT_PROTECTED,
        ),
    ];
    for (what, frame, full) in &templates {
        if *full == PASS {
            p.expect(what, &frame.bytes, XDP_PASS, FIRST_PASS);
        }
        check_every_cut(&p, what, frame, full);
    }

    // Transport-less frames: the program needs the whole IPv4 header (then
    // the protocol tells it is not TCP/UDP).
    let icmp = Packet::ipv4(client_v4(15), HOST_V4)
        .other(proto::ICMP, vec![8, 0, 0, 0])
        .build();
    check_transportless_cuts(&p, "IPv4 ICMP", &icmp, 20);
}

/// Cuts a frame without a transport header to check at every length from
/// the end of Ethernet: malformed until the fixed IP header (`ip_len`
/// bytes) is complete, not protected from then on; always passed.
fn check_transportless_cuts(p: &Prog, what: &str, frame: &Frame, ip_len: usize) {
    for len in 14..=frame.bytes.len() {
        let expected = if len < frame.l3 + ip_len {
            MALFORMED
        } else {
            NOT_PROTECTED
        };
        assert_eq!(
            p.observe(frame.cut(len)),
            Outcome::new(XDP_PASS, expected),
            "{what} cut at {len}"
        );
    }
}

/// The IPv6 fixed header is 40 bytes; a frame cut inside it is truncated
/// whatever its next-header field says.
#[test]
fn program_truncated_ipv6_header_is_malformed_whatever_the_next_header() {
    if !kernel_tests_enabled("program_truncated_ipv6_header_is_malformed_whatever_the_next_header")
    {
        return;
    }
    let p = Prog::load("prog-trunc-v6-icmp", ROOMY);
    let icmp6 = Packet::ipv6(client_v6(1, 1), HOST_V6)
        .other(proto::ICMPV6, vec![128, 0, 0, 0])
        .build();
    check_transportless_cuts(&p, "IPv6 ICMPv6", &icmp6, 40);
}

#[test]
fn program_ipv6_extension_headers() {
    if !kernel_tests_enabled("program_ipv6_extension_headers") {
        return;
    }
    let p = Prog::load("prog-ipv6-ext", ROOMY);
    let c = client_v6(1, 1);
    p.expect(
        "hop-by-hop + destination options + TCP",
        &tcp6(c, PORT, tcp_flags::SYN)
            .ext(ExtHeader::HopByHop { len: 0 })
            .ext(ExtHeader::DestOpts { len: 2 })
            .build()
            .bytes,
        XDP_PASS,
        FIRST_PASS,
    );
    p.expect(
        "routing + AH + UDP",
        &udp6(c, PORT)
            .ext(ExtHeader::Routing { len: 2 })
            .ext(ExtHeader::Auth { len: 4 })
            .build()
            .bytes,
        XDP_PASS,
        PASS,
    );
    p.expect(
        "hop-by-hop + TCP to an unprotected port",
        &tcp6(c, 22, tcp_flags::SYN)
            .ext(ExtHeader::HopByHop { len: 0 })
            .build()
            .bytes,
        XDP_PASS,
        NOT_PROTECTED,
    );
    p.expect(
        "five chained extension headers",
        &udp6(c, PORT)
            .ext(ExtHeader::HopByHop { len: 0 })
            .ext(ExtHeader::DestOpts { len: 0 })
            .ext(ExtHeader::Routing { len: 0 })
            .ext(ExtHeader::DestOpts { len: 0 })
            .ext(ExtHeader::DestOpts { len: 0 })
            .build()
            .bytes,
        XDP_PASS,
        PASS,
    );
    let mut nine = tcp6(c, PORT, tcp_flags::SYN);
    for _ in 0..9 {
        nine = nine.ext(ExtHeader::DestOpts { len: 0 });
    }
    // Linux delivers it (kernel_e2e shows it); the walk cannot classify it.
    p.expect(
        "nine chained extension headers",
        &nine.build().bytes,
        XDP_DROP,
        &[(Counter::DroppedExtHeaders, 1)],
    );
    p.expect(
        "extension header longer than the frame",
        udp6(c, PORT)
            .ext(ExtHeader::DestOpts { len: 200 })
            .build()
            .cut(14 + 40 + 16),
        XDP_PASS,
        MALFORMED,
    );
    p.expect(
        "no next header",
        &Packet::ipv6(c, HOST_V6)
            .other(proto::NO_NEXT, Vec::new())
            .build()
            .bytes,
        XDP_PASS,
        NOT_PROTECTED,
    );
}

/// `MAX_IPV6_EXT` is 8: eight extension headers are within the walk.
#[test]
fn program_ipv6_eight_extension_headers_are_classified() {
    if !kernel_tests_enabled("program_ipv6_eight_extension_headers_are_classified") {
        return;
    }
    let p = Prog::load("prog-ipv6-eight-ext", ROOMY);
    let mut eight = udp6(client_v6(1, 1), PORT);
    for _ in 0..8 {
        eight = eight.ext(ExtHeader::DestOpts { len: 0 });
    }
    p.expect(
        "eight chained extension headers",
        &eight.build().bytes,
        XDP_PASS,
        FIRST_PASS,
    );
}

/// No packet shape gets a blocked or denied source past the verdict, and
/// fragments that would hide the transport header are dropped (RFC 1858).
#[test]
fn program_fragments_and_header_chains_cannot_bypass_enforcement() {
    if !kernel_tests_enabled("program_fragments_and_header_chains_cannot_bypass_enforcement") {
        return;
    }
    let mut p = Prog::load(
        "prog-no-bypass",
        &format!("{ROOMY}[[kernel.overrides]]\ncidr = \"198.18.0.66/32\"\naction = \"deny\"\n"),
    );
    let (ok, blocked, denied) = (client_v4(60), client_v4(61), client_v4(66));
    p.maps.block(IpAddr::V4(blocked), None).unwrap();
    let tiny_first = |src| {
        // MF set, offset 0, 8 bytes of IP payload: the TCP header is in
        // the next fragment, where no port or flag can be read.
        tcp4(src, PORT, tcp_flags::SYN)
            .ipv4_with(|h| {
                h.dont_fragment = false;
                h.more_fragments = true;
                h.total_len = Some(20 + 8);
            })
            .build()
            .bytes
    };
    let later = |src, protocol_tcp: bool, offset| {
        let packet = if protocol_tcp {
            tcp4(src, PORT, tcp_flags::SYN)
        } else {
            udp4(src, PORT)
        };
        packet
            .ipv4_with(|h| {
                h.dont_fragment = false;
                h.fragment_offset = offset;
            })
            .build()
            .bytes
    };
    let frag_drop: Changes = &[(Counter::DroppedFragment, 1)];
    let block_drop: Changes = &[(Counter::DroppedBlock, 1)];
    let deny_drop: Changes = &[(Counter::DroppedDeny, 1)];
    p.expect(
        "tiny TCP first fragment",
        &tiny_first(ok),
        XDP_DROP,
        frag_drop,
    );
    p.expect(
        "tiny TCP first fragment, blocked client",
        &tiny_first(blocked),
        XDP_DROP,
        block_drop,
    );
    p.expect(
        "tiny TCP first fragment, denied client",
        &tiny_first(denied),
        XDP_DROP,
        deny_drop,
    );
    p.expect(
        "TCP fragment at offset 8 bytes (overlaps the flags)",
        &later(ok, true, 1),
        XDP_DROP,
        frag_drop,
    );
    p.expect(
        "later UDP fragment",
        &later(ok, false, 185),
        XDP_PASS,
        FRAGMENT,
    );
    p.expect(
        "later fragment, blocked client",
        &later(blocked, false, 185),
        XDP_DROP,
        block_drop,
    );
    p.expect(
        "later fragment, denied client",
        &later(denied, false, 185),
        XDP_DROP,
        deny_drop,
    );
    let icmp = |src| {
        Packet::ipv4(src, HOST_V4)
            .other(proto::ICMP, vec![8, 0, 0, 0, 0, 0, 0, 0])
            .build()
            .bytes
    };
    p.expect("ICMP", &icmp(ok), XDP_PASS, NOT_PROTECTED);
    p.expect("ICMP, blocked client", &icmp(blocked), XDP_DROP, block_drop);
    p.expect(
        "blocked client to an unprotected port",
        &udp4(blocked, 53).build().bytes,
        XDP_DROP,
        block_drop,
    );
    p.expect(
        "truncated TCP header, blocked client",
        &tcp4(blocked, PORT, tcp_flags::SYN)
            .ipv4_with(|h| h.total_len = Some(20 + 12))
            .build()
            .bytes,
        XDP_DROP,
        block_drop,
    );

    // IPv6: a first fragment cut inside the TCP header, or inside its
    // extension-header chain.
    let c6 = client_v6(6, 1);
    let first6 = tcp6(c6, PORT, tcp_flags::SYN)
        .ext(ExtHeader::Fragment {
            offset: 0,
            more: true,
        })
        .build();
    // Every cut after the fragment header and before the end of the TCP
    // header drops it.
    for len in ETH_HLEN + 40 + 8..first6.l4_end {
        p.expect(
            &format!("IPv6 first fragment cut at {len} bytes"),
            first6.cut(len),
            XDP_DROP,
            frag_drop,
        );
    }
    let chain_cut = tcp6(c6, PORT, tcp_flags::SYN)
        .ext(ExtHeader::Fragment {
            offset: 0,
            more: true,
        })
        .ext(ExtHeader::DestOpts { len: 4 })
        .build();
    p.expect(
        "IPv6 first fragment cut inside its header chain",
        chain_cut.cut(ETH_HLEN + 40 + 8 + 16),
        XDP_DROP,
        frag_drop,
    );
    let b6 = client_v6(6, 2);
    p.maps.block(IpAddr::V6(b6), None).unwrap();
    let mut long_chain = udp6(b6, 53);
    for _ in 0..12 {
        long_chain = long_chain.ext(ExtHeader::DestOpts { len: 0 });
    }
    p.expect(
        "over-long chain from a blocked client",
        &long_chain.build().bytes,
        XDP_DROP,
        block_drop,
    );
    // None of this created client state for the unblocked client.
    assert_eq!(p.maps.client(IpAddr::V4(ok)).unwrap(), None);
}

#[test]
fn program_ipv6_fragments() {
    if !kernel_tests_enabled("program_ipv6_fragments") {
        return;
    }
    let p = Prog::load("prog-ipv6-frag", ROOMY);
    let c = client_v6(1, 1);
    p.expect(
        "first fragment (offset 0, M)",
        &udp6(c, PORT)
            .ext(ExtHeader::Fragment {
                offset: 0,
                more: true,
            })
            .payload(&[0; 64])
            .build()
            .bytes,
        XDP_PASS,
        FIRST_PASS,
    );
    p.expect(
        "atomic fragment after hop-by-hop",
        &tcp6(c, PORT, tcp_flags::ACK)
            .ext(ExtHeader::HopByHop { len: 0 })
            .ext(ExtHeader::Fragment {
                offset: 0,
                more: false,
            })
            .build()
            .bytes,
        XDP_PASS,
        PASS,
    );
    for (what, more) in [("middle fragment", true), ("last fragment", false)] {
        // The bytes after the fragment header are payload, not a UDP header.
        p.expect(
            what,
            &udp6(c, PORT)
                .ext(ExtHeader::Fragment { offset: 9, more })
                .build()
                .bytes,
            XDP_PASS,
            FRAGMENT,
        );
    }
    p.expect(
        "non-first fragment to an unprotected port is still a fragment",
        &udp6(c, 53)
            .ext(ExtHeader::Fragment {
                offset: 1,
                more: false,
            })
            .build()
            .bytes,
        XDP_PASS,
        FRAGMENT,
    );
}

#[test]
fn program_ipv4_fragments_and_options() {
    if !kernel_tests_enabled("program_ipv4_fragments_and_options") {
        return;
    }
    let p = Prog::load("prog-ipv4-frag", ROOMY);
    let c = client_v4(5);
    p.expect(
        "first fragment (MF, offset 0)",
        &udp4(c, PORT)
            .ipv4_with(|h| {
                h.dont_fragment = false;
                h.more_fragments = true;
            })
            .payload(&[0; 64])
            .build()
            .bytes,
        XDP_PASS,
        FIRST_PASS,
    );
    for (what, more) in [("middle fragment", true), ("last fragment", false)] {
        p.expect(
            what,
            &udp4(c, PORT)
                .ipv4_with(|h| {
                    h.dont_fragment = false;
                    h.more_fragments = more;
                    h.fragment_offset = 185;
                })
                .build()
                .bytes,
            XDP_PASS,
            FRAGMENT,
        );
    }
    p.expect(
        "non-first ICMP fragment",
        &Packet::ipv4(c, HOST_V4)
            .other(proto::ICMP, vec![0; 8])
            .ipv4_with(|h| {
                h.dont_fragment = false;
                h.fragment_offset = 1;
            })
            .build()
            .bytes,
        XDP_PASS,
        FRAGMENT,
    );
    // Options: the transport header is found after IHL words.
    for words in [1usize, 4, 10] {
        p.expect(
            &format!("{} bytes of IPv4 options", words * 4),
            &tcp4(c, PORT, tcp_flags::SYN)
                .ipv4_with(|h| h.options = vec![1; words * 4])
                .build()
                .bytes,
            XDP_PASS,
            PASS,
        );
    }
    p.expect(
        "options, unprotected port",
        &tcp4(c, 8081, tcp_flags::SYN)
            .ipv4_with(|h| h.options = vec![1; 12])
            .build()
            .bytes,
        XDP_PASS,
        NOT_PROTECTED,
    );
}

#[test]
fn program_bad_ip_and_tcp_headers_are_malformed() {
    if !kernel_tests_enabled("program_bad_ip_and_tcp_headers_are_malformed") {
        return;
    }
    let p = Prog::load("prog-bad-headers", ROOMY);
    let c = client_v4(6);
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for ihl in 0..5u8 {
        cases.push((
            format!("IHL {ihl}"),
            udp4(c, PORT).ipv4_with(|h| h.ihl = Some(ihl)).build().bytes,
        ));
    }
    for version in [0u8, 5, 6, 15] {
        cases.push((
            format!("version {version} in an IPv4 EtherType"),
            udp4(c, PORT)
                .ipv4_with(|h| h.version = version)
                .build()
                .bytes,
        ));
        cases.push((
            format!("version {version} in an IPv6 EtherType"),
            udp6(client_v6(1, 1), PORT)
                .ipv6_with(|h| h.version = if version == 6 { 4 } else { version })
                .build()
                .bytes,
        ));
    }
    cases.push((
        "total length shorter than the header".into(),
        udp4(c, PORT)
            .ipv4_with(|h| h.total_len = Some(19))
            .build()
            .bytes,
    ));
    cases.push((
        "IP length ends inside the UDP header (the rest is Ethernet padding)".into(),
        udp4(c, PORT)
            .ipv4_with(|h| h.total_len = Some(20 + 4))
            .build()
            .bytes,
    ));
    cases.push((
        "IP length ends inside the TCP header".into(),
        tcp4(c, PORT, tcp_flags::SYN)
            .ipv4_with(|h| h.total_len = Some(20 + 12))
            .build()
            .bytes,
    ));
    cases.push((
        "IHL 15 but no options in the frame".into(),
        udp4(c, PORT)
            .ipv4_with(|h| {
                h.ihl = Some(15);
                h.total_len = Some(60 + 8);
            })
            .build()
            .bytes,
    ));
    for off in [0u8, 4] {
        let mut packet = tcp4(c, PORT, tcp_flags::SYN);
        if let Transport::Tcp { data_offset, .. } = &mut packet.transport {
            *data_offset = Some(off);
        }
        cases.push((format!("TCP data offset {off}"), packet.build().bytes));
    }
    for (what, frame) in &cases {
        p.expect(what, frame, XDP_PASS, MALFORMED);
    }
    assert_eq!(p.maps.client(IpAddr::V4(c)).unwrap(), None);
}

/// xorshift64*: deterministic "random" bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn program_garbage_always_passes_and_is_counted_once() {
    if !kernel_tests_enabled("program_garbage_always_passes_and_is_counted_once") {
        return;
    }
    let p = Prog::load("prog-garbage", ROOMY);
    p.expect(
        "ARP request",
        &Packet::arp_request(client_v4(7), HOST_V4).build().bytes,
        XDP_PASS,
        NOT_PROTECTED,
    );
    p.expect("60 zero bytes", &[0; 60], XDP_PASS, NOT_PROTECTED);
    // Random frames, most with an IP or VLAN EtherType so that the parser
    // (not just the EtherType switch) sees garbage.
    let mut rng = Rng(0x5eed_f00d_dead_beef);
    let ethertypes = [
        ethertype::IPV4,
        ethertype::IPV6,
        ethertype::VLAN_8021Q,
        ethertype::VLAN_8021AD,
    ];
    let terminal = [
        Counter::Passed,
        Counter::Malformed,
        Counter::NotProtected,
        Counter::Fragments,
    ];
    for i in 0..2000 {
        let len = 14 + (rng.next() % 200) as usize;
        let mut frame = rng.bytes(len);
        if i % 5 != 0 {
            let et = ethertypes[(rng.next() % 4) as usize];
            frame[12..14].copy_from_slice(&et.to_be_bytes());
        }
        let out = p.observe(&frame);
        assert_eq!(out.verdict, "XDP_PASS", "random frame {i}: {frame:02x?}");
        let total: u64 = out
            .counted
            .iter()
            .filter(|(name, _)| {
                terminal
                    .iter()
                    .any(|c| Counter::ALL[*c as usize].1 == *name)
            })
            .map(|(_, n)| n)
            .sum();
        assert_eq!(total, 1, "random frame {i} counted once: {out:?}");
    }
}

#[test]
fn program_rate_limit_drops_after_the_burst() {
    if !kernel_tests_enabled("program_rate_limit_drops_after_the_burst") {
        return;
    }
    const BURST: usize = 4;
    let p = Prog::load("prog-rate", "rate = 1\nburst = 4\n");
    let (client, outcomes) = before_refill(|i| {
        let c = client_v4(100 + i);
        let frame = udp4(c, PORT).build();
        let out: Vec<Outcome> = (0..BURST + 2).map(|_| p.observe(&frame.bytes)).collect();
        (c, out)
    });
    let mut expected = vec![Outcome::new(XDP_PASS, FIRST_PASS)];
    expected.extend((1..BURST).map(|_| Outcome::new(XDP_PASS, PASS)));
    expected.extend((0..2).map(|_| Outcome::new(XDP_DROP, &[(Counter::DroppedRate, 1)])));
    assert_eq!(outcomes, expected);
    let state = p.maps.client(IpAddr::V4(client)).unwrap().expect("tracked");
    assert_eq!((state.passed, state.dropped), (BURST as u64, 2));

    // The limit is per client and per protected port only.
    p.expect(
        "limited client to an unprotected port",
        &udp4(client, 53).build().bytes,
        XDP_PASS,
        NOT_PROTECTED,
    );
    p.expect(
        "another client",
        &udp4(client_v4(200), PORT).build().bytes,
        XDP_PASS,
        FIRST_PASS,
    );
}

#[test]
fn program_block_list_drops_until_expiry_or_unblock() {
    if !kernel_tests_enabled("program_block_list_drops_until_expiry_or_unblock") {
        return;
    }
    let mut p = Prog::load("prog-block", ROOMY);
    let mut events =
        RingBuf::try_from(p.ebpf.take_map(maps::EVENTS).expect("events map")).expect("ring");
    let c = client_v4(8);
    let c6 = client_v6(1, 1);
    p.maps.block(IpAddr::V4(c), None).unwrap();
    p.maps.block(IpAddr::V6(c6), Some(3600)).unwrap();
    let blocked = &[(Counter::DroppedBlock, 1)];
    p.expect(
        "blocked client, UDP",
        &udp4(c, PORT).build().bytes,
        XDP_DROP,
        blocked,
    );
    let event = drop_event_from_bytes(&events.next().expect("a drop event for the first drop"));
    assert_eq!(
        (
            DropReason::from_u32(event.reason),
            event.port,
            event.protocol,
            event.client
        ),
        // A block is a verdict on the source, taken before any port is
        // read: the event carries port 0.
        (
            Some(DropReason::Block),
            0,
            proto::UDP,
            key::from_ipv4(c.octets())
        )
    );
    p.expect(
        "blocked client, TCP SYN",
        &tcp4(c, PORT, tcp_flags::SYN).build().bytes,
        XDP_DROP,
        blocked,
    );
    p.expect(
        "blocked IPv6 client (any address of its /64)",
        &udp6(client_v6(1, 0xbeef), PORT).build().bytes,
        XDP_DROP,
        blocked,
    );
    p.expect(
        "blocked client to an unprotected port: the block covers the source",
        &udp4(c, 53).build().bytes,
        XDP_DROP,
        blocked,
    );
    assert_eq!(
        p.maps.client(IpAddr::V4(c)).unwrap(),
        None,
        "blocked packets create no client state"
    );

    assert!(p.maps.unblock(IpAddr::V4(c)).unwrap());
    p.expect(
        "unblocked client",
        &udp4(c, PORT).build().bytes,
        XDP_PASS,
        FIRST_PASS,
    );
    // An entry whose expiry has passed no longer blocks (the daemon deletes
    // it later).
    let expired = client_v4(9);
    p.maps.block(IpAddr::V4(expired), Some(0)).unwrap();
    p.expect(
        "expired block",
        &udp4(expired, PORT).build().bytes,
        XDP_PASS,
        FIRST_PASS,
    );
}

/// Copies a ring-buffer record into a `DropEvent` without `unsafe`.
fn drop_event_from_bytes(bytes: &[u8]) -> DropEvent {
    assert_eq!(bytes.len(), std::mem::size_of::<DropEvent>());
    let u64_at = |o: usize| u64::from_ne_bytes(bytes[o..o + 8].try_into().unwrap());
    let mut client = [0u8; 16];
    client.copy_from_slice(&bytes[8..24]);
    DropEvent {
        ts_ns: u64_at(0),
        client,
        reason: u32::from_ne_bytes(bytes[24..28].try_into().unwrap()),
        port: u16::from_ne_bytes(bytes[28..30].try_into().unwrap()),
        protocol: bytes[30],
        _pad: bytes[31],
    }
}

#[test]
fn program_overrides_deny_allow_and_limit() {
    if !kernel_tests_enabled("program_overrides_deny_allow_and_limit") {
        return;
    }
    let p = Prog::load(
        "prog-overrides",
        r#"rate = 1
burst = 2
[[kernel.overrides]]
cidr = "198.51.100.0/24"
action = "deny"
[[kernel.overrides]]
cidr = "198.51.100.7/32"
action = "allow"
[[kernel.overrides]]
cidr = "203.0.113.0/24"
action = "limit"
rate = 1
burst = 5
[[kernel.overrides]]
cidr = "2001:db8:dead::/48"
action = "deny"
"#,
    );
    let denied = Ipv4Addr::new(198, 51, 100, 9);
    let deny = &[(Counter::DroppedDeny, 1)];
    p.expect(
        "denied /24",
        &udp4(denied, PORT).build().bytes,
        XDP_DROP,
        deny,
    );
    p.expect(
        "denied /24, TCP",
        &tcp4(denied, PORT, tcp_flags::ACK).build().bytes,
        XDP_DROP,
        deny,
    );
    p.expect(
        "denied IPv6 /48",
        &udp6("2001:db8:dead:1::5".parse().unwrap(), PORT)
            .build()
            .bytes,
        XDP_DROP,
        deny,
    );
    p.expect(
        "denied client to an unprotected port: deny covers the source",
        &udp4(denied, 53).build().bytes,
        XDP_DROP,
        deny,
    );
    assert_eq!(p.maps.client(IpAddr::V4(denied)).unwrap(), None);

    // The /32 allow inside the denied /24 wins (longest prefix) and bypasses
    // the default burst of 2.
    let allowed = Ipv4Addr::new(198, 51, 100, 7);
    for i in 0..10 {
        p.expect(
            &format!("allowed packet {i}"),
            &udp4(allowed, PORT).build().bytes,
            XDP_PASS,
            &[(Counter::Bypassed, 1)],
        );
    }
    assert_eq!(p.maps.client(IpAddr::V4(allowed)).unwrap(), None);

    // A block is a verdict, checked before overrides: an allow-listed
    // client that is blocked is dropped.
    let mut p = p;
    p.maps.block(IpAddr::V4(allowed), None).unwrap();
    p.expect(
        "blocked despite its allow override",
        &udp4(allowed, PORT).build().bytes,
        XDP_DROP,
        &[(Counter::DroppedBlock, 1)],
    );
    p.maps.unblock(IpAddr::V4(allowed)).unwrap();

    // A limit override replaces the default burst (2) with its own (5).
    let outcomes = before_refill(|i| {
        let frame = udp4(Ipv4Addr::new(203, 0, 113, 10 + i), PORT).build();
        (0..6).map(|_| p.observe(&frame.bytes)).collect::<Vec<_>>()
    });
    let mut expected = vec![Outcome::new(XDP_PASS, FIRST_PASS)];
    expected.extend((0..4).map(|_| Outcome::new(XDP_PASS, PASS)));
    expected.push(Outcome::new(XDP_DROP, &[(Counter::DroppedRate, 1)]));
    assert_eq!(outcomes, expected, "limit override");

    // Outside every override: the default burst of 2.
    let outcomes = before_refill(|i| {
        let frame = udp4(client_v4(20 + i), PORT).build();
        (0..3).map(|_| p.observe(&frame.bytes)).collect::<Vec<_>>()
    });
    assert_eq!(
        outcomes,
        vec![
            Outcome::new(XDP_PASS, FIRST_PASS),
            Outcome::new(XDP_PASS, PASS),
            Outcome::new(XDP_DROP, &[(Counter::DroppedRate, 1)]),
        ],
        "default limits"
    );
}

#[test]
fn program_conn_cap_drops_new_connections_only() {
    if !kernel_tests_enabled("program_conn_cap_drops_new_connections_only") {
        return;
    }
    let p = Prog::load(
        "prog-conn-cap",
        "rate = 1000\nburst = 1000\nmax_conns = 3\n",
    );
    let mut counts = p.hash_map::<ConnCount>(maps::CONN_COUNTS);
    let c = client_v4(30);
    let k = key::from_ipv4(c.octets());
    let slots = |n: u64, owner: ClientKey| ConnCount { slots: n, owner };
    counts.insert(k, slots(3, k), 0).unwrap();
    assert_eq!(p.maps.conns(IpAddr::V4(c)).unwrap(), 3);

    let syn = tcp4(c, PORT, tcp_flags::SYN).build();
    p.expect(
        "SYN at the cap (first packet: state is created, then dropped)",
        &syn.bytes,
        XDP_DROP,
        &[(Counter::DroppedConn, 1), (Counter::NewClients, 1)],
    );
    p.expect(
        "second SYN at the cap",
        &syn.bytes,
        XDP_DROP,
        &[(Counter::DroppedConn, 1)],
    );
    for (what, flags) in [
        ("ACK", tcp_flags::ACK),
        ("SYN-ACK", tcp_flags::SYN | tcp_flags::ACK),
        ("FIN-ACK", tcp_flags::FIN | tcp_flags::ACK),
        ("RST", tcp_flags::RST),
    ] {
        p.expect(
            &format!("{what} at the cap"),
            &tcp4(c, PORT, flags).build().bytes,
            XDP_PASS,
            PASS,
        );
    }
    p.expect(
        "UDP at the cap",
        &udp4(c, PORT).build().bytes,
        XDP_PASS,
        PASS,
    );
    p.expect(
        "SYN to an unprotected port",
        &tcp4(c, 22, tcp_flags::SYN).build().bytes,
        XDP_PASS,
        NOT_PROTECTED,
    );
    counts.insert(k, slots(7, k), 0).unwrap();
    p.expect(
        "SYN above the cap",
        &syn.bytes,
        XDP_DROP,
        &[(Counter::DroppedConn, 1)],
    );
    counts.insert(k, slots(2, k), 0).unwrap();
    p.expect("SYN below the cap", &syn.bytes, XDP_PASS, PASS);
    let state = p.maps.client(IpAddr::V4(c)).unwrap().expect("tracked");
    // The admitted SYN holds the third slot until its handshake completes.
    assert_eq!((state.passed, state.dropped, state.conns), (6, 3, 3));
    p.expect(
        "the same SYN retransmitted keeps its one slot",
        &syn.bytes,
        XDP_PASS,
        PASS,
    );
    assert_eq!(p.maps.conns(IpAddr::V4(c)).unwrap(), 3);
    p.expect(
        "another connection's SYN: the reserved slot counts",
        &Packet::ipv4(c, HOST_V4)
            .tcp(40001, PORT, tcp_flags::SYN)
            .build()
            .bytes,
        XDP_DROP,
        &[(Counter::DroppedConn, 1)],
    );

    let other = client_v4(31);
    p.expect(
        "SYN from a client without connections",
        &tcp4(other, PORT, tcp_flags::SYN).build().bytes,
        XDP_PASS,
        FIRST_PASS,
    );
    // IPv6: the count is keyed like the packets (/64).
    let c6 = client_v6(9, 1);
    let k6 = key::from_ipv6(c6.octets(), true);
    counts.insert(k6, slots(3, k6), 0).unwrap();
    p.expect(
        "IPv6 SYN from another address of a capped /64",
        &tcp6(client_v6(9, 2), PORT, tcp_flags::SYN).build().bytes,
        XDP_DROP,
        &[(Counter::DroppedConn, 1), (Counter::NewClients, 1)],
    );
}

/// SYNs that arrive before any handshake completes each take a slot: with
/// `max_conns = 3`, three of eight distinct connection attempts pass.
#[test]
fn program_conn_cap_counts_handshakes_in_flight() {
    if !kernel_tests_enabled("program_conn_cap_counts_handshakes_in_flight") {
        return;
    }
    let p = Prog::load(
        "prog-conn-inflight",
        "rate = 1000\nburst = 1000\nmax_conns = 3\n",
    );
    let c = client_v4(40);
    let verdicts: Vec<&str> = (0..8u16)
        .map(|i| {
            let syn = Packet::ipv4(c, HOST_V4)
                .tcp(41000 + i, PORT, tcp_flags::SYN)
                .build();
            p.observe(&syn.bytes).verdict
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            "XDP_PASS", "XDP_PASS", "XDP_PASS", "XDP_DROP", "XDP_DROP", "XDP_DROP", "XDP_DROP",
            "XDP_DROP"
        ]
    );
    assert_eq!(p.maps.conns(IpAddr::V4(c)).unwrap(), 3);
    assert_eq!(p.maps.pending_count(), 3);
}

/// The sweep program releases a reservation only once it is older than
/// `PENDING_TIMEOUT_NS`, and a release never takes a count below zero.
#[test]
fn program_sweep_releases_expired_reservations_only() {
    if !kernel_tests_enabled("program_sweep_releases_expired_reservations_only") {
        return;
    }
    let mut p = Prog::load("prog-sweep", "rate = 1000\nburst = 1000\nmax_conns = 2\n");
    let sweep: &mut Xdp = p
        .ebpf
        .program_mut(programs::SWEEP)
        .expect("sweep program")
        .try_into()
        .expect("XDP type");
    sweep.load().expect("verifier accepts the sweep program");
    let c = client_v4(41);
    for port in [42000u16, 42001] {
        let syn = Packet::ipv4(c, HOST_V4)
            .tcp(port, PORT, tcp_flags::SYN)
            .build();
        assert_eq!(p.observe(&syn.bytes).verdict, "XDP_PASS");
    }
    assert_eq!(p.maps.conns(IpAddr::V4(c)).unwrap(), 2);
    let mut pending: BpfHashMap<MapData, FlowKey, PendingConn> =
        BpfHashMap::try_from(open_pin(&p.pin.0, maps::CONN_PENDING).expect("pin"))
            .expect("pending map");
    let keys: Vec<FlowKey> = pending.keys().map(Result::unwrap).collect();
    assert_eq!(keys.len(), 2);
    // Fresh reservations are kept …
    assert_eq!(kernel::release_pending(&p.ebpf, &keys).unwrap(), 0);
    assert_eq!(p.maps.conns(IpAddr::V4(c)).unwrap(), 2);
    // … and released once their SYN is older than the timeout.
    let mut old = pending.get(&keys[0], 0).unwrap();
    old.since_ns = old.since_ns.saturating_sub(PENDING_TIMEOUT_NS + 1);
    pending.insert(keys[0], old, 0).unwrap();
    let before = p.stats();
    assert_eq!(kernel::release_pending(&p.ebpf, &keys).unwrap(), 1);
    assert_eq!(p.maps.conns(IpAddr::V4(c)).unwrap(), 1);
    assert_eq!(
        p.stats()[Counter::ConnPendingExpired as usize],
        before[Counter::ConnPendingExpired as usize] + 1
    );
    // Released twice? The reservation is gone: nothing happens.
    assert_eq!(kernel::release_pending(&p.ebpf, &keys[..1]).unwrap(), 0);
    assert_eq!(p.maps.conns(IpAddr::V4(c)).unwrap(), 1);

    // A reservation whose client holds no slot (a count that drifted):
    // the release is refused and counted, the count never wraps.
    let ghost = client_v4(42);
    let gk = key::from_ipv4(ghost.octets());
    let mut counts = p.hash_map::<ConnCount>(maps::CONN_COUNTS);
    counts
        .insert(
            gk,
            ConnCount {
                slots: 0,
                owner: gk,
            },
            0,
        )
        .unwrap();
    let fk = FlowKey {
        client_addr: gk,
        local_addr: key::from_ipv4(HOST_V4.octets()),
        client_port: 1,
        local_port: PORT,
    };
    pending
        .insert(
            fk,
            PendingConn {
                client: gk,
                since_ns: 0,
            },
            0,
        )
        .unwrap();
    let before = p.stats()[Counter::ConnCountErrors as usize];
    assert_eq!(kernel::release_pending(&p.ebpf, &[fk]).unwrap(), 1);
    assert_eq!(p.stats()[Counter::ConnCountErrors as usize], before + 1);
    assert_eq!(counts.get(&gk, 0).unwrap().slots, 0, "no wrap below zero");
}

/// Two packets from each of two addresses in one /64.
fn two_addresses_of_one_64(p: &Prog) -> Vec<Outcome> {
    before_refill(|i| {
        let net = 100 + u16::from(i);
        let a = udp6(client_v6(net, 0xa), PORT).build();
        let b = udp6(client_v6(net, 0xb), PORT).build();
        [&a, &a, &b, &b]
            .iter()
            .map(|f| p.observe(&f.bytes))
            .collect::<Vec<_>>()
    })
}

#[test]
fn program_ipv6_clients_are_keyed_by_their_64() {
    if !kernel_tests_enabled("program_ipv6_clients_are_keyed_by_their_64") {
        return;
    }
    let p = Prog::load("prog-v6-64", "rate = 1\nburst = 3\nipv6_prefix = 64\n");
    let outcomes = two_addresses_of_one_64(&p);
    assert_eq!(
        outcomes,
        vec![
            Outcome::new(XDP_PASS, FIRST_PASS),
            Outcome::new(XDP_PASS, PASS),
            Outcome::new(XDP_PASS, PASS),
            Outcome::new(XDP_DROP, &[(Counter::DroppedRate, 1)]),
        ],
        "two addresses of one /64 share one bucket of 3"
    );
    p.expect(
        "another /64",
        &udp6(client_v6(999, 0xa), PORT).build().bytes,
        XDP_PASS,
        FIRST_PASS,
    );

    let p = Prog::load("prog-v6-128", "rate = 1\nburst = 3\nipv6_prefix = 128\n");
    let outcomes = two_addresses_of_one_64(&p);
    assert_eq!(
        outcomes,
        vec![
            Outcome::new(XDP_PASS, FIRST_PASS),
            Outcome::new(XDP_PASS, PASS),
            Outcome::new(XDP_PASS, FIRST_PASS),
            Outcome::new(XDP_PASS, PASS),
        ],
        "with ipv6_prefix = 128 each address has its own bucket"
    );
}

/// The kernel counters, as the daemon exports them at scrape time, pass
/// `promtool check metrics` and carry the values in the maps.
#[test]
fn program_kernel_metrics_pass_promtool() {
    if !kernel_tests_enabled("program_kernel_metrics_pass_promtool") {
        return;
    }
    let p = Prog::load("prog-promtool", "rate = 1\nburst = 1\n");
    let frame = udp4(client_v4(77), PORT).build();
    p.observe(&frame.bytes);
    p.observe(&frame.bytes);
    let text = fraiseql_edge_tests::promtool::kernel_metrics_text(&p.pin.0);
    assert!(
        text.contains("fraiseql_edge_kernel_packets_total{verdict=\"passed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("fraiseql_edge_kernel_packets_total{verdict=\"dropped_rate\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("fraiseql_edge_kernel_clients_total 1"),
        "{text}"
    );
    fraiseql_edge_tests::promtool::check_metrics("program_kernel_metrics_pass_promtool", &text);
}

/// One client's packets run on both CPUs at once (two threads pinned to
/// CPU 0 and CPU 1, each repeating the frame in the kernel): the burst is
/// handed out exactly once. With a refill of one packet per second, the
/// packets passed are the burst plus at most one per second of the run,
/// whatever the machine's load; a read-modify-write race between the CPUs
/// would hand out the same tokens twice.
#[test]
fn program_rate_limit_holds_when_one_client_runs_on_every_cpu() {
    if !kernel_tests_enabled("program_rate_limit_holds_when_one_client_runs_on_every_cpu") {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(cpus >= 2, "needs two CPUs, this machine has {cpus}");
    let burst = 20_000u64;
    let (runs, repeat) = (10u32, 20_000u32);
    let p = Prog::load(
        "prog-rate-cpus",
        &format!("rate = 1\nburst = {burst}\nmax_conns = 0\n"),
    );
    let c = client_v4(50);
    let frame = udp4(c, PORT).build().bytes;
    let xdp: &Xdp = p
        .ebpf
        .program(programs::XDP)
        .expect("XDP program")
        .try_into()
        .expect("XDP type");
    let before = p.stats();
    let start = std::sync::Barrier::new(2);
    let began = Instant::now();
    std::thread::scope(|s| {
        for cpu in 0..2 {
            let (frame, start) = (&frame, &start);
            s.spawn(move || {
                let mut set = nix::sched::CpuSet::new();
                set.set(cpu).expect("cpu index");
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                    .expect("pin to a CPU");
                start.wait();
                for _ in 0..runs {
                    xdp.test_run(TestRunOptions {
                        data_in: Some(frame),
                        repeat,
                        ..TestRunOptions::new()
                    })
                    .expect("test run");
                }
            });
        }
    });
    let wall = began.elapsed().as_secs_f64();
    // The per-CPU counters are exact (the per-client figures are plain
    // adds, which two CPUs at once may overwrite).
    let after = p.stats();
    let delta = |c: Counter| after[c as usize] - before[c as usize];
    assert_eq!(
        delta(Counter::Passed) + delta(Counter::DroppedRate),
        2 * u64::from(runs * repeat)
    );
    let passed = delta(Counter::Passed);
    let most = burst + wall.ceil() as u64 + 1;
    eprintln!("passed {passed} in {wall:.3} s; burst {burst}, at most {most}");
    assert!(
        (burst..=most).contains(&passed),
        "passed {passed}: the burst is {burst}, the refill at most {}",
        most - burst
    );
}

/// The override vectors the user-space fallback's tests use too
/// (`tests/vectors/overrides.json`): overrides longer than the keying
/// prefix match on the full source address.
#[test]
fn program_override_vectors_shared_with_the_fallback() {
    if !kernel_tests_enabled("program_override_vectors_shared_with_the_fallback") {
        return;
    }
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../vectors/overrides.json")).expect("vectors");
    let mut p = Prog::load_unconfigured("prog-override-vectors");
    for case in vectors["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        p.apply(&format!(
            "rate = 1\nburst = 3\nmax_conns = 0\n{}",
            case["kernel"].as_str().expect("kernel")
        ));
        for check in case["checks"].as_array().expect("checks") {
            let src: IpAddr = check["src"].as_str().expect("src").parse().expect("ip");
            let want = match check["expect"].as_str().expect("expect") {
                "allow" => 5,
                "default" => 3,
                "limit" => 1,
                "deny" => 0,
                other => panic!("unknown expectation {other}"),
            };
            let passed = before_refill(|_| {
                // Earlier packets of the same /64 must not decide this one.
                let mut clients = p.hash_map::<fraiseql_edge_common::ClientState>(maps::CLIENTS);
                let keys: Vec<ClientKey> = clients.keys().map(Result::unwrap).collect();
                for k in keys {
                    let _ = clients.remove(&k);
                }
                let frame = match src {
                    IpAddr::V4(v4) => udp4(v4, PORT).build().bytes,
                    IpAddr::V6(v6) => udp6(v6, PORT).build().bytes,
                };
                (0..5)
                    .filter(|_| p.run(&frame).expect("test run") == XDP_PASS)
                    .count()
            });
            assert_eq!(passed, want, "{name}: {src}");
        }
    }
}
