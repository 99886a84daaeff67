//! The monitored edge the metric and operations checks share: a real
//! `fraiseql-edge` with XDP on the host side of a veth pair (a client in
//! the namespace can flood a protected UDP port), `[auth]` with a JWKS URL,
//! a healthy demo subgraph `users` and one, `broken`, whose failures open
//! its breaker (for ten minutes) before they eject its endpoint.

use std::net::{IpAddr, SocketAddr};

use fraiseql_edge_tests::{
    PinDir,
    jwks::JwksServer,
    netns::NetNs,
    servers::UdpCounter,
    subgraphs::{DemoSubgraph, Edge, ProxySetup, SubgraphSpec},
};

use crate::{
    jwt_e2e::keys::{AUDIENCE, ISSUER, TestKey, jwks, p256},
    kernel_e2e::pin_dir,
};

/// The kernel's rate and burst for every client (packets).
pub const RATE: u64 = 100;
pub const BURST: u64 = 50;
/// Health checks that stay out of the way of the traffic.
pub const QUIET_HEALTH: &str = "interval_ms = 60000, timeout_ms = 5000";

/// Fields drop in order: the daemon first, the pins last. Keep the whole
/// value alive (borrow its fields; destructuring it would drop the rest).
pub struct Testbed {
    pub edge: Edge,
    pub jwks: JwksServer,
    /// Kept for the daemon's `users` route.
    _users: DemoSubgraph,
    pub broken: DemoSubgraph,
    /// Counts what reaches the protected UDP port.
    pub udp: UdpCounter,
    /// The protected UDP address on the host side.
    pub udp_dst: SocketAddr,
    /// The namespace's client address.
    pub flooder: IpAddr,
    /// The key the JWKS serves (sign tokens with it).
    pub key: TestKey,
    pub ns: NetNs,
    _pin: PinDir,
}

impl Testbed {
    /// Starts it all; `tag` and `net` name the namespace (unique per test),
    /// `udp_port` is the protected port; `more` subgraphs and top-level
    /// `sections` are added to the configuration.
    pub fn start(
        tag: &'static str,
        net: u8,
        udp_port: u16,
        more: Vec<SubgraphSpec>,
        sections: &[&str],
    ) -> Self {
        let pin = pin_dir(tag);
        let ns = NetNs::new(tag, net, 1);
        let flooder = ns.client(0);
        let udp_dst = SocketAddr::new(ns.host_v4().into(), udp_port);
        let udp = UdpCounter::bind(&[udp_dst]);
        let key = p256(tag);
        let jwks_server = JwksServer::bind(jwks(&[&key]));
        let users = DemoSubgraph::start("users");
        let broken = DemoSubgraph::start("broken");
        let kernel = format!(
            "interfaces = [{:?}]\nprotected_ports = [{udp_port}]\nrate = {RATE}\nburst = {BURST}\n\
             max_conns = 0\nxdp_mode = \"auto\"\npin_path = {:?}\n",
            ns.host_if(),
            pin.0.to_str().expect("UTF-8 pin path"),
        );
        let mut subgraphs = vec![
            SubgraphSpec::new("users", [&users]).table("health", QUIET_HEALTH),
            SubgraphSpec::new("broken", [&broken])
                .table(
                    "health",
                    "interval_ms = 60000, timeout_ms = 5000, unhealthy_after = 50",
                )
                .table("breaker", "consecutive_failures = 3, open_ms = 600000"),
        ];
        subgraphs.extend(more);
        let mut setup = ProxySetup {
            subgraphs,
            ..ProxySetup::default()
        }
        // The test client (loopback) is the trusted router: it may fetch entities.
        .section("[authorization.trusted_router]\ncidrs = [\"127.0.0.0/8\"]")
        // Per-identity limits on but far above the tests' rates; no
        // escalation, which would block the loopback client.
        .rate_limit("requests_per_minute = 1000000\nescalation = { threshold = 0 }");
        for s in sections {
            setup = setup.section(s);
        }
        let mut toml = setup.to_toml_with_kernel(&kernel);
        toml += &format!(
            "\n[auth]\nissuers = [{ISSUER:?}]\naudiences = [{AUDIENCE:?}]\nkeys = [\n\
             {{ type = \"jwks_url\", url = {url:?}, algorithms = [\"ES256\"], refresh_secs = 3600 }},\n]\n",
            url = jwks_server.url(),
        );
        let edge = Edge::start_toml(&toml);
        let log = edge.daemon.log();
        assert!(
            !log.contains("eBPF UNAVAILABLE"),
            "the kernel layer did not start; stderr:\n{log}"
        );
        Testbed {
            edge,
            jwks: jwks_server,
            _users: users,
            broken,
            udp,
            udp_dst,
            flooder,
            key,
            ns,
            _pin: pin,
        }
    }
}
