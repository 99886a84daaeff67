//! The markdown tables: medians per upstream, target and concurrency, then
//! the ratios that answer the question (the full pipeline against
//! HAProxy with JWT checks, and against the plain edge).

use std::fmt::Write;

use super::super::proxy::upstream::Upstream;
#[cfg(test)]
use super::super::proxy::wrk::Sample;
use super::super::runs::{find, medians_table};
use super::Role;

/// The samples of one target in front of one upstream at one concurrency.
pub type Cell = super::super::runs::Cell<Role>;

/// Both tables, for `upstreams` and `connections` in the order given.
pub fn render(cells: &[Cell], upstreams: &[Upstream], connections: &[u32]) -> String {
    let find = |upstream: Upstream, role: Role, c: u32| find(cells, upstream, role, c);
    let mut out = medians_table(cells, &Role::ALL, upstreams, connections);
    out.push('\n');
    out.push_str(
        "| upstream | connections | full/HAProxy-JWT req/s | full/plain edge req/s | full, cache off/HAProxy-JWT req/s | HAProxy-JWT/HAProxy req/s | full/HAProxy-JWT p99 | goal met |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---|\n");
    for &u in upstreams {
        for &c in connections {
            let (Some(plain), Some(full), Some(nocache), Some(jwt), Some(ha)) = (
                find(u, Role::EdgePlain, c),
                find(u, Role::EdgeFull, c),
                find(u, Role::EdgeFullNoCache, c),
                find(u, Role::HaproxyJwt, c),
                find(u, Role::HaproxyPlain, c),
            ) else {
                continue;
            };
            let ratio = full.rps / jwt.rps;
            let _ = writeln!(
                out,
                "| {} | {c} | {ratio:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                u.label(),
                full.rps / plain.rps,
                nocache.rps / jwt.rps,
                jwt.rps / ha.rps,
                full.p99_ms / jwt.p99_ms,
                if ratio >= 1.0 { "yes" } else { "no" }
            );
        }
    }
    out.push_str(
        "\ngoal met: the full pipeline's median req/s is at least that of HAProxy with jwt_verify and a stick table.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_come_from_medians() {
        let sample = |rps: f64| Sample {
            requests: 1,
            rps,
            p50_ms: 1.0,
            p99_ms: 2.0,
            p999_ms: 4.0,
            non2xx: 0,
            socket_errors: 0,
        };
        let cells: Vec<Cell> = [
            (Role::EdgePlain, 1000.0),
            (Role::EdgeFull, 800.0),
            (Role::EdgeFullNoCache, 400.0),
            (Role::HaproxyJwt, 500.0),
            (Role::HaproxyPlain, 1000.0),
        ]
        .into_iter()
        .map(|(role, rps)| Cell {
            upstream: Upstream::Demo,
            role,
            connections: 8,
            samples: vec![sample(rps), sample(0.0), sample(rps)],
        })
        .collect();
        let table = render(&cells, &Upstream::ALL, &[8]);
        assert!(
            table.contains("| demo-subgraph | 8 | 1.60 | 0.80 | 0.80 | 0.50 | 1.00 | yes |"),
            "{table}"
        );
        assert!(!table.contains("| nginx (fixed) |"), "{table}");
    }
}
