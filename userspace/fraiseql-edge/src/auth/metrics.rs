//! The JWKS URL sources' health as Prometheus metrics, read at scrape time:
//! how long ago each source last answered with a usable key set, and how
//! many fetches failed. Labelled by the configured URL (bounded by the
//! config). JWKS files and HMAC secrets are read once at start and have no
//! refresh to report.

use std::sync::Arc;

use prometheus::{
    GaugeVec, IntCounterVec, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use super::jwks::JwksUrl;

/// The families, set per source.
pub struct JwksMetrics {
    age: GaugeVec,
    failures: IntCounterVec,
}

impl JwksMetrics {
    /// Creates the families (registered nowhere: [`JwksCollector`] returns them).
    pub fn new() -> prometheus::Result<Self> {
        let p = "fraiseql_edge_auth_jwks_";
        Ok(Self {
            age: GaugeVec::new(
                Opts::new(
                    format!("{p}refresh_age_seconds"),
                    "Seconds since the JWKS URL last answered with a usable key set (the start's fetch included)",
                ),
                &["source"],
            )?,
            failures: IntCounterVec::new(
                Opts::new(
                    format!("{p}refresh_failures_total"),
                    "JWKS fetches that failed (the last good key set stayed in use)",
                ),
                &["source"],
            )?,
        })
    }

    /// Sets the values of `source`.
    pub fn set(&self, source: &str, age_secs: f64, failures: u64) {
        self.age.with_label_values(&[source]).set(age_secs);
        let c = self.failures.with_label_values(&[source]);
        c.inc_by(failures.saturating_sub(c.get()));
    }

    /// The families as they stand.
    pub fn families(&self) -> Vec<MetricFamily> {
        [self.age.collect(), self.failures.collect()].concat()
    }

    /// The families' descriptors.
    pub fn descs(&self) -> Vec<&Desc> {
        [self.age.desc(), self.failures.desc()].concat()
    }
}

/// The collector over the running sources.
pub struct JwksCollector {
    sources: Vec<Arc<JwksUrl>>,
    metrics: JwksMetrics,
}

impl JwksCollector {
    /// A collector over `sources`.
    pub fn new(sources: Vec<Arc<JwksUrl>>) -> prometheus::Result<Self> {
        Ok(Self {
            sources,
            metrics: JwksMetrics::new()?,
        })
    }
}

impl Collector for JwksCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.metrics.descs()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for s in &self.sources {
            self.metrics
                .set(s.url(), s.refresh_age().as_secs_f64(), s.refresh_failures());
        }
        self.metrics.families()
    }
}
