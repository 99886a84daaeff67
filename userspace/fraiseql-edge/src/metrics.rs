//! Process-wide metrics: what is running (`build_info`) and where the limits
//! are enforced (`degraded_mode`). The other families are registered by
//! their subsystems: [`crate::proxy::metrics`], [`crate::kernel::collector`],
//! [`crate::fallback::LimiterCollector`], [`crate::auth::metrics`].
//!
//! docs/metrics.md is the catalogue of every family; `tests.rs` here builds
//! the registries the daemon builds and checks the page against them.

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

/// How the daemon enforces the per-client limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnforcedBy {
    /// The XDP program.
    Kernel,
    /// The user-space limiter on the daemon's own listener (degraded mode).
    UserSpace,
    /// Nothing (no `[kernel]` limits configured).
    Nobody,
}

/// Registers `build_info` and `degraded_mode` into `registry`.
pub fn register(registry: &Registry, enforced_by: EnforcedBy) -> prometheus::Result<()> {
    let p = "fraiseql_edge_";
    let build = IntGaugeVec::new(
        Opts::new(
            format!("{p}build_info"),
            "Always 1; the labels say which build is running",
        ),
        &["version", "profile"],
    )?;
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    build
        .with_label_values(&[env!("CARGO_PKG_VERSION"), profile])
        .set(1);
    registry.register(Box::new(build))?;
    let degraded = IntGauge::new(
        format!("{p}degraded_mode"),
        "1 while the per-client limits are enforced in user space because the kernel layer is unavailable",
    )?;
    degraded.set(i64::from(enforced_by == EnforcedBy::UserSpace));
    registry.register(Box::new(degraded))?;
    Ok(())
}

#[cfg(test)]
mod tests;
