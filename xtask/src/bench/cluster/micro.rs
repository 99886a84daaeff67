//! Part 1: one limit check, local against global, with criterion
//! (`userspace/fraiseql-edge/benches/cluster.rs`), and its medians read
//! back from criterion's `estimates.json` into a table with ratios.

use std::path::Path;

use anyhow::{Context, Result};

use crate::{cmd, paths};

/// Checks in flight of the global rows (the bench's `IN_FLIGHT`).
pub const IN_FLIGHT: [u32; 3] = [1, 16, 64];

/// Criterion's arguments: the same short schedule as the security section.
const CRITERION_ARGS: [&str; 4] = ["--warm-up-time", "1", "--measurement-time", "3"];

/// Runs the criterion bench (building it as `cargo bench` does) and
/// returns the table of its medians.
pub fn run() -> Result<String> {
    let dir = paths::target_dir().join("criterion").join("cluster");
    // A row missing from this run must not show a previous run's figure.
    let _ = std::fs::remove_dir_all(&dir);
    let mut cargo = paths::cargo(["bench", "-p", "fraiseql-edge", "--bench", "cluster", "--"])?;
    cargo.args(CRITERION_ARGS);
    println!("bench: {}", cmd::describe(&cargo));
    cmd::run(&mut cargo)?;
    let local = median_ns(&dir.join("local"))?
        .context("criterion wrote no estimate for cluster/local: did the bench run?")?;
    let mut rows = vec![(
        "local limiter (`RateLimiter::check`)".to_owned(),
        1,
        Some(local),
    )];
    for k in IN_FLIGHT {
        rows.push((
            "global limiter (`GlobalLimiter::check`, Redis on loopback)".to_owned(),
            k,
            median_ns(&dir.join("global").join(k.to_string()))?,
        ));
    }
    Ok(render(&rows, local))
}

/// The median of a criterion benchmark in ns per iteration, `None` if it
/// did not run (no redis-server).
fn median_ns(bench: &Path) -> Result<Option<f64>> {
    let path = bench.join("new").join("estimates.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    v["median"]["point_estimate"]
        .as_f64()
        .map(Some)
        .with_context(|| format!("no median in {}", path.display()))
}

/// One row per check: time per check, checks/s, ratio to the local check.
fn render(rows: &[(String, u32, Option<f64>)], local_ns: f64) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "| check | in flight | time per check | checks/s | time / local check |\n|---|---:|---:|---:|---:|\n",
    );
    for (what, k, ns) in rows {
        let _ = match ns {
            Some(ns) => writeln!(
                out,
                "| {what} | {k} | {} | {:.0} | {:.0} |",
                duration(*ns),
                1e9 / ns,
                ns / local_ns
            ),
            None => writeln!(out, "| {what} | {k} | skipped (no redis-server) | | |"),
        };
    }
    out
}

/// ns below 1 µs, µs above.
fn duration(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_gives_checks_per_second_and_the_ratio() {
        let rows = [
            ("local".to_owned(), 1, Some(100.0)),
            ("global".to_owned(), 1, Some(50_000.0)),
            ("global".to_owned(), 16, Some(7_080.0)),
            ("global".to_owned(), 64, None),
        ];
        let t = render(&rows, 100.0);
        assert!(t.contains("| local | 1 | 100 ns | 10000000 | 1 |"), "{t}");
        assert!(t.contains("| global | 1 | 50.0 µs | 20000 | 500 |"), "{t}");
        assert!(t.contains("| global | 16 | 7.1 µs | 141243 | 71 |"), "{t}");
        assert!(t.contains("| global | 64 | skipped"), "{t}");
    }
}
