//! Process-wide metrics: what is running (`build_info`), where the limits
//! are enforced (`degraded_mode`) and configuration reloads
//! ([`ReloadMetrics`]). The other families are registered by
//! their subsystems: [`crate::proxy::metrics`], [`crate::kernel::collector`],
//! [`crate::fallback::LimiterCollector`], [`crate::auth::metrics`].
//!
//! docs/metrics.md is the catalogue of every family; `tests.rs` here builds
//! the registries the daemon builds and checks the page against them.

use prometheus::{Gauge, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

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

/// Configuration reloads (SIGHUP and the control API), as Prometheus
/// reports its own.
#[derive(Clone)]
pub struct ReloadMetrics {
    reloads: IntCounterVec,
    last_successful: IntGauge,
    last_success_time: Gauge,
}

impl ReloadMetrics {
    /// Registers the reload metrics; the configuration loaded at start
    /// counts as the first successful load.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let p = "fraiseql_edge_";
        let m = Self {
            reloads: IntCounterVec::new(
                Opts::new(
                    format!("{p}config_reloads_total"),
                    "Configuration reloads by result: ok, rejected (the running configuration stayed)",
                ),
                &["result"],
            )?,
            last_successful: IntGauge::new(
                format!("{p}config_last_reload_successful"),
                "1 if the last reload succeeded (or none was tried), 0 if it was rejected",
            )?,
            last_success_time: Gauge::new(
                format!("{p}config_last_reload_success_timestamp_seconds"),
                "Unix time the running configuration was loaded",
            )?,
        };
        for result in ["ok", "rejected"] {
            m.reloads.with_label_values(&[result]);
        }
        m.last_successful.set(1);
        m.last_success_time.set(unix_now());
        registry.register(Box::new(m.reloads.clone()))?;
        registry.register(Box::new(m.last_successful.clone()))?;
        registry.register(Box::new(m.last_success_time.clone()))?;
        Ok(m)
    }

    /// Records one reload.
    pub fn record(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "rejected" }])
            .inc();
        self.last_successful.set(i64::from(ok));
        if ok {
            self.last_success_time.set(unix_now());
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests;
