//! Tracing of the data path: W3C trace context in and out, `tracing` spans
//! per request and phase, and (with `[tracing] otlp_endpoint`) their export
//! over OTLP.
//!
//! * Every request has a trace id: the client's, from a valid `traceparent`
//!   (when `trust_client_traceparent`), or a new random one. It is the
//!   `trace_id` field of the `request` span, so every log line written for
//!   the request carries it (in `--log-json`, under `span`/`spans`).
//! * Every try sent upstream carries `traceparent` with that trace id, the
//!   edge's own span id and the sampled flag, replacing the client's;
//!   `tracestate` is passed through only with a valid client parent.
//! * With export on, the spans (`request`, its phases, `upstream_try`) go
//!   to the collector with the same ids the subgraph receives: the edge's
//!   span id in `traceparent` is the exported `upstream_try` span's.
//!   Sampling is parent-based: a client parent's flag decides; a new trace
//!   is sampled with probability `sample_ratio`. Without export the edge
//!   records nothing, and the same rule sets the flag it sends on.
//!
//! Phase spans are at `debug` level: with export off and the default log
//! filter, no layer wants them and they cost a filter check each.

pub mod otlp;
pub mod traceparent;

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
use serde::Deserialize;

pub use self::traceparent::TraceParent;
use self::traceparent::{TRACEPARENT, TRACESTATE};

/// `[tracing]`: trace context and span export.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Continue the trace of a client's valid `traceparent`. Off, every
    /// request starts a new trace and the client's `tracestate` is dropped
    /// (an edge facing untrusted clients may not want them to pick trace
    /// ids or sampling).
    pub trust_client_traceparent: bool,
    /// OTLP/gRPC collector to export spans to (`http://host:4317`); unset:
    /// no export.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of new traces sampled (0.0–1.0); a client parent's sampled
    /// flag decides for its trace.
    pub sample_ratio: f64,
    /// Time allowed for one export call to the collector.
    pub export_timeout_ms: u64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            // W3C trace context is meant to be continued; operators of a
            // public edge can turn it off.
            trust_client_traceparent: true,
            otlp_endpoint: None,
            service_name: "fraiseql-edge".to_string(),
            // Everything, as the OpenTelemetry SDKs do by default; lower it
            // under load.
            sample_ratio: 1.0,
            // The OpenTelemetry exporters' default.
            export_timeout_ms: 10_000,
        }
    }
}

impl TracingConfig {
    /// Checks what serde cannot; `Err((key, reason))`.
    pub fn validate(&self, at: &str) -> Result<(), (String, String)> {
        let key = |k: &str| format!("{at}.{k}");
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err((key("sample_ratio"), "must be between 0.0 and 1.0".into()));
        }
        if self.service_name.trim().is_empty() {
            return Err((key("service_name"), "must not be empty".into()));
        }
        if !(1..=600_000).contains(&self.export_timeout_ms) {
            return Err((
                key("export_timeout_ms"),
                "must be between 1 and 600000".into(),
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            let uri: http::Uri = endpoint
                .parse()
                .map_err(|e| (key("otlp_endpoint"), format!("not a URI: {e}")))?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err((
                    key("otlp_endpoint"),
                    "must be http://host:port (OTLP over gRPC, without TLS)".into(),
                ));
            }
        }
        Ok(())
    }
}

/// The trace context of one request.
#[derive(Clone, Debug)]
pub struct RequestTrace {
    /// The trace (the client's, or new).
    pub trace_id: TraceId,
    /// The edge's span for the request.
    pub span_id: SpanId,
    /// Whether the trace is sampled.
    pub sampled: bool,
    /// The client's `tracestate`, passed on with a valid parent.
    pub tracestate: Vec<HeaderValue>,
}

/// How the data path starts and propagates traces (from [`TracingConfig`]).
#[derive(Clone, Debug)]
pub struct Tracer {
    trust_client: bool,
    sample_ratio: f64,
}

impl Tracer {
    /// The data path's tracer for `cfg`.
    pub fn new(cfg: &TracingConfig) -> Self {
        Self {
            trust_client: cfg.trust_client_traceparent,
            sample_ratio: cfg.sample_ratio,
        }
    }

    /// The parent a request's headers give, if it is trusted and valid.
    pub fn parent(&self, headers: &HeaderMap) -> Option<TraceParent> {
        self.trust_client
            .then(|| TraceParent::from_headers(headers))
            .flatten()
    }

    /// Creates the request's span with `make` (under the client's parent,
    /// so an exported span continues its trace) and returns it with the
    /// request's trace context, recorded as the span's `trace_id`.
    pub fn start(
        &self,
        headers: &HeaderMap,
        make: impl FnOnce() -> tracing::Span,
    ) -> (tracing::Span, RequestTrace) {
        let parent = self.parent(headers);
        // Decided here, before the span exists: an unsampled request's
        // spans never reach the exporting layer (building them for nothing
        // is most of what export costs), a sampled one's always do.
        let sampled = parent.map_or_else(|| self.sample_new(), |p| p.sampled);
        let span = {
            let _parent = parent.filter(|_| sampled).map(otlp::enter_remote_parent);
            otlp::admit(sampled, make)
        };
        let trace = match otlp::span_context(&span) {
            // Exported: the SDK chose the ids (the parent's trace id, or a
            // new one) and the sampling decision.
            Some(sc) => RequestTrace {
                trace_id: sc.trace_id(),
                span_id: sc.span_id(),
                sampled: sc.is_sampled(),
                tracestate: Vec::new(),
            },
            None => {
                let ids = RandomIdGenerator::default();
                RequestTrace {
                    trace_id: parent.map_or_else(|| new_trace_id(&ids), |p| p.trace_id),
                    span_id: new_span_id(&ids),
                    sampled,
                    tracestate: Vec::new(),
                }
            }
        };
        let trace = RequestTrace {
            tracestate: match parent {
                Some(_) => headers.get_all(TRACESTATE).iter().cloned().collect(),
                None => Vec::new(),
            },
            ..trace
        };
        span.record("trace_id", tracing::field::display(trace.trace_id));
        (span, trace)
    }

    fn sample_new(&self) -> bool {
        self.sample_ratio >= 1.0 || (self.sample_ratio > 0.0 && rand_unit() < self.sample_ratio)
    }
}

impl RequestTrace {
    /// Replaces the client's trace headers with the request's: the
    /// `tracestate` passed on (if any); `traceparent` is set per try
    /// ([`Self::traceparent`]).
    pub fn rewrite(&self, headers: &mut HeaderMap) {
        headers.remove(TRACEPARENT);
        headers.remove(TRACESTATE);
        for v in &self.tracestate {
            headers.append(TRACESTATE, v.clone());
        }
    }

    /// The `traceparent` for a request sent from inside the current span:
    /// the exported span's id when the current span is exported in this
    /// trace, else the request's span id.
    pub fn traceparent(&self) -> HeaderValue {
        let (span_id, sampled) = match otlp::current_span_context() {
            Some(sc) if sc.trace_id() == self.trace_id => (sc.span_id(), sc.is_sampled()),
            _ => (self.span_id, self.sampled),
        };
        traceparent::format(self.trace_id, span_id, sampled)
    }
}

/// Sets the request's trace headers on a request about to be sent.
pub fn set_traceparent(headers: &mut HeaderMap, trace: &RequestTrace) {
    headers.insert(TRACEPARENT, trace.traceparent());
}

fn new_trace_id(ids: &RandomIdGenerator) -> TraceId {
    loop {
        let id = ids.new_trace_id();
        if id != TraceId::INVALID {
            return id;
        }
    }
}

fn new_span_id(ids: &RandomIdGenerator) -> SpanId {
    loop {
        let id = ids.new_span_id();
        if id != SpanId::INVALID {
            return id;
        }
    }
}

/// A uniform number in [0, 1), from the id generator's randomness.
fn rand_unit() -> f64 {
    let bits = u64::from_be_bytes(RandomIdGenerator::default().new_span_id().to_bytes());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests;
