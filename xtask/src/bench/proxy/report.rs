//! The markdown tables: medians per upstream, target and concurrency, then
//! the ratios per upstream and concurrency, with the goal checked.

use std::fmt::Write;

use super::targets::Kind;
use super::upstream::Upstream;
use super::wrk::Sample;

/// The samples of one target in front of one upstream at one concurrency,
/// in run order.
pub struct Cell {
    pub upstream: Upstream,
    pub kind: Kind,
    pub connections: u32,
    pub samples: Vec<Sample>,
}

/// Medians of a cell, each metric taken on its own.
#[derive(Clone, Copy)]
pub struct Median {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub rps_min: f64,
    pub rps_max: f64,
}

impl Cell {
    pub fn median(&self) -> Median {
        let of = |f: fn(&Sample) -> f64| median(self.samples.iter().map(f).collect());
        let rps: Vec<f64> = self.samples.iter().map(|s| s.rps).collect();
        Median {
            rps: of(|s| s.rps),
            p50_ms: of(|s| s.p50_ms),
            p99_ms: of(|s| s.p99_ms),
            p999_ms: of(|s| s.p999_ms),
            rps_min: rps.iter().copied().fold(f64::INFINITY, f64::min),
            rps_max: rps.iter().copied().fold(0.0, f64::max),
        }
    }
}

/// The median (mean of the middle two for an even count); NaN when empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Both tables, for `upstreams` and `connections` in the order given.
pub fn render(cells: &[Cell], upstreams: &[Upstream], connections: &[u32]) -> String {
    let find = |upstream: Upstream, kind: Kind, c: u32| {
        cells
            .iter()
            .find(|cell| cell.upstream == upstream && cell.kind == kind && cell.connections == c)
            .map(Cell::median)
    };
    let runs = cells.first().map_or(0, |c| c.samples.len());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| upstream | target | connections | req/s (median of {runs}) | req/s range | p50 ms | p99 ms | p99.9 ms |"
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|\n");
    for &u in upstreams {
        for &c in connections {
            for kind in Kind::ALL {
                let Some(m) = find(u, kind, c) else { continue };
                let _ = writeln!(
                    out,
                    "| {} | {} | {c} | {:.0} | {:.0}–{:.0} | {:.2} | {:.2} | {:.2} |",
                    u.label(),
                    kind.label(),
                    m.rps,
                    m.rps_min,
                    m.rps_max,
                    m.p50_ms,
                    m.p99_ms,
                    m.p999_ms
                );
            }
        }
    }
    out.push('\n');
    out.push_str(
        "| upstream | connections | edge/direct req/s | edge/HAProxy req/s | edge/direct p99 | edge/HAProxy p99 | goal met |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---|\n");
    for &u in upstreams {
        for &c in connections {
            let (Some(d), Some(e), Some(h)) = (
                find(u, Kind::Direct, c),
                find(u, Kind::Edge, c),
                find(u, Kind::Haproxy, c),
            ) else {
                continue;
            };
            let rps = e.rps / h.rps;
            let p99 = e.p99_ms / h.p99_ms;
            let _ = writeln!(
                out,
                "| {} | {c} | {:.2} | {rps:.2} | {:.2} | {p99:.2} | {} |",
                u.label(),
                e.rps / d.rps,
                e.p99_ms / d.p99_ms,
                if goal_met(rps, p99) { "yes" } else { "no" }
            );
        }
    }
    out.push_str(
        "\ngoal met: the edge's median req/s is at least HAProxy's and its median p99 no higher.\n",
    );
    out
}

/// The goal for the edge against HAProxy, on the medians: at least 1.0× the
/// req/s, and a p99 no higher.
fn goal_met(rps_ratio: f64, p99_ratio: f64) -> bool {
    rps_ratio >= 1.0 && p99_ratio <= 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rps: f64, p99_ms: f64) -> Sample {
        Sample {
            requests: 1,
            rps,
            p50_ms: p99_ms / 4.0,
            p99_ms,
            p999_ms: p99_ms * 2.0,
            non2xx: 0,
            socket_errors: 0,
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn renders_ratios_from_medians() {
        let cell = |kind, rps, p99| Cell {
            upstream: Upstream::Fixed,
            kind,
            connections: 8,
            samples: vec![sample(rps, p99), sample(rps, p99), sample(0.0, 100.0)],
        };
        let cells = [
            cell(Kind::Direct, 1000.0, 1.0),
            cell(Kind::Edge, 500.0, 2.0),
            cell(Kind::Haproxy, 400.0, 4.0),
        ];
        let table = render(&cells, &Upstream::ALL, &[8]);
        assert!(
            table.contains(
                "| nginx (fixed) | fraiseql-edge | 8 | 500 | 0–500 | 0.50 | 2.00 | 4.00 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| nginx (fixed) | 8 | 0.50 | 1.25 | 2.00 | 0.50 | yes |"),
            "{table}"
        );
        // No cells for demo-subgraph: no rows either.
        assert!(!table.contains("| demo-subgraph |"), "{table}");
    }

    #[test]
    fn the_goal_needs_both_throughput_and_tail() {
        assert!(goal_met(1.0, 1.0));
        assert!(!goal_met(0.99, 0.5));
        assert!(!goal_met(1.5, 1.01));
    }
}
