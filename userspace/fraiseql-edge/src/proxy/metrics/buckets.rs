//! Histogram buckets: latency (seconds), GraphQL depth and cost.

/// 100 µs … 10 s, seven buckets a decade (1, 1.5, 2, 3, 4, 5, 7): no
/// bucket is more than 1.5 times the one below, so `histogram_quantile`
/// places P50 … P99.9 within a third of a bucket's width anywhere in range.
pub fn latency_buckets() -> Vec<f64> {
    // Divided by an exact power of ten, so that `le` prints as written
    // (`0.15`, not `0.15000000000000002`).
    let mut out = Vec::new();
    for exp in (0..=4).rev() {
        for mantissa in [1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0] {
            out.push(mantissa / 10f64.powi(exp));
        }
    }
    out.push(10.0);
    out
}

/// Depth 1 … 50: one bucket per level up to 10, then coarser.
pub fn depth_buckets() -> Vec<f64> {
    [
        1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 12.0, 15.0, 20.0, 30.0, 50.0,
    ]
    .to_vec()
}

/// Cost 1 … 10⁶ in 1-2-5 steps.
pub fn cost_buckets() -> Vec<f64> {
    let mut out = Vec::new();
    for exp in 0..6 {
        for mantissa in [1.0, 2.0, 5.0] {
            out.push(mantissa * 10f64.powi(exp));
        }
    }
    out.push(1e6);
    out
}
