//! The daemon counters the cluster benchmark checks its runs with, read
//! from the admin port's `/metrics`.

use std::net::SocketAddr;

use anyhow::{Result, bail};

use super::super::proxy::http;

/// `fraiseql_edge_cluster_checks_total` and
/// `fraiseql_edge_rate_limited_total` of one node, by label.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    /// Global checks Redis answered with "allowed".
    pub allowed: f64,
    /// Global checks Redis answered with "limited".
    pub limited: f64,
    /// Global checks Redis could not answer (down, slow: the node fell back).
    pub unavailable: f64,
    /// Requests refused by the node's own limit.
    pub refused_local: f64,
    /// Requests refused by the global limit.
    pub refused_global: f64,
}

impl Counters {
    /// Reads them off `admin`'s `/metrics`.
    pub fn read(admin: SocketAddr) -> Result<Self> {
        let r = http::request(admin, "GET", "/metrics", None)?;
        if r.status != 200 {
            bail!("GET http://{admin}/metrics: HTTP {}", r.status);
        }
        Ok(parse(&r.body))
    }

    /// What grew since `before`.
    pub fn since(self, before: Self) -> Self {
        Self {
            allowed: self.allowed - before.allowed,
            limited: self.limited - before.limited,
            unavailable: self.unavailable - before.unavailable,
            refused_local: self.refused_local - before.refused_local,
            refused_global: self.refused_global - before.refused_global,
        }
    }
}

/// The counters of a Prometheus text exposition (absent ones stay 0).
fn parse(text: &str) -> Counters {
    let mut c = Counters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let slot = match name {
            r#"fraiseql_edge_cluster_checks_total{result="allowed"}"# => &mut c.allowed,
            r#"fraiseql_edge_cluster_checks_total{result="limited"}"# => &mut c.limited,
            r#"fraiseql_edge_cluster_checks_total{result="unavailable"}"# => &mut c.unavailable,
            r#"fraiseql_edge_rate_limited_total{layer="identity"}"# => &mut c.refused_local,
            r#"fraiseql_edge_rate_limited_total{layer="global"}"# => &mut c.refused_global,
            _ => continue,
        };
        *slot += value;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cluster_and_refusal_counters() {
        let text = "# HELP fraiseql_edge_cluster_checks_total x\n\
            fraiseql_edge_cluster_checks_total{result=\"allowed\"} 120\n\
            fraiseql_edge_cluster_checks_total{result=\"limited\"} 7\n\
            fraiseql_edge_cluster_checks_total{result=\"unavailable\"} 0\n\
            fraiseql_edge_rate_limited_total{layer=\"global\"} 7\n\
            fraiseql_edge_rate_limited_total{layer=\"identity\"} 5000\n\
            fraiseql_edge_requests_total{subgraph=\"bench\"} 9\n";
        let c = parse(text);
        assert_eq!((c.allowed, c.limited, c.unavailable), (120.0, 7.0, 0.0));
        assert_eq!((c.refused_local, c.refused_global), (5000.0, 7.0));
        assert_eq!(c.since(c), Counters::default());
    }
}
