//! No fail-open path, end to end: packet shapes that Linux reassembles or
//! delivers to a protected socket are sent for real from a client namespace
//! (raw IP sockets), and what reaches the host — a SYN-ACK, a datagram, an
//! established socket — is observed there, first without the XDP program
//! (Linux delivers it: the shape is a real way in) and then with it.

use std::{
    collections::HashMap,
    io::Read as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use crate::kernel_e2e::{counter, open_maps, pin_dir};
use fraiseql_edge::kernel::{KernelMaps, maps::open_pin, xdp_link_name};
use fraiseql_edge_common::{ClientKey, ConnCount, Counter, MAX_CONN_CLIENTS, key};
use fraiseql_edge_tests::{
    PinDir,
    clients::tcp_connect,
    daemon::{Daemon, EdgeConfig},
    frames::{ExtHeader, Packet, internet_checksum, tcp_flags},
    kernel_tests_enabled,
    netns::NetNs,
    promtool::kernel_metrics_text,
    wait::eventually,
    xdp_attach::xdp_prog_ids,
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const IPPROTO_RAW: i32 = 255;

/// A daemon with XDP on `ns`'s host side, enforcing `port` with `rate`
/// packets/s (burst `burst`; rate 0: no rate limit) and `max_conns`, its
/// pins in a directory of its own; with the maps it pinned.
fn start_edge(
    ns: &NetNs,
    name: &str,
    port: u16,
    (rate, burst, max_conns): (u64, u64, u32),
) -> (PinDir, Daemon, KernelMaps) {
    let pin = pin_dir(name);
    let mut cfg = EdgeConfig::new(ns.host_if(), &[port], &pin.0);
    cfg.rate = rate;
    cfg.burst = burst;
    cfg.max_conns = max_conns;
    let daemon = Daemon::start(&cfg);
    let maps = open_maps(&pin);
    (pin, daemon, maps)
}

/// No rate limit, no connection cap: only verdicts and counts.
const NO_LIMITS: (u64, u64, u32) = (0, 0, 0);

/// A raw socket in the namespace that sends whole IP packets as given
/// (IPPROTO_RAW: header included; Linux fills in only the IPv4 length and
/// checksum, never the fragment fields).
fn raw_sender(ns: &NetNs, domain: Domain) -> Socket {
    ns.run(|| Socket::new(domain, Type::RAW, Some(Protocol::from(IPPROTO_RAW))))
        .expect("raw IP socket")
}

/// A raw TCP socket in the namespace: a copy of every TCP segment it receives.
fn tcp_sniffer(ns: &NetNs) -> Socket {
    let s = ns
        .run(|| Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP)))
        .expect("raw TCP socket");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    s
}

fn send_ip(sock: &Socket, packet: &[u8], dst: IpAddr) {
    sock.send_to(packet, &SockAddr::from(SocketAddr::new(dst, 0)))
        .unwrap_or_else(|e| panic!("sending a {}-byte packet: {e}", packet.len()));
}

/// An IPv4 TCP segment (no options, no payload) with valid checksums.
fn tcp_segment(src: SocketAddrV4, dst: SocketAddrV4, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&src.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    let sum = internet_checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut ip = ipv4_header(*src.ip(), *dst.ip(), 20, 0);
    ip.extend_from_slice(&tcp);
    ip
}

/// An IPv4 header for `payload` bytes of TCP, with fragment word `frag`.
fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, payload: usize, frag: u16) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = 6;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let sum = internet_checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

/// A SYN cut into fragments of 8 bytes of TCP header each: the first one
/// carries only the ports and the sequence number, not the flags.
fn fragmented_syn(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<Vec<u8>> {
    let whole = tcp_segment(src, dst, 7000, 0, tcp_flags::SYN);
    let tcp = &whole[20..];
    tcp.chunks(8)
        .enumerate()
        .map(|(i, chunk)| {
            let more = (i + 1) * 8 < tcp.len();
            let frag = (u16::from(more) << 13) | i as u16;
            let mut packet = ipv4_header(*src.ip(), *dst.ip(), chunk.len(), frag);
            packet.extend_from_slice(chunk);
            packet
        })
        .collect()
}

/// SYN-ACKs from `server` seen by `sniffer` within `wait`: client port →
/// the server's initial sequence number.
fn syn_acks(sniffer: &Socket, server: SocketAddrV4, wait: Duration) -> HashMap<u16, u32> {
    let mut seen = HashMap::new();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let Ok(n) = (&*sniffer).read(&mut buf) else {
            continue;
        };
        let bytes = &buf[..n];
        let ihl = usize::from(bytes[0] & 0x0f) * 4;
        if bytes.len() < ihl + 20 || bytes[12..16] != server.ip().octets() {
            continue;
        }
        let tcp = &bytes[ihl..];
        let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
        let flags = tcp[13];
        if sport == server.port() && flags & 0x12 == 0x12 {
            let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
            seen.insert(dport, u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]));
        }
    }
    seen
}

/// TCP sockets with local port `port` in the root namespace (the server
/// side), from /proc/net/tcp, that `keep(state, remote address)` selects.
fn tcp_sockets(port: u16, keep: impl Fn(&str, &str) -> bool) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && keep(f[3], f[2])
        })
        .count()
}

/// ESTABLISHED sockets on `port` from `client`.
fn established_from(client: Ipv4Addr, port: u16) -> usize {
    let remote = format!("{:08X}", u32::from_le_bytes(client.octets()));
    tcp_sockets(port, |state, peer| {
        state == "01" && peer.starts_with(&remote)
    })
}

/// Full sockets on `port`: not listening, not in TIME_WAIT.
fn sockets_on(port: u16) -> usize {
    tcp_sockets(port, |state, _| state != "0A" && state != "06")
}

#[test]
fn fragmented_syn_of_a_blocked_client_does_not_connect() {
    if !kernel_tests_enabled("fragmented_syn_of_a_blocked_client_does_not_connect") {
        return;
    }
    const PORT: u16 = 18601;
    let ns = NetNs::new("frag", 20, 2);
    let server = SocketAddrV4::new(ns.host_v4(), PORT);
    let _listener = TcpListener::bind(server).expect("listener");
    let sender = raw_sender(&ns, Domain::IPV4);
    let sniffer = tcp_sniffer(&ns);
    let (a, b) = (ns.client_v4(0), ns.client_v4(1));
    let send_fragmented = |src: Ipv4Addr, sport: u16| {
        for fragment in fragmented_syn(SocketAddrV4::new(src, sport), server) {
            send_ip(&sender, &fragment, IpAddr::V4(*server.ip()));
        }
    };

    // Without the program, Linux reassembles the fragments and answers.
    send_fragmented(a, 33001);
    let answered = syn_acks(&sniffer, server, Duration::from_secs(2));
    assert!(
        answered.contains_key(&33001),
        "no SYN-ACK to the fragmented SYN without XDP: the test cannot show anything"
    );

    let (_pin, _daemon, mut maps) = start_edge(&ns, "fragsyn", PORT, NO_LIMITS);
    maps.block(IpAddr::V4(a), Some(600)).expect("block");

    let blocked_before = counter(&maps, Counter::DroppedBlock);
    send_fragmented(a, 33002);
    let answered = syn_acks(&sniffer, server, Duration::from_millis(1500));
    assert!(
        !answered.contains_key(&33002),
        "the blocked client's fragmented SYN was answered"
    );
    let blocked_drops = counter(&maps, Counter::DroppedBlock) - blocked_before;
    assert_eq!(
        blocked_drops, 3,
        "every fragment of the blocked client dropped"
    );

    // Not blocked: the first fragment cannot be classified (RFC 1858).
    let frag_before = counter(&maps, Counter::DroppedFragment);
    send_fragmented(b, 33003);
    let answered = syn_acks(&sniffer, server, Duration::from_millis(1500));
    assert!(!answered.contains_key(&33003));
    assert!(counter(&maps, Counter::DroppedFragment) > frag_before);
    // … while its ordinary connections work.
    tcp_connect(
        &ns,
        IpAddr::V4(b),
        SocketAddr::V4(server),
        Duration::from_secs(3),
    )
    .expect("an unfragmented connection from the unblocked client");
}

/// A UDP datagram behind nine Destination Options headers: Linux delivers
/// it; the program's walk cannot classify it, so it is dropped.
#[test]
fn long_ipv6_extension_chain_is_delivered_by_linux_and_dropped_by_xdp() {
    if !kernel_tests_enabled("long_ipv6_extension_chain_is_delivered_by_linux_and_dropped_by_xdp") {
        return;
    }
    const PORT: u16 = 18602;
    let ns = NetNs::new("ext", 21, 1);
    let server = UdpSocket::bind(SocketAddr::new(IpAddr::V6(ns.host_v6()), PORT)).expect("udp");
    server
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    let sender = raw_sender(&ns, Domain::IPV6);
    let client: Ipv6Addr = ns.client_v6(0);
    let datagram = |tag: u8| {
        let mut packet = Packet::ipv6(client, ns.host_v6())
            .udp(40000, PORT)
            .payload(&[tag; 16]);
        for _ in 0..9 {
            packet = packet.ext(ExtHeader::DestOpts { len: 0 });
        }
        // Without the Ethernet header: the raw socket sends the IP packet.
        packet.build().bytes[14..].to_vec()
    };
    let mut buf = [0u8; 64];

    send_ip(&sender, &datagram(1), IpAddr::V6(ns.host_v6()));
    let (n, _) = server
        .recv_from(&mut buf)
        .expect("Linux delivers a datagram behind nine extension headers");
    assert_eq!(&buf[..n], &[1u8; 16]);

    let (_pin, _daemon, maps) = start_edge(&ns, "extchain", PORT, NO_LIMITS);
    let before = counter(&maps, Counter::DroppedExtHeaders);
    send_ip(&sender, &datagram(2), IpAddr::V6(ns.host_v6()));
    assert!(
        server.recv_from(&mut buf).is_err(),
        "the datagram behind nine extension headers got through XDP"
    );
    assert_eq!(counter(&maps, Counter::DroppedExtHeaders) - before, 1);
}

/// SYNs sent before any handshake completes (a client behind a long round
/// trip): each admitted SYN holds a slot, so with `max_conns = K` the server
/// ends up with K established connections from the client, not one per SYN;
/// and every count returns to 0 when they close.
#[test]
fn connection_cap_holds_when_syns_arrive_before_handshakes_complete() {
    if !kernel_tests_enabled("connection_cap_holds_when_syns_arrive_before_handshakes_complete") {
        return;
    }
    const PORT: u16 = 18603;
    const K: usize = 4;
    const SYNS: u16 = 50;
    let ns = NetNs::new("synb", 22, 1);
    let server = SocketAddrV4::new(ns.host_v4(), PORT);
    // Never accepts: established connections wait in the accept queue.
    let _listener = TcpListener::bind(server).expect("listener");
    let (_pin, _daemon, maps) = start_edge(&ns, "synburst", PORT, (0, 0, K as u32));

    // The client's kernel has no socket for these connections: keep it
    // from resetting them when the SYN-ACKs arrive.
    let nft = |args: &str| {
        let status = Command::new("ip")
            .args(["netns", "exec", ns.name(), "nft"])
            .args(args.split(' '))
            .status()
            .expect("nft");
        assert!(status.success(), "nft {args}");
    };
    nft("add table ip fe_rst");
    nft("add chain ip fe_rst out { type filter hook output priority 0 ; }");
    nft("add rule ip fe_rst out tcp flags rst drop");

    let sender = raw_sender(&ns, Domain::IPV4);
    let sniffer = tcp_sniffer(&ns);
    let client = ns.client_v4(0);
    let isn = 5000u32;
    let dropped_before = counter(&maps, Counter::DroppedConn);
    for i in 0..SYNS {
        let src = SocketAddrV4::new(client, 34000 + i);
        send_ip(
            &sender,
            &tcp_segment(src, server, isn, 0, tcp_flags::SYN),
            IpAddr::V4(*server.ip()),
        );
    }
    let answered = syn_acks(&sniffer, server, Duration::from_secs(2));
    assert_eq!(answered.len(), K, "SYN-ACKs: {answered:?}");
    assert_eq!(
        counter(&maps, Counter::DroppedConn) - dropped_before,
        u64::from(SYNS) - K as u64
    );
    // Now complete every handshake that was answered.
    for (sport, server_isn) in &answered {
        let src = SocketAddrV4::new(client, *sport);
        let ack = tcp_segment(src, server, isn + 1, server_isn + 1, tcp_flags::ACK);
        send_ip(&sender, &ack, IpAddr::V4(*server.ip()));
    }
    assert!(
        eventually(Duration::from_secs(3), || established_from(client, PORT)
            == K),
        "established from the client: {}, expected {K}",
        established_from(client, PORT)
    );
    let key = IpAddr::V4(client);
    assert_eq!(maps.conns(key).unwrap(), K as u64);
    assert_eq!(
        maps.pending_count(),
        0,
        "every reservation became a connection"
    );

    // Close them all (RSTs from the client) and every count goes back to 0.
    nft("delete table ip fe_rst");
    for sport in answered.keys() {
        let src = SocketAddrV4::new(client, *sport);
        let rst = tcp_segment(src, server, isn + 1, 0, tcp_flags::RST);
        send_ip(&sender, &rst, IpAddr::V4(*server.ip()));
    }
    assert!(
        eventually(Duration::from_secs(3), || maps.conns(key).unwrap() == 0),
        "conns after close: {}",
        maps.conns(key).unwrap()
    );
    assert_eq!(established_from(client, PORT), 0);
    assert_eq!(maps.conn_clients(), 0, "the count map is empty");
}

/// Thousands of connections from several clients, opened and closed on
/// both CPUs at once, some closed by the server first and some by the
/// client: afterwards every count is 0, the count map is empty, nothing was
/// refused or lost, and no client is locked out.
#[test]
fn connection_counts_return_to_zero_after_concurrent_churn() {
    if !kernel_tests_enabled("connection_counts_return_to_zero_after_concurrent_churn") {
        return;
    }
    const PORT: u16 = 18604;
    const CLIENTS: u8 = 4;
    const THREADS_PER_CLIENT: usize = 2;
    const ROUNDS: usize = 400;
    const K: u32 = 16;
    let ns = NetNs::new("churn", 23, CLIENTS);
    let dst = SocketAddr::new(IpAddr::V4(ns.host_v4()), PORT);
    let listener = TcpListener::bind(dst).expect("listener");
    let (_pin, _daemon, maps) = start_edge(&ns, "churn", PORT, (0, 0, K));
    let opened_before = counter(&maps, Counter::ConnOpened);
    let closed_before = counter(&maps, Counter::ConnClosed);

    // The server closes every second connection first; the others are
    // closed by the client first (the server closes them a few
    // connections later, at most 8 at a time: below the cap).
    let server = std::thread::spawn(move || {
        let mut kept = Vec::new();
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { break };
            if i % 2 == 0 {
                drop(stream);
            } else {
                kept.push(stream);
                if kept.len() >= 8 {
                    kept.clear();
                }
            }
            if i + 1 == usize::from(CLIENTS) * THREADS_PER_CLIENT * ROUNDS {
                break;
            }
        }
    });
    let workers: Vec<_> = (0..CLIENTS)
        .flat_map(|c| (0..THREADS_PER_CLIENT).map(move |t| (c, t)))
        .map(|(c, t)| {
            let src = ns.client(c);
            ns.spawn(move || {
                let mut set = nix::sched::CpuSet::new();
                set.set(t % 2).expect("cpu");
                let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
                let mut failures = 0;
                for _ in 0..ROUNDS {
                    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
                        .expect("socket");
                    socket.bind(&SocketAddr::new(src, 0).into()).expect("bind");
                    if socket
                        .connect_timeout(&dst.into(), Duration::from_secs(3))
                        .is_err()
                    {
                        failures += 1;
                        // The server waits for this many connections.
                        break;
                    }
                    // Dropped here: the client closes (or answers the
                    // server's FIN).
                }
                failures
            })
        })
        .collect();
    let failures: usize = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    assert_eq!(failures, 0, "connections refused during the churn");
    server.join().expect("server");

    let total = u64::from(CLIENTS) * (THREADS_PER_CLIENT * ROUNDS) as u64;
    // Closing takes the FIN exchange; an orphaned socket may linger in
    // FIN_WAIT2 or LAST_ACK (retransmitting) on a loaded machine. Counts
    // are judged once no full socket is left on the port.
    assert!(
        eventually(Duration::from_secs(90), || sockets_on(PORT) == 0),
        "sockets still open on the port: {}",
        sockets_on(PORT)
    );
    assert_eq!(
        counter(&maps, Counter::ConnClosed) - closed_before,
        total,
        "every connection uncounted"
    );
    assert_eq!(counter(&maps, Counter::ConnOpened) - opened_before, total);
    assert_eq!(counter(&maps, Counter::ConnCountErrors), 0);
    for c in 0..CLIENTS {
        assert_eq!(maps.conns(ns.client(c)).unwrap(), 0, "client {c}");
    }
    assert_eq!(maps.conn_clients(), 0, "the count map is empty");
    assert_eq!(maps.pending_count(), 0, "no reservation left behind");

    // Nobody is locked out: each client can hold its K connections again.
    let _listener = TcpListener::bind(dst).expect("listener again");
    for c in 0..CLIENTS {
        let held: Vec<_> = (0..K)
            .map(|_| {
                tcp_connect(&ns, ns.client(c), dst, Duration::from_secs(3))
                    .unwrap_or_else(|e| panic!("client {c} locked out: {e}"))
            })
            .collect();
        assert_eq!(held.len(), K as usize);
    }
}

/// The tracker counts what the XDP program protects: sockets of the
/// daemon's network namespace on the protected ports — not a server on the
/// same port in another namespace.
#[test]
fn tracker_counts_only_the_daemons_namespace() {
    if !kernel_tests_enabled("tracker_counts_only_the_daemons_namespace") {
        return;
    }
    const PORT: u16 = 18605;
    let ns = NetNs::new("trns", 24, 1);
    let host = SocketAddr::new(IpAddr::V4(ns.host_v4()), PORT);
    let _host_listener = TcpListener::bind(host).expect("host listener");
    let (_pin, _daemon, maps) = start_edge(&ns, "trackerns", PORT, NO_LIMITS);
    let opened = counter(&maps, Counter::ConnOpened);

    // A server on the protected port inside the client namespace, and a
    // connection to it from that namespace: not the daemon's socket.
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), PORT);
    let (_ns_listener, _a, _b) = ns.run(|| {
        let l = TcpListener::bind(local).expect("listener in the namespace");
        let c = std::net::TcpStream::connect(local).expect("connect in the namespace");
        let (s, _) = l.accept().expect("accept in the namespace");
        (l, c, s)
    });
    // A connection to the daemon's namespace is counted, and only it.
    let _conn = tcp_connect(&ns, ns.client(0), host, Duration::from_secs(3)).expect("connect");
    assert!(
        eventually(Duration::from_secs(3), || maps.conns(ns.client(0)).unwrap()
            == 1),
        "the connection to the daemon's namespace is counted"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        counter(&maps, Counter::ConnOpened) - opened,
        1,
        "only the daemon's namespace's socket is counted"
    );
    assert_eq!(maps.conns(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap(), 0);
}

/// A full count map is not a silent fail-open: the connection it could not
/// count is counted as such, exported as a metric and logged.
#[test]
fn a_full_count_map_is_counted_exported_and_logged() {
    if !kernel_tests_enabled("a_full_count_map_is_counted_exported_and_logged") {
        return;
    }
    const PORT: u16 = 18606;
    let ns = NetNs::new("full", 25, 1);
    let host = SocketAddr::new(IpAddr::V4(ns.host_v4()), PORT);
    let _listener = TcpListener::bind(host).expect("listener");
    let (pin, mut daemon, maps) = start_edge(&ns, "mapfull", PORT, NO_LIMITS);

    // Fill the count map with other clients.
    let mut counts: aya::maps::HashMap<aya::maps::MapData, ClientKey, ConnCount> =
        aya::maps::HashMap::try_from(
            open_pin(&pin.0, fraiseql_edge_common::maps::CONN_COUNTS).expect("pin"),
        )
        .expect("count map");
    for i in 0..MAX_CONN_CLIENTS {
        let k = key::from_ipv4([100, 64 + (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        counts
            .insert(k, ConnCount { slots: 1, owner: k }, 0)
            .expect("filling the count map");
    }
    let _conn = tcp_connect(&ns, ns.client(0), host, Duration::from_secs(3))
        .expect("the connection is admitted");
    assert!(
        eventually(Duration::from_secs(3), || counter(
            &maps,
            Counter::ConnCountsFull
        ) == 1),
        "conn_counts_full = {}",
        counter(&maps, Counter::ConnCountsFull)
    );
    let text = kernel_metrics_text(&pin.0);
    assert!(
        text.contains("fraiseql_edge_kernel_map_full_total{map=\"conn_counts\"} 1"),
        "{text}"
    );
    assert!(
        daemon.wait_for_log("connection-count map full", Duration::from_secs(5)),
        "the daemon logs the full map:\n{}",
        daemon.log()
    );
}

/// Start-up is all or nothing: when attaching fails on one interface (lo
/// has no native XDP), `--require-ebpf` exits and leaves the others as
/// they were — no link on a fresh interface, the earlier daemon's program
/// still running in an adopted one.
#[test]
fn failed_start_leaves_interfaces_as_they_were() {
    if !kernel_tests_enabled("failed_start_leaves_interfaces_as_they_were") {
        return;
    }
    const PORT: u16 = 18607;
    let pin = pin_dir("allornothing");
    let ns = NetNs::new("aon", 26, 1);
    let veth = ns.host_if().to_owned();
    let cfg = EdgeConfig::new(&veth, &[PORT], &pin.0);
    let native = |toml: String| toml.replace("xdp_mode = \"auto\"", "xdp_mode = \"native\"");
    let mut both = EdgeConfig::new(&veth, &[PORT], &pin.0);
    both.interfaces.push("lo".to_owned());

    // Fresh: the veth attaches, lo refuses native mode.
    let mut failed = Daemon::spawn(&native(both.to_toml()), &["--require-ebpf"]);
    let status = failed
        .wait_exit(Duration::from_secs(20))
        .expect("--require-ebpf must exit when an interface cannot attach");
    assert!(!status.success(), "exited successfully");
    assert!(
        failed.log().contains("lo"),
        "the error names lo:\n{}",
        failed.log()
    );
    assert!(
        xdp_prog_ids(&veth).is_empty(),
        "an XDP program was left on {veth}"
    );
    let pins: Vec<String> = std::fs::read_dir(&pin.0)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("link_"))
                .collect()
        })
        .unwrap_or_default();
    assert!(pins.is_empty(), "links left pinned: {pins:?}");

    // Adopted: a daemon runs on the veth, dies; the next start fails on lo.
    let mut first = Daemon::start(&cfg);
    let before = xdp_prog_ids(&veth);
    assert_eq!(before.len(), 1, "one program on {veth}");
    first.kill();
    let mut failed = Daemon::spawn(&native(both.to_toml()), &["--require-ebpf"]);
    let status = failed.wait_exit(Duration::from_secs(20)).expect("exit");
    assert!(!status.success());
    assert_eq!(
        xdp_prog_ids(&veth),
        before,
        "the earlier daemon's program keeps running in the adopted link"
    );
    assert!(
        pin.0.join(xdp_link_name(&veth)).exists(),
        "the adopted link stays pinned"
    );
    // And a daemon that can start adopts it as usual.
    let _ok = Daemon::start(&cfg);
    assert_eq!(xdp_prog_ids(&veth).len(), 1);
}

/// One client's flows spread over both CPUs by a two-queue veth: XDP runs
/// for the same client on both CPUs at once, and the packets passed stay
/// within 10 % of burst + rate·t.
#[test]
fn rate_limit_holds_for_one_client_on_two_receive_queues() {
    if !kernel_tests_enabled("rate_limit_holds_for_one_client_on_two_receive_queues") {
        return;
    }
    const PORT: u16 = 18608;
    const RATE: u64 = 2_000;
    const BURST: u64 = 200;
    let ns = NetNs::with_queues("mq", 27, 1, 2);
    let (pin, _daemon, maps) = start_edge(&ns, "multiqueue", PORT, (RATE, BURST, 0));
    let stats: aya::maps::PerCpuArray<aya::maps::MapData, u64> = aya::maps::PerCpuArray::try_from(
        open_pin(&pin.0, fraiseql_edge_common::maps::STATS).expect("pin"),
    )
    .expect("stats map");
    let per_cpu_passed = || -> Vec<u64> {
        stats
            .get(&(Counter::Passed as u32), 0)
            .expect("per-CPU passed")
            .iter()
            .copied()
            .collect()
    };
    let before = per_cpu_passed();
    let dst = SocketAddr::new(IpAddr::V4(ns.host_v4()), PORT);
    let src = ns.client(0);
    let run_for = Duration::from_secs(2);
    let start = std::sync::Arc::new(std::sync::Barrier::new(2));
    let senders: Vec<_> = (0..2usize)
        .map(|cpu| {
            let start = std::sync::Arc::clone(&start);
            ns.spawn(move || {
                let mut set = nix::sched::CpuSet::new();
                set.set(cpu).expect("cpu");
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                    .expect("pin the sender");
                // Several flows per sender: they hash to both queues.
                let sockets: Vec<UdpSocket> = (0..8)
                    .map(|_| UdpSocket::bind(SocketAddr::new(src, 0)).expect("udp"))
                    .collect();
                start.wait();
                let began = Instant::now();
                let mut sent = 0u64;
                while began.elapsed() < run_for {
                    for s in &sockets {
                        if s.send_to(&[0u8; 18], dst).is_ok() {
                            sent += 1;
                        }
                    }
                }
                (sent, began, began.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = senders
        .into_iter()
        .map(|s| s.join().expect("sender"))
        .collect();
    let first = results.iter().map(|r| r.1).min().expect("two senders");
    let last_end = results
        .iter()
        .map(|r| r.1 + r.2)
        .max()
        .expect("two senders");
    let elapsed = (last_end - first).as_secs_f64();
    let sent: u64 = results.iter().map(|r| r.0).sum();
    let after = per_cpu_passed();
    let per_cpu: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let passed: u64 = per_cpu.iter().sum();
    let expected = BURST as f64 + RATE as f64 * elapsed;
    eprintln!(
        "sent {sent} in {elapsed:.2} s; passed per CPU {per_cpu:?} = {passed}, expected {expected:.0}"
    );
    assert!(
        per_cpu.iter().filter(|n| **n > 0).count() >= 2,
        "XDP did not run on two CPUs for the client: {per_cpu:?}"
    );
    assert!(
        sent as f64 > 10.0 * expected,
        "the senders did not flood: {sent}"
    );
    assert!(
        (passed as f64 - expected).abs() <= 0.10 * expected,
        "passed {passed}, expected {expected:.0} ± 10 %"
    );
    assert!(maps.client(src).unwrap().is_some());
}

/// Maps pinned by an incompatible version (another value size) are refused
/// with a clear error, not reused.
#[test]
fn pins_of_an_incompatible_version_are_refused() {
    if !kernel_tests_enabled("pins_of_an_incompatible_version_are_refused") {
        return;
    }
    let pin = pin_dir("oldpins");
    std::fs::create_dir_all(&pin.0).expect("pin dir");
    // EDGE_CONFIG as an earlier version pinned it: a 56-byte value.
    let old = pin.0.join(fraiseql_edge_common::maps::CONFIG);
    let status = Command::new("bpftool")
        .args(["map", "create"])
        .arg(&old)
        .args(["type", "array", "key", "4", "value", "56", "entries", "1"])
        .args(["name", "EDGE_CONFIG"])
        .status()
        .expect("bpftool");
    assert!(status.success(), "bpftool map create");
    let cfg = EdgeConfig::new("lo", &[18609], &pin.0);
    let mut daemon = Daemon::spawn(&cfg.to_toml(), &["--require-ebpf"]);
    let status = daemon
        .wait_exit(Duration::from_secs(20))
        .expect("the daemon refuses incompatible pins");
    assert!(!status.success());
    let log = daemon.log();
    assert!(
        log.contains("incompatible version") && log.contains("detach"),
        "the error explains the pins and the way out:\n{log}"
    );
    assert!(
        !pin.0.join(xdp_link_name("lo")).exists(),
        "nothing attached to lo"
    );
}

/// A count that drifted below the live connections (here: set to 0 behind
/// the tracker's back) never wraps to 2^64 − 1 when a connection closes —
/// that would lock the client out for good. The refused decrement is
/// counted, and the client connects again.
#[test]
fn a_count_below_the_live_connections_never_wraps() {
    if !kernel_tests_enabled("a_count_below_the_live_connections_never_wraps") {
        return;
    }
    const PORT: u16 = 18610;
    let ns = NetNs::new("wrap", 28, 1);
    let host = SocketAddr::new(IpAddr::V4(ns.host_v4()), PORT);
    let listener = TcpListener::bind(host).expect("listener");
    let (pin, _daemon, maps) = start_edge(&ns, "nowrap", PORT, (0, 0, 2));
    let client = ns.client(0);
    let conn = tcp_connect(&ns, client, host, Duration::from_secs(3)).expect("connect");
    let (served, _) = listener.accept().expect("accept");
    assert!(
        eventually(Duration::from_secs(3), || maps.conns(client).unwrap() == 1),
        "counted"
    );
    // The drift: the count says 0 while the connection lives.
    let mut counts: aya::maps::HashMap<aya::maps::MapData, ClientKey, ConnCount> =
        aya::maps::HashMap::try_from(
            open_pin(&pin.0, fraiseql_edge_common::maps::CONN_COUNTS).expect("pin"),
        )
        .expect("count map");
    let k = key::from_ipv4(ns.client_v4(0).octets());
    counts
        .insert(k, ConnCount { slots: 0, owner: k }, 0)
        .expect("set the count to 0");
    let errors = counter(&maps, Counter::ConnCountErrors);
    drop(conn);
    drop(served);
    assert!(
        eventually(Duration::from_secs(5), || counter(
            &maps,
            Counter::ConnCountErrors
        ) > errors),
        "the refused decrement is counted"
    );
    let slots = counts.get(&k, 0).map(|c| c.slots).unwrap_or(0);
    assert!(slots < 2, "the count wrapped: {slots}");
    // Not locked out: two connections fit under the cap again.
    let _a = tcp_connect(&ns, client, host, Duration::from_secs(3)).expect("first again");
    let _b = tcp_connect(&ns, client, host, Duration::from_secs(3)).expect("second again");
}
