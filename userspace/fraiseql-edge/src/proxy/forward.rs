//! Phase 6, route → forward: breaker admission, endpoint choice, pooled
//! connection, per-try timeout, failover inside the retry budget and the
//! overall deadline.
//!
//! Failures that count against an endpoint's health and the subgraph's
//! breaker: connect errors, broken connections, timeouts, and 502/503/504
//! answers. A try is repeated on another healthy endpoint only when it is
//! safe: always when nothing was sent; after sending, only for queries.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};

use super::{
    error::{ProxyBody, ProxyError},
    headers,
    metrics::ProxyMetrics,
    operation::OperationKind,
    pool::{PoolError, PooledBody, SendError},
    subgraph::Subgraph,
};

/// What is sent upstream, rebuilt for every try.
pub struct Outgoing {
    /// Method (GET or POST).
    pub method: Method,
    /// Query string of a GET request (appended to the endpoint's path).
    pub query: Option<String>,
    /// End-to-end request headers (hop-by-hop and Host already removed).
    pub headers: HeaderMap,
    /// The buffered body.
    pub body: Bytes,
    /// The operation type.
    pub kind: OperationKind,
}

impl Outgoing {
    fn request(&self, path: &str, authority: &str) -> Result<Request<Full<Bytes>>, ProxyError> {
        let uri = match &self.query {
            Some(q) if !path.contains('?') => format!("{path}?{q}"),
            Some(q) => format!("{path}&{q}"),
            None => path.to_string(),
        };
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(uri)
            .body(Full::new(self.body.clone()))
            .map_err(|e| ProxyError::BadRequest(format!("cannot forward this request: {e}")))?;
        *req.headers_mut() = self.headers.clone();
        if let Ok(host) = HeaderValue::from_str(authority) {
            req.headers_mut().insert(header::HOST, host);
        }
        Ok(req)
    }
}

enum TryFailure {
    /// Nothing reached the upstream.
    NotSent(ProxyError, bool),
    /// The request may have reached it.
    MaybeSent(ProxyError),
}

/// Forwards one request to `sg`.
pub async fn forward(
    sg: &Arc<Subgraph>,
    out: &Outgoing,
    m: &ProxyMetrics,
    started: Instant,
) -> Result<Response<ProxyBody>, ProxyError> {
    let name = sg.name().to_string();
    let (permit, transition) = match sg.breaker.admit(Instant::now()) {
        Ok(p) => p,
        Err(_) => {
            m.breaker_rejections.with_label_values(&[&name]).inc();
            return Err(ProxyError::CircuitOpen(name));
        }
    };
    if let Some(t) = transition {
        sg.note_transition(t.from, t.to, m);
    }
    sg.deposit();
    let deadline = started + Duration::from_millis(sg.cfg.timeouts.overall_ms);
    let per_try = Duration::from_millis(sg.cfg.timeouts.per_try_ms);
    let mut tried: Vec<usize> = Vec::new();
    let mut last = ProxyError::NoHealthyUpstream(name.clone());
    let mut breaker_failure = true;

    for attempt in 0..=sg.cfg.retry.retries {
        let Some(i) = sg.pick(&tried) else { break };
        if attempt > 0 {
            if !sg.withdraw() {
                m.retry_budget_exhausted.with_label_values(&[&name]).inc();
                break;
            }
            let reason = match &last {
                ProxyError::UpstreamTimeout(_) => "timeout",
                ProxyError::PoolExhausted(_) => "saturated",
                _ => "unavailable",
            };
            m.failovers.with_label_values(&[&name, reason]).inc();
        }
        tried.push(i);
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            last = ProxyError::UpstreamTimeout(name.clone());
            break;
        }
        let ep = &sg.endpoints[i];
        let req = out.request(&ep.path, &ep.addr)?;
        let t0 = Instant::now();
        let result = tokio::time::timeout(per_try.min(remaining), try_once(sg, i, req, m)).await;
        m.upstream_duration
            .with_label_values(&[&name, ep.addr.as_str()])
            .observe(t0.elapsed().as_secs_f64());
        let failure = match result {
            Ok(Ok(resp)) => {
                let gateway_error = matches!(
                    resp.status(),
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                );
                sg.record_health(i, !gateway_error, m);
                record(sg, permit, !gateway_error, m);
                return Ok(resp);
            }
            Ok(Err(f)) => f,
            Err(_) => {
                tracing::debug!(subgraph = %name, endpoint = %ep.addr, "try timed out");
                sg.record_health(i, false, m);
                TryFailure::MaybeSent(ProxyError::UpstreamTimeout(name.clone()))
            }
        };
        match failure {
            TryFailure::NotSent(e, endpoint_at_fault) => {
                if endpoint_at_fault {
                    sg.record_health(i, false, m);
                } else {
                    breaker_failure = false;
                }
                last = e;
            }
            TryFailure::MaybeSent(e) => {
                last = e;
                breaker_failure = true;
                if out.kind != OperationKind::Query {
                    break; // a mutation may have run: never twice
                }
            }
        }
    }
    if breaker_failure {
        record(sg, permit, false, m);
    } // else: local saturation, not the subgraph's fault — the permit drops unrecorded
    Err(last)
}

fn record(sg: &Subgraph, permit: crate::breaker::Permit, success: bool, m: &ProxyMetrics) {
    if let Some(t) = sg.breaker.record(permit, success, Instant::now()) {
        sg.note_transition(t.from, t.to, m);
    }
}

async fn try_once(
    sg: &Subgraph,
    i: usize,
    req: Request<Full<Bytes>>,
    m: &ProxyMetrics,
) -> Result<Response<ProxyBody>, TryFailure> {
    let ep = &sg.endpoints[i];
    let name = sg.name();
    let waited = Instant::now();
    let mut conn = match ep.pool.get().await {
        Ok(c) => c,
        Err(PoolError::Timeout) => {
            return Err(TryFailure::NotSent(
                ProxyError::PoolExhausted(name.into()),
                false,
            ));
        }
        Err(e) => {
            tracing::debug!(subgraph = name, endpoint = %ep.addr, error = %e, "no connection");
            return Err(TryFailure::NotSent(unavailable(name, &e.to_string()), true));
        }
    };
    m.pool_wait.observe(waited.elapsed().as_secs_f64());
    // Until the response head is in, an interrupted try leaves the
    // connection in an unknown state: never reuse it then.
    conn.discard();
    match conn.send(req).await {
        Ok(resp) => {
            conn.keep();
            let (mut parts, body) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            let body = PooledBody::new(body, conn).boxed();
            Ok(Response::from_parts(parts, body))
        }
        Err(SendError::NotSent(e)) => Err(TryFailure::NotSent(unavailable(name, &e), true)),
        Err(SendError::Sent(e)) => {
            tracing::debug!(subgraph = name, endpoint = %ep.addr, error = %e, "request failed");
            Err(TryFailure::MaybeSent(unavailable(name, &e)))
        }
    }
}

fn unavailable(subgraph: &str, detail: &str) -> ProxyError {
    ProxyError::UpstreamUnavailable {
        subgraph: subgraph.to_string(),
        detail: detail.to_string(),
    }
}
