//! The saga coordinator's metrics (docs/metrics.md, "Sagas"). Every label
//! has a bounded set of values: outcomes and results are fixed words,
//! `subgraph` is a configured subgraph (a saga naming another is refused at
//! submission).

use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use super::{model::SagaState, store::Summary};

/// `saga_finished_total{outcome}` values.
pub const OUTCOMES: [&str; 4] = ["completed", "compensated", "failed", "cancelled"];

/// Buckets of a whole saga's duration, in seconds: from a few fast
/// mutations to a rollback that waited out its retries.
fn saga_buckets() -> Vec<f64> {
    vec![
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    ]
}

/// The coordinator's metric handles.
#[derive(Clone)]
pub struct SagaMetrics {
    pub started: IntCounter,
    pub finished: IntCounterVec,
    pub duration: HistogramVec,
    pub steps: IntCounterVec,
    pub step_duration: HistogramVec,
    pub compensations: IntCounterVec,
    pub recovery: IntCounterVec,
    pub in_flight: IntGaugeVec,
    pub parked: IntGauge,
    pub oldest_age: Gauge,
}

impl SagaMetrics {
    /// Registers the families into `registry`, with `subgraphs`' label
    /// values at 0.
    pub fn new(registry: &Registry, subgraphs: &[String]) -> prometheus::Result<Self> {
        let p = "fraiseql_edge_saga_";
        let m = Self {
            started: IntCounter::new(format!("{p}started_total"), "Sagas accepted and written")?,
            finished: IntCounterVec::new(
                Opts::new(
                    format!("{p}finished_total"),
                    "Sagas that reached an end: completed, compensated, failed (parked partially compensated), cancelled",
                ),
                &["outcome"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    format!("{p}duration_seconds"),
                    "Time from a saga's submission to its end, by outcome",
                )
                .buckets(saga_buckets()),
                &["outcome"],
            )?,
            steps: IntCounterVec::new(
                Opts::new(
                    format!("{p}steps_total"),
                    "Tries of saga steps by subgraph and status: completed, failed (the step failed for good), retried (no answer; sent again with the same key)",
                ),
                &["subgraph", "status"],
            )?,
            step_duration: HistogramVec::new(
                HistogramOpts::new(
                    format!("{p}step_duration_seconds"),
                    "Time one try of a saga step or compensation took, by subgraph",
                )
                .buckets(crate::proxy::metrics::latency_buckets()),
                &["subgraph"],
            )?,
            compensations: IntCounterVec::new(
                Opts::new(
                    format!("{p}compensations_total"),
                    "Tries of compensating mutations by subgraph and result: success, failure",
                ),
                &["subgraph", "result"],
            )?,
            recovery: IntCounterVec::new(
                Opts::new(
                    format!("{p}recovery_total"),
                    "Sagas recovery picked up (at start and periodically) by result: success (driven to an end or parked), failure (the log could not be read or written)",
                ),
                &["result"],
            )?,
            in_flight: IntGaugeVec::new(
                Opts::new(
                    format!("{p}in_flight"),
                    "Sagas neither finished nor parked, by state: Pending, Executing, Compensating",
                ),
                &["state"],
            )?,
            parked: IntGauge::new(
                format!("{p}parked"),
                "Sagas parked for an operator (a rollback gave up: Failed, partially compensated)",
            )?,
            oldest_age: Gauge::new(
                format!("{p}oldest_in_flight_age_seconds"),
                "Age of the oldest saga in flight (0 when none is)",
            )?,
        };
        for outcome in OUTCOMES {
            m.finished.with_label_values(&[outcome]);
            m.duration.with_label_values(&[outcome]);
        }
        for result in ["success", "failure"] {
            m.recovery.with_label_values(&[result]);
        }
        for state in IN_FLIGHT {
            m.in_flight.with_label_values(&[state.as_str()]);
        }
        for sg in subgraphs {
            m.step_duration.with_label_values(&[sg]);
            for status in ["completed", "failed", "retried"] {
                m.steps.with_label_values(&[sg, status]);
            }
            for result in ["success", "failure"] {
                m.compensations.with_label_values(&[sg, result]);
            }
        }
        registry.register(Box::new(m.started.clone()))?;
        registry.register(Box::new(m.finished.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.steps.clone()))?;
        registry.register(Box::new(m.step_duration.clone()))?;
        registry.register(Box::new(m.compensations.clone()))?;
        registry.register(Box::new(m.recovery.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.parked.clone()))?;
        registry.register(Box::new(m.oldest_age.clone()))?;
        Ok(m)
    }

    /// Sets the gauges from the log's summary, at `now_ms`.
    pub fn show(&self, summary: &Summary, now_ms: u64) {
        for state in IN_FLIGHT {
            let n = summary
                .in_flight
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.in_flight
                .with_label_values(&[state.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.parked
            .set(i64::try_from(summary.parked).unwrap_or(i64::MAX));
        let age_ms = summary
            .oldest_in_flight_ms
            .map_or(0, |t| now_ms.saturating_sub(t));
        self.oldest_age.set(age_ms as f64 / 1000.0);
    }

    /// Counts a saga that reached its end after `elapsed_secs`.
    pub fn finish(&self, state: SagaState, elapsed_secs: f64) {
        let outcome = match state {
            SagaState::Completed => "completed",
            SagaState::Compensated => "compensated",
            SagaState::Failed => "failed",
            SagaState::Cancelled => "cancelled",
            _ => return,
        };
        self.finished.with_label_values(&[outcome]).inc();
        self.duration
            .with_label_values(&[outcome])
            .observe(elapsed_secs.max(0.0));
    }
}

/// The states a saga in flight can be in.
const IN_FLIGHT: [SagaState; 3] = [
    SagaState::Pending,
    SagaState::Executing,
    SagaState::Compensating,
];
