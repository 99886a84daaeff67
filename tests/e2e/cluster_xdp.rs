//! Cluster mode with the kernel layer: every node is a real daemon with its
//! XDP program attached to its own network (the host side of a veth pair
//! into a namespace of its own, where its clients are), and the nodes share
//! one real Redis (Debian's `redis-server`, started by the test).
//!
//! * One identity (a JWT subject) sending through both nodes gets the
//!   global limit, `burst + rate·t` within ±10 %; each node its own without
//!   `global`; each node its own while Redis is dead, with no error a client
//!   can see; the global limit again once Redis is back.
//! * A block issued on one node makes the other node's XDP program drop
//!   the client within a second, expires on its TTL on every node, holds on
//!   a node started after it, and is lifted everywhere by an unblock on any
//!   node; one set while Redis is dead reaches the others when it is back.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use fraiseql_edge_tests::{
    PinDir,
    jwks::JwksServer,
    kernel_tests_enabled,
    loopback::LoopbackClient,
    netns::NetNs,
    redis::Redis,
    servers::UdpCounter,
    subgraphs::{DemoSubgraph, Edge, ProxySetup, SubgraphSpec},
    wait::eventually,
};
use jsonwebtoken::Algorithm;

use crate::{
    jwt_e2e::keys::{AUDIENCE, ISSUER, TestKey, claims, jwks, p256, sign_with},
    kernel_e2e::pin_dir,
    testbed::QUIET_HEALTH,
};

const QUERY: &str = "{ users(first: 1) { id } }";

/// One node: a daemon with XDP on the host side of its namespace's veth.
struct Node {
    edge: Edge,
    /// Counts what reaches the node's protected UDP port.
    udp: UdpCounter,
    udp_dst: SocketAddr,
    /// The namespace's client address.
    client: IpAddr,
    /// The GraphQL listener as the namespace's clients reach it.
    graphql: SocketAddr,
    ns: NetNs,
    _pin: PinDir,
}

/// What every node of a test shares.
struct Cluster {
    redis: Redis,
    users: DemoSubgraph,
    jwks: JwksServer,
    key: TestKey,
}

impl Cluster {
    fn start(tag: &'static str) -> Option<Self> {
        let redis = Redis::start()?;
        let key = p256(tag);
        Some(Self {
            redis,
            users: DemoSubgraph::start("users"),
            jwks: JwksServer::bind(jwks(&[&key])),
            key,
        })
    }

    /// The network of `tag`/`net` (made first, so a test knows its client
    /// address before the node starts).
    fn network(tag: &'static str, net: u8) -> NetNs {
        NetNs::new(tag, net, 1)
    }

    /// Starts a node on `ns` with the `[rate_limit]` keys `rate_limit`.
    fn node(&self, tag: &'static str, ns: NetNs, udp_port: u16, rate_limit: &str) -> Node {
        let pin = pin_dir(tag);
        let udp_dst = SocketAddr::new(ns.host_v4().into(), udp_port);
        let udp = UdpCounter::bind(&[udp_dst]);
        // The kernel limits are far above the tests' rates: only blocks drop.
        let kernel = format!(
            "interfaces = [{:?}]\nprotected_ports = [{udp_port}]\nrate = 1000000\nburst = 1000000\n\
             max_conns = 0\nxdp_mode = \"auto\"\npin_path = {:?}\n",
            ns.host_if(),
            pin.0.to_str().expect("UTF-8 pin path"),
        );
        let setup = ProxySetup::one(
            SubgraphSpec::new("users", [&self.users]).table("health", QUIET_HEALTH),
        )
        .rate_limit(rate_limit)
        .section(&format!(
            // Generous deadline: a loaded CI machine must not turn a live
            // Redis into a fallback; quick retries after an outage.
            "[cluster]\nredis_url = {:?}\nnode = {tag:?}\ntimeout_ms = 2000\nbreaker_open_ms = 300",
            self.redis.url()
        ))
        .section(&format!(
            "[auth]\nissuers = [{ISSUER:?}]\naudiences = [{AUDIENCE:?}]\nkeys = [\n\
             {{ type = \"jwks_url\", url = {url:?}, algorithms = [\"ES256\"], refresh_secs = 3600 }},\n]",
            url = self.jwks.url(),
        ));
        // The namespace's clients reach the listener through the veth.
        let toml = setup.to_toml_with_kernel(&kernel).replacen(
            "[proxy]\nlisten = \"127.0.0.1:0\"",
            "[proxy]\nlisten = \"0.0.0.0:0\"",
            1,
        );
        let edge = Edge::start_toml(&toml);
        let log = edge.daemon.log();
        assert!(
            !log.contains("eBPF UNAVAILABLE"),
            "the kernel layer did not start; stderr:\n{log}"
        );
        Node {
            graphql: SocketAddr::new(ns.host_v4().into(), edge.graphql.port()),
            edge,
            udp,
            udp_dst,
            client: ns.client(0),
            ns,
            _pin: pin,
        }
    }

    fn token(&self, sub: &str) -> String {
        sign_with(Algorithm::ES256, &self.key, &claims(sub))
    }
}

impl Node {
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        fraiseql_edge_tests::graphql::Client::default()
            .metrics(&format!("http://{}/metrics", self.edge.admin))
            .sum(name, labels)
    }

    /// A UDP socket of the namespace's client.
    fn udp_client(&self) -> UdpSocket {
        let src = SocketAddr::new(self.client, 0);
        self.ns
            .run(|| UdpSocket::bind(src))
            .expect("a UDP socket in the namespace")
    }

    /// Whether datagrams from the client reach the protected port now: a
    /// few are sent, and any one arriving within 300 ms counts.
    fn passes(&self, socket: &UdpSocket) -> bool {
        let before = self.udp.received(self.client);
        for _ in 0..3 {
            socket.send_to(b"probe", self.udp_dst).expect("send");
        }
        eventually(Duration::from_millis(300), || {
            self.udp.received(self.client) > before
        })
    }

    /// The addresses the node's block list holds.
    fn blocks(&self) -> Vec<String> {
        self.edge
            .control()
            .blocks()
            .expect("ListBlocks")
            .into_iter()
            .map(|b| b.address)
            .collect()
    }

    fn wait_synced(&self) {
        assert!(
            eventually(Duration::from_secs(10), || self
                .metric("fraiseql_edge_cluster_block_sync_up", &[])
                == 1.0),
            "the node did not load the shared blocks; log:\n{}",
            self.edge.daemon.log()
        );
    }
}

/// How long after `from` a probe first found the client dropped (within
/// `limit`, or `None`).
fn dropped_after(
    node: &Node,
    socket: &UdpSocket,
    from: Instant,
    limit: Duration,
) -> Option<Duration> {
    while from.elapsed() < limit + Duration::from_secs(2) {
        let sent_at = from.elapsed();
        if !node.passes(socket) {
            return Some(sent_at);
        }
    }
    None
}

#[test]
fn a_block_on_one_node_is_enforced_by_every_nodes_xdp() {
    if !kernel_tests_enabled("a_block_on_one_node_is_enforced_by_every_nodes_xdp") {
        return;
    }
    let _serial = crate::proxy_e2e::serial();
    let Some(mut cluster) = Cluster::start("cblk") else {
        return;
    };
    let a = cluster.node(
        "cblka",
        Cluster::network("cblka", 80),
        18801,
        "requests_per_minute = 0",
    );
    let b = cluster.node(
        "cblkb",
        Cluster::network("cblkb", 81),
        18802,
        "requests_per_minute = 0",
    );
    a.wait_synced();
    b.wait_synced();
    let (from_a, from_b) = (a.udp_client(), b.udp_client());
    assert!(
        a.passes(&from_a) && b.passes(&from_b),
        "traffic before any block"
    );

    // Blocked on A, dropped by B's XDP within a second; and the other way.
    const TTL: u64 = 4;
    let t0 = Instant::now();
    a.edge
        .control()
        .block(&b.client.to_string(), Some(TTL))
        .expect("Block on A");
    let after = dropped_after(&b, &from_b, t0, Duration::from_secs(1));
    assert!(
        after.is_some_and(|d| d < Duration::from_secs(1)),
        "B's XDP dropped B's client {after:?} after the block on A; B's log:\n{}",
        b.edge.daemon.log()
    );
    let t1 = Instant::now();
    b.edge
        .control()
        .block(&a.client.to_string(), Some(TTL))
        .expect("Block on B");
    let after = dropped_after(&a, &from_a, t1, Duration::from_secs(1));
    assert!(
        after.is_some_and(|d| d < Duration::from_secs(1)),
        "A's XDP dropped A's client {after:?} after the block on B"
    );
    // Both nodes hold both blocks.
    for node in [&a, &b] {
        let mut held = node.blocks();
        held.sort();
        let mut want = vec![a.client.to_string(), b.client.to_string()];
        want.sort();
        assert_eq!(held, want);
    }
    assert!(
        b.metric(
            "fraiseql_edge_cluster_blocks_total",
            &[("direction", "received"), ("op", "block")]
        ) >= 1.0
    );
    assert!(
        a.metric(
            "fraiseql_edge_cluster_blocks_total",
            &[("direction", "published"), ("op", "block")]
        ) >= 1.0
    );

    // The TTL runs out on both nodes at once (each sweeps its own list).
    assert!(
        eventually(Duration::from_secs(TTL + 4), || b.passes(&from_b)
            && a.passes(&from_a)),
        "the blocks did not expire"
    );
    // The lists drop them at the next sweep (once a second).
    assert!(eventually(Duration::from_secs(3), || a.blocks().is_empty()
        && b.blocks().is_empty()));

    // A node started after a block enforces it from the start; an unblock
    // on another node lifts it there within a second.
    let ns_c = Cluster::network("cblkc", 82);
    let c_client = ns_c.client(0);
    a.edge
        .control()
        .block(&c_client.to_string(), None)
        .expect("Block on A");
    let c = cluster.node("cblkc", ns_c, 18803, "requests_per_minute = 0");
    c.wait_synced();
    let from_c = c.udp_client();
    assert!(
        !c.passes(&from_c),
        "the late node lets the blocked client through"
    );
    assert_eq!(c.blocks(), vec![c_client.to_string()]);
    let t2 = Instant::now();
    assert!(
        b.edge
            .control()
            .unblock(&c_client.to_string())
            .expect("Unblock on B")
    );
    let lifted = eventually(Duration::from_secs(1), || c.passes(&from_c));
    assert!(
        lifted,
        "the unblock on B did not reach C within a second ({:?})",
        t2.elapsed()
    );
    assert!(eventually(Duration::from_secs(1), || a.blocks().is_empty()));

    // Redis dies: a block set meanwhile holds where it was set, and reaches
    // the other nodes when Redis is back.
    cluster.redis.kill();
    a.edge
        .control()
        .block(&b.client.to_string(), Some(60))
        .expect("Block on A without Redis");
    assert_eq!(a.blocks(), vec![b.client.to_string()]);
    assert!(
        eventually(Duration::from_secs(5), || b
            .metric("fraiseql_edge_cluster_block_sync_up", &[])
            == 0.0),
        "B does not say the block sharing is down"
    );
    assert!(b.passes(&from_b), "B cannot know of the block yet");
    cluster.redis.restart();
    assert!(
        eventually(Duration::from_secs(10), || !b.passes(&from_b)),
        "the block set during the outage did not reach B; B's log:\n{}",
        b.edge.daemon.log()
    );
    for node in [&a, &b] {
        let log = node.edge.daemon.log();
        assert!(log.contains("block sharing through Redis lost"), "{log}");
        assert!(log.contains("block sharing through Redis is back"), "{log}");
    }
}

/// Sends as one identity through every node in turn, as fast as answers
/// come, for `secs`: (statuses, seconds from the first request to the last).
fn spread(cluster: &Cluster, nodes: &[&Node], sub: &str, secs: f64) -> (Vec<u16>, f64) {
    let token = format!("Bearer {}", cluster.token(sub));
    let mut clients: Vec<LoopbackClient> = nodes
        .iter()
        .map(|n| {
            let (src, dst) = (n.client, n.graphql);
            n.ns.run(move || LoopbackClient::connect(src, dst, Duration::from_secs(10)))
                .expect("a connection from the namespace")
        })
        .collect();
    let start = Instant::now();
    let mut statuses = Vec::new();
    let mut last = start;
    while start.elapsed().as_secs_f64() < secs {
        let k = statuses.len() % clients.len();
        last = Instant::now();
        let reply = clients[k]
            .query_with("/users/graphql", QUERY, &[("authorization", &token)])
            .expect("an answer");
        statuses.push(reply.status);
    }
    (statuses, last.duration_since(start).as_secs_f64())
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// 600 a minute (10 a second), burst 20.
const RATE: f64 = 10.0;
const BURST: f64 = 20.0;

fn limits(global: bool) -> String {
    format!(
        "requests_per_minute = 600\nburst = 20\nglobal = {global}\nescalation = {{ threshold = 0 }}"
    )
}

/// Asserts `admitted` is within ±10 % of `nodes` × (burst + rate·t).
fn within_ten_percent(admitted: usize, nodes: f64, t: f64, what: &str, statuses: &[u16]) {
    let bound = nodes * (BURST + RATE * t);
    let ratio = admitted as f64 / bound;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{what}: {admitted} admitted, bound {bound:.1} (t = {t:.2} s, ratio {ratio:.3}); \
         {} requests: {} refused, others {:?}",
        statuses.len(),
        count(statuses, 429),
        statuses
            .iter()
            .filter(|s| **s != 200 && **s != 429)
            .collect::<Vec<_>>(),
    );
}

#[test]
fn one_identity_through_two_xdp_nodes_gets_the_global_limit() {
    if !kernel_tests_enabled("one_identity_through_two_xdp_nodes_gets_the_global_limit") {
        return;
    }
    let _serial = crate::proxy_e2e::serial();
    let Some(mut cluster) = Cluster::start("cgl") else {
        return;
    };
    let a = cluster.node("cgla", Cluster::network("cgla", 83), 18804, &limits(true));
    let b = cluster.node("cglb", Cluster::network("cglb", 84), 18805, &limits(true));

    // GetLimits says the limit is held across nodes.
    let limits = a.edge.control().limits().expect("GetLimits");
    assert!(
        limits.rate_limit.is_some_and(|r| r.cluster_wide),
        "{limits:?}"
    );
    assert!(
        limits
            .subgraphs
            .iter()
            .all(|s| s.limit.is_some_and(|l| l.cluster_wide))
    );

    let (statuses, t) = spread(&cluster, &[&a, &b], "alice", 3.0);
    assert_eq!(
        count(&statuses, 200) + count(&statuses, 429),
        statuses.len(),
        "{statuses:?}"
    );
    within_ten_percent(count(&statuses, 200), 1.0, t, "global, Redis up", &statuses);
    // Both nodes refused (the refusals are global ones) and admitted.
    for node in [&a, &b] {
        assert!(node.metric("fraiseql_edge_rate_limited_total", &[("layer", "global")]) > 0.0);
        assert!(
            node.metric(
                "fraiseql_edge_cluster_checks_total",
                &[("result", "allowed")]
            ) > 0.0
        );
    }

    // Redis is killed under load: no client sees an error caused by it.
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, bad) = (stop.clone(), bad.clone());
        let token = format!("Bearer {}", cluster.token("dave"));
        let (src, dst) = (a.client, a.graphql);
        let mut client =
            a.ns.run(move || LoopbackClient::connect(src, dst, Duration::from_secs(10)))
                .expect("a connection from the namespace");
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match client.query_with("/users/graphql", QUERY, &[("authorization", &token)]) {
                    Ok(r) if r.status == 200 || r.status == 429 => {}
                    _ => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
                sent += 1;
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    cluster.redis.kill();
    // Fail-open: each node enforces its own limit.
    let (statuses, t) = spread(&cluster, &[&a, &b], "bob", 3.0);
    stop.store(true, Ordering::Relaxed);
    let sent = load.join().expect("the load thread");
    assert!(sent > 0);
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "answers other than 200/429 under load"
    );
    assert_eq!(
        count(&statuses, 200) + count(&statuses, 429),
        statuses.len(),
        "{statuses:?}"
    );
    within_ten_percent(
        count(&statuses, 200),
        2.0,
        t,
        "Redis dead: each node its own",
        &statuses,
    );
    for node in [&a, &b] {
        assert_eq!(node.metric("fraiseql_edge_cluster_redis_up", &[]), 0.0);
        assert!(
            node.metric(
                "fraiseql_edge_cluster_checks_total",
                &[("result", "unavailable")]
            ) > 0.0
        );
    }

    // Back: the global limit holds again.
    cluster.redis.restart();
    std::thread::sleep(Duration::from_millis(600));
    let (statuses, t) = spread(&cluster, &[&a, &b], "carol", 3.0);
    within_ten_percent(count(&statuses, 200), 1.0, t, "Redis back", &statuses);
    assert!(a.edge.daemon.log().contains("Redis is reachable again"));
}

#[test]
fn without_global_each_xdp_node_admits_its_own_limit() {
    if !kernel_tests_enabled("without_global_each_xdp_node_admits_its_own_limit") {
        return;
    }
    let _serial = crate::proxy_e2e::serial();
    let Some(cluster) = Cluster::start("cloc") else {
        return;
    };
    let a = cluster.node(
        "cloca",
        Cluster::network("cloca", 85),
        18806,
        &limits(false),
    );
    let b = cluster.node(
        "clocb",
        Cluster::network("clocb", 86),
        18807,
        &limits(false),
    );
    let (statuses, t) = spread(&cluster, &[&a, &b], "alice", 3.0);
    within_ten_percent(count(&statuses, 200), 2.0, t, "global off", &statuses);
    assert_eq!(a.metric("fraiseql_edge_cluster_checks_total", &[]), 0.0);
}
