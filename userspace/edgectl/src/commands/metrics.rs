//! `edgectl metrics`: GetMetrics, printed in the Prometheus text format
//! (what the daemon's /metrics serves), or as JSON.

use std::collections::BTreeMap;

use fraiseql_edge_api::v1::{GetMetricsRequest, MetricFamily, MetricType};
use serde::Serialize;

use crate::{
    connect::Session,
    exit::Error,
    render::{Output, View},
};

/// `metrics --json`.
#[derive(Debug, Serialize)]
pub struct MetricsView {
    pub families: Vec<FamilyView>,
}

#[derive(Debug, Serialize)]
pub struct FamilyView {
    pub name: String,
    pub help: String,
    /// `counter`, `gauge`, `histogram`, `summary`, `untyped`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub samples: Vec<SampleView>,
}

#[derive(Debug, Serialize)]
pub struct SampleView {
    pub labels: BTreeMap<String, String>,
    /// Counters, gauges and untyped metrics.
    pub value: f64,
    /// Histograms and summaries.
    pub count: u64,
    pub sum: f64,
    pub buckets: Vec<BucketView>,
}

#[derive(Debug, Serialize)]
pub struct BucketView {
    /// The upper bound as Prometheus writes it (`0.25`, `+Inf`): JSON
    /// numbers cannot hold infinity.
    pub le: String,
    pub cumulative_count: u64,
}

pub async fn run(session: &Session, out: Output, prefix: String) -> Result<(), Error> {
    let snapshot = session
        .unary(session.client().get_metrics(GetMetricsRequest { prefix }))
        .await?;
    out.print(&MetricsView {
        families: snapshot
            .families
            .into_iter()
            .map(FamilyView::from)
            .collect(),
    })
}

impl From<MetricFamily> for FamilyView {
    fn from(f: MetricFamily) -> Self {
        Self {
            kind: kind(f.r#type()),
            name: f.name,
            help: f.help,
            samples: f
                .samples
                .into_iter()
                .map(|s| SampleView {
                    labels: s.labels.into_iter().collect(),
                    value: s.value,
                    count: s.count,
                    sum: s.sum,
                    buckets: s
                        .buckets
                        .into_iter()
                        .map(|b| BucketView {
                            le: number(b.upper_bound),
                            cumulative_count: b.cumulative_count,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

fn kind(t: MetricType) -> &'static str {
    match t {
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Histogram => "histogram",
        MetricType::Summary => "summary",
        MetricType::Untyped | MetricType::Unspecified => "untyped",
    }
}

impl View for MetricsView {
    fn human(&self) -> String {
        let mut text = String::new();
        for f in &self.families {
            text += &format!("# HELP {} {}\n", f.name, escape_help(&f.help));
            text += &format!("# TYPE {} {}\n", f.name, f.kind);
            for s in &f.samples {
                if matches!(f.kind, "histogram" | "summary") {
                    for b in &s.buckets {
                        let labels = labels(&s.labels, Some(&b.le));
                        text += &format!("{}_bucket{labels} {}\n", f.name, b.cumulative_count);
                    }
                    let labels = labels(&s.labels, None);
                    text += &format!("{}_sum{labels} {}\n", f.name, number(s.sum));
                    text += &format!("{}_count{labels} {}\n", f.name, s.count);
                } else {
                    text += &format!(
                        "{}{} {}\n",
                        f.name,
                        labels(&s.labels, None),
                        number(s.value)
                    );
                }
            }
        }
        text
    }
}

/// `{a="1",le="0.5"}`, or nothing without labels.
fn labels(labels: &BTreeMap<String, String>, le: Option<&str>) -> String {
    let mut pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// A sample value as Prometheus writes it: `3`, `0.25`, `+Inf`, `NaN`.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests;
