//! The edge configs of the cluster benchmark: the proxy benchmark's edge
//! with the per-identity limit on, without `[cluster]`, with it and a
//! local limit, and with it and a global limit; and the nodes of the
//! over-admission run (a small limit, escalation off).

use std::net::SocketAddr;

use anyhow::{Result, bail};

use super::super::proxy::targets::edge_config;

/// Requests per minute per identity under load: one a µs, the fastest rate
/// the global script represents (its unit is the µs), so the limit is
/// checked on every request and never refuses wrk, which is one client.
pub const LOAD_RATE: u32 = 60_000_000;
/// Burst under load: a second's worth at [`LOAD_RATE`].
pub const LOAD_BURST: u32 = 1_000_000;

/// Where the limits live in a config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No `[cluster]`: the node's own limit.
    Off,
    /// `[cluster]` set, the limit not marked global (Redis never asked).
    Local,
    /// `[cluster]` set and `global = true`: every request also asks Redis.
    Global,
}

/// The cluster section for `redis`, this node called `node`.
fn cluster_section(redis: SocketAddr, node: &str) -> String {
    format!("\n[cluster]\nredis_url = \"redis://{redis}\"\nnode = \"{node}\"\n")
}

/// The proxy benchmark's edge config with `rate_limit` (a `[rate_limit]`
/// table) in place of its limit-off one, and `[cluster]` unless `Off`.
fn with_limit(
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    rate_limit: &str,
    mode: Mode,
    redis: SocketAddr,
    node: &str,
) -> Result<String> {
    let plain = edge_config(listen, admin, upstream);
    let off = "# wrk is one client: the per-identity limit would refuse it.\n\
               [rate_limit]\n\
               requests_per_minute = 0\n";
    if !plain.contains(off) {
        bail!("the proxy benchmark's edge config changed: update the cluster benchmark");
    }
    let mut text = plain.replace(off, rate_limit);
    if mode != Mode::Off {
        text.push_str(&cluster_section(redis, node));
    }
    Ok(text)
}

/// An edge under load in `mode`: the limit checked on every request and
/// never refusing.
pub fn load_edge(
    mode: Mode,
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    redis: SocketAddr,
) -> Result<String> {
    let rate_limit = format!(
        "# Checked on every request (wrk is one client, one identity); never refuses.\n\
         [rate_limit]\n\
         requests_per_minute = {LOAD_RATE}\n\
         burst = {LOAD_BURST}\n\
         global = {}\n",
        mode == Mode::Global
    );
    with_limit(listen, admin, upstream, &rate_limit, mode, redis, "a")
}

/// A node of the over-admission run: `rpm` and `burst`, global or not,
/// escalation off (the refusals would otherwise block the client).
pub fn admission_node(
    global: bool,
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    redis: SocketAddr,
    node: &str,
    (rpm, burst): (u32, u32),
) -> Result<String> {
    let rate_limit = format!(
        "[rate_limit]\n\
         requests_per_minute = {rpm}\n\
         burst = {burst}\n\
         global = {global}\n\
         escalation = {{ threshold = 0 }}\n"
    );
    let mode = if global { Mode::Global } else { Mode::Local };
    with_limit(listen, admin, upstream, &rate_limit, mode, redis, node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn the_load_configs_differ_only_in_cluster_mode() {
        let off = load_edge(Mode::Off, a(1), a(2), a(3), a(4)).unwrap();
        let local = load_edge(Mode::Local, a(1), a(2), a(3), a(4)).unwrap();
        let global = load_edge(Mode::Global, a(1), a(2), a(3), a(4)).unwrap();
        assert!(off.contains("requests_per_minute = 60000000\n"), "{off}");
        assert!(off.contains("global = false\n") && !off.contains("[cluster]"));
        assert!(local.ends_with("[cluster]\nredis_url = \"redis://127.0.0.1:4\"\nnode = \"a\"\n"));
        assert_eq!(local.replace(&cluster_section(a(4), "a"), ""), off);
        assert_eq!(global.replace("global = true\n", "global = false\n"), local);
    }

    #[test]
    fn admission_nodes_have_a_small_limit_and_no_escalation() {
        let text = admission_node(true, a(1), a(2), a(3), a(4), "b", (600, 20)).unwrap();
        assert!(text.contains("requests_per_minute = 600\nburst = 20\nglobal = true\n"));
        assert!(text.contains("escalation = { threshold = 0 }\n"));
        assert!(text.contains("node = \"b\"\n"));
    }
}
