//! The daemon, end to end: a real `fraiseql-edge` process attaches XDP to the
//! host side of a veth pair, clients in a network namespace send real
//! traffic, servers in the root namespace count what arrives, and the pinned
//! maps are read back through `KernelMaps`.
//!
//! Each test owns a namespace (`net` number → 10.201.<net>.0/24), its own
//! protected ports and its own pin directory, so the tests run in parallel.
//! Windows are generous and waits poll: a busy 2-core machine must not make
//! a correct implementation fail. Nothing here times performance.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use fraiseql_edge::kernel::{KernelMaps, xdp_link_name};
use fraiseql_edge_common::Counter;
use fraiseql_edge_tests::{
    PinDir,
    clients::{Flood, flood_for, tcp_connect},
    daemon::{Daemon, EdgeConfig, Override},
    kernel_tests_enabled,
    netns::NetNs,
    servers::{TcpHolder, UdpCounter},
    wait::{eventually, settled},
    xdp_attach::{pinned_link, xdp_links_of_prog, xdp_prog_ids},
};

/// `PinDir::new` may mount bpffs; two tests mounting it at once would stack
/// two bpffs instances. One at a time.
pub(crate) fn pin_dir(name: &str) -> PinDir {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    PinDir::new(name)
}

pub(crate) fn open_maps(pin: &PinDir) -> KernelMaps {
    KernelMaps::open_pinned(&pin.0).expect("opening the daemon's pinned maps")
}

pub(crate) fn counter(maps: &KernelMaps, c: Counter) -> u64 {
    maps.counter(c).expect("reading a counter")
}

pub(crate) fn conns(maps: &KernelMaps, ip: IpAddr) -> u64 {
    maps.conns(ip).expect("reading a connection count")
}

/// |a − b| ≤ tolerance · b.
fn within(actual: f64, expected: f64, tolerance: f64) -> bool {
    (actual - expected).abs() <= tolerance * expected
}

#[test]
fn rate_limit_passes_burst_plus_rate_times_duration() {
    if !kernel_tests_enabled("rate_limit_passes_burst_plus_rate_times_duration") {
        return;
    }
    const RATE: u64 = 500;
    const BURST: u64 = 200;
    const PORT: u16 = 18101;
    let pin = pin_dir("rate");
    let ns = NetNs::new("rate", 1, 1);
    let server = UdpCounter::bind(&[SocketAddr::new(ns.host_v4().into(), PORT)]);
    let mut cfg = EdgeConfig::new(ns.host_if(), &[PORT], &pin.0);
    cfg.rate = RATE;
    cfg.burst = BURST;
    let daemon = Daemon::start(&cfg);
    let maps = open_maps(&pin);

    let client = ns.client(0);
    let dst = SocketAddr::new(ns.host_v4().into(), PORT);
    // Ten times the rate, for three seconds.
    let report = flood_for(&ns, client, dst, 10 * RATE, Duration::from_secs(3));
    let received = settled(Duration::from_secs(3), || server.received(client));

    let secs = report.duration.as_secs_f64();
    let expected = BURST as f64 + RATE as f64 * secs;
    let info = maps
        .client(client)
        .expect("reading the client map")
        .expect("the flooding client is tracked");
    println!(
        "rate: sent {} in {secs:.3} s, received {received}, expected {expected:.0} \
         (burst {BURST} + {RATE} pps × {secs:.3} s); kernel passed {} dropped {}",
        report.sent, info.passed, info.dropped
    );
    assert!(
        report.sent as f64 > 3.0 * expected,
        "the flood ({} packets) was not well above the limit",
        report.sent
    );
    assert!(
        within(received as f64, expected, 0.10),
        "received {received}, expected {expected:.0} ± 10 %"
    );
    assert!(
        !daemon.log().contains("new client, port"),
        "the programs' debug log is off by default"
    );
    assert!(
        info.passed.abs_diff(received) <= 5.max(received / 100),
        "kernel passed {} but the server received {received}",
        info.passed
    );
    assert!(info.dropped > 0, "the client has no drops");
    assert!(info.passed + info.dropped <= report.sent);
    assert!(counter(&maps, Counter::DroppedRate) > 0);
}

#[test]
fn block_with_ttl_stops_one_client_then_expires() {
    if !kernel_tests_enabled("block_with_ttl_stops_one_client_then_expires") {
        return;
    }
    const PORT: u16 = 18201;
    const TTL: u64 = 3;
    const RATE: u64 = 300;
    const BURST: u64 = 150;
    let pin = pin_dir("block");
    let ns = NetNs::new("block", 2, 2);
    let server = UdpCounter::bind(&[SocketAddr::new(ns.host_v4().into(), PORT)]);
    let mut cfg = EdgeConfig::new(ns.host_if(), &[PORT], &pin.0);
    cfg.rate = RATE;
    cfg.burst = BURST;
    let _daemon = Daemon::start(&cfg);
    let mut maps = open_maps(&pin);

    let (blocked, other) = (ns.client(0), ns.client(1));
    let dst = SocketAddr::new(ns.host_v4().into(), PORT);
    // The client to block stays within the limit, so only the block can
    // stop its packets. The other floods at ten times the limit, so what
    // it gets through while the block is in force is exactly its limit.
    let blocked_flood = Flood::start(&ns, blocked, dst, RATE / 2);
    let other_flood = Flood::start(&ns, other, dst, 10 * RATE);
    assert!(
        eventually(Duration::from_secs(5), || server.received(blocked) > 20
            && server.received(other) > 20),
        "traffic from both clients should arrive before the block"
    );

    let dropped_before = counter(&maps, Counter::DroppedBlock);
    let t0 = Instant::now();
    maps.block(blocked, Some(TTL)).expect("blocking");
    let listed = maps.blocks().expect("listing blocks");
    assert!(
        listed
            .iter()
            .any(|b| b.client == blocked && b.expires_in_secs.is_some_and(|s| s <= TTL)),
        "block list: {listed:?}"
    );

    // Within 1 s the blocked client's packets stop; check the following second.
    std::thread::sleep(Duration::from_secs(1).saturating_sub(t0.elapsed()));
    let b1 = server.received(blocked);
    std::thread::sleep(Duration::from_secs(2).saturating_sub(t0.elapsed()));
    let b2 = server.received(blocked);
    let dropped_block = counter(&maps, Counter::DroppedBlock) - dropped_before;
    let other_report = other_flood.stop();
    let other_received = settled(Duration::from_secs(3), || server.received(other));
    let other_secs = other_report.duration.as_secs_f64();
    let other_expected = BURST as f64 + RATE as f64 * other_secs;
    println!(
        "block: t0+1s..t0+2s blocked client +{}; dropped_block +{dropped_block}; other client \
         sent {} in {other_secs:.3} s (the block in force for the last 2 s), received \
         {other_received}, expected {other_expected:.0} (burst {BURST} + {RATE} pps × \
         {other_secs:.3} s)",
        b2 - b1,
        other_report.sent
    );
    assert_eq!(b2, b1, "a blocked client's packets still arrive");
    assert!(dropped_block > 100, "dropped_block grew by {dropped_block}");
    assert!(
        other_report.sent as f64 > 3.0 * other_expected,
        "the other client's flood ({} packets) was not well above its limit",
        other_report.sent
    );
    assert!(
        within(other_received as f64, other_expected, 0.10),
        "the other client received {other_received}, expected its limit {other_expected:.0} \
         ± 10 %: a block changed another client's enforcement"
    );

    // After the TTL the client's packets arrive again, and the daemon
    // deletes the expired entry (it sweeps once a second).
    assert!(
        eventually(Duration::from_secs(TTL + 3), || server.received(blocked)
            > b2),
        "the client is still blocked {:?} after the block",
        t0.elapsed()
    );
    let resumed = t0.elapsed();
    println!("block: traffic resumed {resumed:?} after a {TTL} s block");
    assert!(
        resumed >= Duration::from_secs(TTL) - Duration::from_millis(50),
        "the block lifted early, after {resumed:?}"
    );
    assert!(
        eventually(Duration::from_secs(3), || maps
            .blocks()
            .is_ok_and(|b| b.is_empty())),
        "the expired block is still listed: {:?}",
        maps.blocks()
    );
    blocked_flood.stop();
}

#[test]
fn overrides_allow_deny_and_limit_per_cidr() {
    if !kernel_tests_enabled("overrides_allow_deny_and_limit_per_cidr") {
        return;
    }
    const PORT: u16 = 18301;
    const RATE: u64 = 10;
    const BURST: u64 = 5;
    const V6_RATE: u64 = 100;
    const V6_BURST: u64 = 50;
    let pin = pin_dir("overrides");
    let ns = NetNs::new("ovr", 3, 4);
    let (allowed, denied, plain) = (ns.client(0), ns.client(1), ns.client(2));
    let limited = IpAddr::V6(ns.client_v6(3));
    let server = UdpCounter::bind(&[
        SocketAddr::new(ns.host_v4().into(), PORT),
        SocketAddr::new(ns.host_v6().into(), PORT),
    ]);
    let mut cfg = EdgeConfig::new(ns.host_if(), &[PORT], &pin.0);
    cfg.rate = RATE;
    cfg.burst = BURST;
    // IPv6 clients are keyed by their /64 (the default `ipv6_prefix`).
    let v6_net = Ipv6Addr::from(u128::from(ns.client_v6(3)) & !(u128::from(u64::MAX)));
    cfg.overrides = vec![
        Override::allow(format!("{allowed}/32")),
        Override::deny(format!("{denied}/32")),
        Override::limit(format!("{v6_net}/64"), V6_RATE, V6_BURST),
    ];
    let _daemon = Daemon::start(&cfg);
    let maps = open_maps(&pin);

    let v4_dst = SocketAddr::new(ns.host_v4().into(), PORT);
    let v6_dst = SocketAddr::new(ns.host_v6().into(), PORT);
    let floods = [
        (allowed, Flood::start(&ns, allowed, v4_dst, 200)),
        (denied, Flood::start(&ns, denied, v4_dst, 200)),
        (plain, Flood::start(&ns, plain, v4_dst, 200)),
        (limited, Flood::start(&ns, limited, v6_dst, 400)),
    ];
    std::thread::sleep(Duration::from_secs(2));
    let reports: Vec<_> = floods.into_iter().map(|(ip, f)| (ip, f.stop())).collect();
    let report = |ip: IpAddr| reports.iter().find(|(a, _)| *a == ip).expect("flooded").1;

    let allowed_sent = report(allowed).sent;
    let allowed_received = settled(Duration::from_secs(3), || server.received(allowed));
    let denied_sent = report(denied).sent;
    let plain_received = server.received(plain);
    let plain_secs = report(plain).duration.as_secs_f64();
    let plain_max = BURST as f64 + RATE as f64 * plain_secs;
    let v6_received = server.received(limited);
    let v6_secs = report(limited).duration.as_secs_f64();
    let v6_expected = V6_BURST as f64 + V6_RATE as f64 * v6_secs;
    println!(
        "overrides: allow sent {allowed_sent} received {allowed_received}; deny sent \
         {denied_sent} received {}; default-limited received {plain_received} (≤ {plain_max:.0}); \
         IPv6 limit override received {v6_received} (expected {v6_expected:.0})",
        server.received(denied)
    );
    assert_eq!(
        allowed_received, allowed_sent,
        "allow: every packet arrives"
    );
    assert!(counter(&maps, Counter::Bypassed) >= allowed_sent);
    assert_eq!(server.received(denied), 0, "deny: nothing arrives");
    assert!(counter(&maps, Counter::DroppedDeny) >= denied_sent);
    assert!(
        plain_received >= BURST && plain_received as f64 <= plain_max * 1.1 + 2.0,
        "default limit: received {plain_received}, at most {plain_max:.0} expected"
    );
    assert!(
        within(v6_received as f64, v6_expected, 0.15),
        "limit override: received {v6_received}, expected {v6_expected:.0} ± 15 %"
    );
}

#[test]
fn connection_cap_admits_max_conns_per_client() {
    if !kernel_tests_enabled("connection_cap_admits_max_conns_per_client") {
        return;
    }
    const PORT: u16 = 18401;
    const K: u64 = 3;
    let pin = pin_dir("conncap");
    let ns = NetNs::new("conn", 4, 2);
    let dst = SocketAddr::new(ns.host_v4().into(), PORT);
    let server = TcpHolder::bind(dst);
    let mut cfg = EdgeConfig::new(ns.host_if(), &[PORT], &pin.0);
    cfg.rate = 0;
    cfg.max_conns = K as u32;
    let _daemon = Daemon::start(&cfg);
    let maps = open_maps(&pin);
    let (capped, other) = (ns.client(0), ns.client(1));
    let connect = |src: IpAddr, timeout: Duration| tcp_connect(&ns, src, dst, timeout);

    let mut held: Vec<_> = (0..K)
        .map(|i| {
            connect(capped, Duration::from_secs(3))
                .unwrap_or_else(|e| panic!("connection {} of {K}: {e}", i + 1))
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(3), || conns(&maps, capped) == K),
        "conns({capped}) = {}, expected {K}",
        conns(&maps, capped)
    );

    let started = Instant::now();
    let extra = connect(capped, Duration::from_millis(1500));
    println!(
        "conn cap: connection {} → {:?} after {:?}; conns = {}, dropped_conn = {}",
        K + 1,
        extra.as_ref().map(|_| "connected").map_err(|e| e.kind()),
        started.elapsed(),
        conns(&maps, capped),
        counter(&maps, Counter::DroppedConn)
    );
    let err = extra.expect_err("a connection beyond max_conns was admitted");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(counter(&maps, Counter::DroppedConn) > 0);
    assert_eq!(conns(&maps, capped), K);
    assert_eq!(server.accepted(capped), K);

    // A different client is unaffected.
    let other_conn = connect(other, Duration::from_secs(3)).expect("another client connects");
    assert!(eventually(Duration::from_secs(3), || conns(&maps, other) == 1));

    // Closing one frees a slot.
    drop(held.pop());
    assert!(
        eventually(Duration::from_secs(3), || conns(&maps, capped) == K - 1),
        "conns({capped}) = {} after closing one",
        conns(&maps, capped)
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    let replacement = loop {
        match connect(capped, Duration::from_secs(1)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => println!("conn cap: retrying after {e}"),
            Err(e) => panic!("no connection after one was closed: {e}"),
        }
    };
    held.push(replacement);
    assert!(eventually(Duration::from_secs(3), || conns(&maps, capped) == K));

    // Closing everything brings the counts back to zero.
    drop(held);
    drop(other_conn);
    assert!(
        eventually(Duration::from_secs(5), || conns(&maps, capped) == 0
            && conns(&maps, other) == 0),
        "after closing all: conns({capped}) = {}, conns({other}) = {}",
        conns(&maps, capped),
        conns(&maps, other)
    );
    let (opened, closed) = (
        counter(&maps, Counter::ConnOpened),
        counter(&maps, Counter::ConnClosed),
    );
    println!("conn cap: conn_opened {opened}, conn_closed {closed}");
    assert_eq!(opened, K + 2, "K + replacement + other client");
    assert_eq!(closed, opened);
}

/// Packets from `client` that reach the server while `window` passes, the
/// window's true length, and how much `dropped_rate` grew.
fn measure(
    server: &UdpCounter,
    maps: &KernelMaps,
    client: IpAddr,
    window: Duration,
) -> (u64, f64, u64) {
    let (r0, d0, t0) = (
        server.received(client),
        counter(maps, Counter::DroppedRate),
        Instant::now(),
    );
    std::thread::sleep(window);
    let (r1, d1) = (server.received(client), counter(maps, Counter::DroppedRate));
    (r1 - r0, t0.elapsed().as_secs_f64(), d1 - d0)
}

/// A tracked client's (passed, dropped).
fn figures(maps: &KernelMaps, client: IpAddr) -> (u64, u64) {
    let info = maps
        .client(client)
        .expect("reading the client map")
        .unwrap_or_else(|| panic!("{client} is not tracked"));
    (info.passed, info.dropped)
}

/// SIGKILL, then a new daemon with the same configuration. While no daemon
/// runs the pinned programs keep enforcing and the pinned tracker keeps
/// counting; the new daemon adopts the link and the maps as they are — read
/// back through handles opened afresh from the pins.
///
/// Four clients: `flooder` floods UDP throughout; `holder` keeps two TCP
/// connections open; `quiet` sends one burst, then nothing, so its figures
/// must come through the restart unchanged; `closer` (its own cap: one
/// connection) closes its connection while no daemon runs.
#[test]
fn enforcement_survives_sigkill_and_restart_adopts_pins() {
    if !kernel_tests_enabled("enforcement_survives_sigkill_and_restart_adopts_pins") {
        return;
    }
    const UDP_PORT: u16 = 18501;
    const TCP_PORT: u16 = 18502;
    const RATE: u64 = 200;
    const BURST: u64 = 100;
    let pin = pin_dir("restart");
    let ns = NetNs::new("rst", 5, 4);
    let (flooder, holder_client, quiet, closer) =
        (ns.client(0), ns.client(1), ns.client(2), ns.client(3));
    let udp_dst = SocketAddr::new(ns.host_v4().into(), UDP_PORT);
    let tcp_dst = SocketAddr::new(ns.host_v4().into(), TCP_PORT);
    let server = UdpCounter::bind(&[udp_dst]);
    let holder = TcpHolder::bind(tcp_dst);
    let mut cfg = EdgeConfig::new(ns.host_if(), &[UDP_PORT, TCP_PORT], &pin.0);
    cfg.rate = RATE;
    cfg.burst = BURST;
    cfg.max_conns = 10;
    // Were the close of `closer`'s one connection missed, it would be locked out.
    cfg.overrides = vec![Override::limit(format!("{closer}/32"), RATE, BURST).with_max_conns(1)];
    let mut first = Daemon::start(&cfg);
    let maps = open_maps(&pin);
    let link_pin = pin.0.join(xdp_link_name(ns.host_if()));
    let (link_id, prog_before) = pinned_link(&link_pin);
    assert_eq!(xdp_prog_ids(ns.host_if()), vec![prog_before]);

    let _tcp: Vec<_> = (0..2)
        .map(|_| tcp_connect(&ns, holder_client, tcp_dst, Duration::from_secs(3)).expect("connect"))
        .collect();
    assert!(eventually(Duration::from_secs(3), || conns(
        &maps,
        holder_client
    ) == 2));
    assert!(eventually(Duration::from_secs(3), || holder
        .open(holder_client)
        == 2));

    let closer_conn =
        tcp_connect(&ns, closer, tcp_dst, Duration::from_secs(3)).expect("`closer` connects");
    assert!(
        eventually(Duration::from_secs(3), || conns(&maps, closer) == 1),
        "conns({closer}) = {}, expected 1",
        conns(&maps, closer)
    );
    let refused = tcp_connect(&ns, closer, tcp_dst, Duration::from_millis(1500))
        .expect_err("`closer` got a second connection: its cap of 1 is not in force");
    assert_eq!(refused.kind(), std::io::ErrorKind::TimedOut, "{refused}");

    // `quiet`: one burst above its limit, then silence.
    let quiet_report = flood_for(&ns, quiet, udp_dst, 10 * RATE, Duration::from_millis(500));
    settled(Duration::from_secs(3), || server.received(quiet));
    let quiet_before = figures(&maps, quiet);
    println!(
        "restart: quiet client sent {}, kernel passed/dropped {quiet_before:?}",
        quiet_report.sent
    );
    assert!(
        quiet_before.0 > 0 && quiet_before.1 > 0,
        "the quiet client should have passed and dropped packets: {quiet_before:?}"
    );

    let flood = Flood::start(&ns, flooder, udp_dst, 3000);
    assert!(eventually(Duration::from_secs(5), || server
        .received(flooder)
        > 0));
    std::thread::sleep(Duration::from_secs(1)); // the burst is spent

    // SIGKILL: nothing in the daemon runs; the pinned links keep enforcing.
    let flooder_before = figures(&maps, flooder);
    first.kill();
    let sent_before = flood.sent();
    let (received, secs, dropped) = measure(&server, &maps, flooder, Duration::from_secs(2));
    let sent = flood.sent() - sent_before;
    println!(
        "restart: daemon killed; in {secs:.2} s sent {sent}, received {received} \
         (limit {RATE} pps), dropped_rate +{dropped}"
    );
    assert!(dropped > 0, "no drops after the daemon was killed");
    assert!(
        received as f64 <= RATE as f64 * secs * 1.2 + 10.0,
        "received {received} in {secs:.2} s: not limited to {RATE} pps"
    );
    assert!(sent > 3 * received, "the flood stalled ({sent} sent)");
    assert_eq!(
        conns(&maps, holder_client),
        2,
        "connection count after SIGKILL"
    );
    assert_eq!(xdp_prog_ids(ns.host_if()), vec![prog_before]);

    // With no daemon running, `closer` closes its connection: the pinned
    // tracker still sees the socket reach CLOSE and uncounts it.
    let closed_before = counter(&maps, Counter::ConnClosed);
    drop(closer_conn);
    assert!(
        eventually(Duration::from_secs(5), || conns(&maps, closer) == 0),
        "conns({closer}) = {} after a close with no daemon running",
        conns(&maps, closer)
    );
    assert!(eventually(Duration::from_secs(3), || holder.open(closer) == 0));
    assert!(eventually(Duration::from_secs(3), || counter(
        &maps,
        Counter::ConnClosed
    ) > closed_before));
    assert_eq!(
        counter(&maps, Counter::ConnClosed) - closed_before,
        1,
        "conn_closed while no daemon ran"
    );

    // Restart with the same configuration: the pinned link is adopted.
    let mut second = Daemon::start(&cfg);
    let log = second.log();
    assert!(
        log.contains("adopted pinned link"),
        "restarted daemon did not adopt the pinned link; stderr:\n{log}"
    );
    assert!(
        log.contains("connection tracker attached replaced=true"),
        "restarted daemon did not replace the pinned tracker; stderr:\n{log}"
    );
    let progs = xdp_prog_ids(ns.host_if());
    assert_eq!(progs.len(), 1, "XDP programs on the interface: {progs:?}");
    let (link_after, prog_after) = pinned_link(&link_pin);
    println!(
        "restart: link {link_id} prog {prog_before} → link {link_after} prog {prog_after}; \
         attached {progs:?}"
    );
    assert_eq!(link_after, link_id, "the same link is kept");
    assert_eq!(
        progs,
        vec![prog_after],
        "the link's program is the one attached"
    );
    assert_ne!(
        prog_after, prog_before,
        "the new daemon's program is in force"
    );
    assert_eq!(
        xdp_links_of_prog(prog_after),
        vec![link_id],
        "one XDP link runs the program"
    );

    // What the new daemon left pinned, through handles opened afresh.
    drop(maps);
    let maps = open_maps(&pin);
    let (quiet_after, flooder_after) = (figures(&maps, quiet), figures(&maps, flooder));
    println!(
        "restart: after adoption quiet {quiet_before:?} → {quiet_after:?}, flooder \
         {flooder_before:?} → {flooder_after:?} (passed, dropped); conns holder {}, closer {}",
        conns(&maps, holder_client),
        conns(&maps, closer)
    );
    assert_eq!(
        quiet_after, quiet_before,
        "the quiet client's passed/dropped changed across the restart"
    );
    assert!(
        flooder_after.0 >= flooder_before.0 && flooder_after.1 > flooder_before.1,
        "the flooder's passed/dropped went from {flooder_before:?} to {flooder_after:?}"
    );
    assert_eq!(
        conns(&maps, holder_client),
        2,
        "connection count after restart"
    );
    assert_eq!(
        conns(&maps, closer),
        0,
        "a connection closed while no daemon ran is counted again"
    );
    // Not locked out: `closer` gets its one connection.
    let _again = tcp_connect(&ns, closer, tcp_dst, Duration::from_secs(3))
        .expect("`closer` is locked out after the restart");
    assert!(eventually(Duration::from_secs(3), || conns(&maps, closer) == 1));

    let (received, secs, dropped) = measure(&server, &maps, flooder, Duration::from_secs(2));
    println!("restart: after restart, in {secs:.2} s received {received}, dropped_rate +{dropped}");
    assert!(dropped > 0);
    assert!(
        received as f64 <= RATE as f64 * secs * 1.2 + 10.0,
        "received {received} in {secs:.2} s after the restart: not limited to {RATE} pps"
    );
    flood.stop();
    let status = second.terminate();
    assert!(status.success(), "SIGTERM exit: {status:?}");
}

#[test]
fn require_ebpf_refuses_and_default_degrades_without_bpffs() {
    if !kernel_tests_enabled("require_ebpf_refuses_and_default_degrades_without_bpffs") {
        return;
    }
    // /tmp is not bpffs: the kernel layer cannot pin there.
    let not_bpffs = tempfile::tempdir().expect("temp dir");
    let cfg = EdgeConfig::new("lo", &[18601], &not_bpffs.path().join("pins"));

    let mut strict = Daemon::spawn(&cfg.to_toml(), &["--require-ebpf"]);
    let status = strict
        .wait_exit(Duration::from_secs(20))
        .expect("--require-ebpf without bpffs must exit");
    let log = strict.log();
    println!("require-ebpf: {status:?}; stderr:\n{log}");
    assert!(!status.success(), "exited successfully without eBPF");
    assert!(log.contains("bpffs"), "the error does not mention bpffs");
    assert!(!log.contains(": ready"), "became ready without eBPF");

    let mut degraded = Daemon::spawn(&cfg.to_toml(), &[]);
    degraded.wait_ready();
    let log = degraded.log();
    assert!(
        log.contains("eBPF UNAVAILABLE"),
        "no degraded-mode warning; stderr:\n{log}"
    );
    let status = degraded.terminate();
    assert!(status.success(), "SIGTERM exit: {status:?}");
}

/// `ebpf_debug_log = true`: the programs' aya-log records reach the
/// daemon's log (off by default: see the rate test).
///
/// The daemon logs JSON lines, and a record only counts when it is one the
/// forwarder wrote for the XDP program: logged under `fraiseql_edge::ebpf`,
/// with the eBPF program's own module path and level, and the program's
/// exact message for this test's port. A daemon-side line (the sampled drop
/// events also carry the port) can never match.
#[test]
fn ebpf_debug_log_reaches_the_daemon_log() {
    if !kernel_tests_enabled("ebpf_debug_log_reaches_the_daemon_log") {
        return;
    }
    const PORT: u16 = 18106;
    let pin = pin_dir("dbglog");
    let ns = NetNs::new("dbglog", 6, 1);
    let dst = SocketAddr::new(ns.host_v4().into(), PORT);
    let _server = UdpCounter::bind(&[dst]);
    let cfg = EdgeConfig::new(ns.host_if(), &[PORT], &pin.0);
    // No overrides: the key still lands in the [kernel] table.
    let toml = format!("{}ebpf_debug_log = true\n", cfg.to_toml());
    let mut daemon = Daemon::spawn(&toml, &["--log-json"]);
    daemon.wait_ready();
    let client = ns.client(0);

    flood_for(&ns, client, dst, 100, Duration::from_millis(500));
    let new_client = format!("new client, port {PORT}");
    assert!(
        daemon.wait_for_record(|r| from_xdp_program(r, &new_client), Duration::from_secs(5)),
        "no `{new_client}` record from the XDP program; log:\n{}",
        daemon.log()
    );

    // The first drop of a blocked client is sampled, and logged.
    open_maps(&pin).block(client, None).expect("blocking");
    flood_for(&ns, client, dst, 100, Duration::from_millis(500));
    // A block is judged before any port is read: the record names the
    // protocol (UDP) instead.
    let blocked = "blocked client dropped, protocol 17".to_owned();
    assert!(
        daemon.wait_for_record(|r| from_xdp_program(r, &blocked), Duration::from_secs(5)),
        "no `{blocked}` record from the XDP program; log:\n{}",
        daemon.log()
    );
}

/// A forwarded aya-log record of the XDP program with exactly `message`.
fn from_xdp_program(record: &serde_json::Value, message: &str) -> bool {
    let fields = &record["fields"];
    record["target"] == "fraiseql_edge::ebpf"
        && fields["program"] == EBPF_MODULE
        && fields["level"] == "DEBUG"
        && fields["message"] == message
}

/// The module path aya-log records carry: the XDP program's binary crate
/// (`fraiseql-edge-xdp` in `ebpf/fraiseql-edge-ebpf`).
const EBPF_MODULE: &str = "fraiseql_edge_xdp";
