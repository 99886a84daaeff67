//! Phase 6, route → forward: breaker admission, endpoint choice, pooled
//! connection, per-try timeout, failover inside the retry budget and the
//! overall deadline.
//!
//! Failures that count against an endpoint's health and the subgraph's
//! breaker: connect errors, broken connections, per-try timeouts, and
//! 502/503/504 answers. Waiting for a pooled connection is not a failure of
//! anyone: it is the edge's own concurrency limit (503
//! `UPSTREAM_SATURATED`), so the per-try clock starts once a connection is
//! in hand. A try is repeated on another endpoint only when it is safe:
//! always when nothing was sent; after sending, only for queries; never
//! past the deadline (no retry token is spent then).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tracing::Instrument as _;

use super::{
    endpoint::Endpoint,
    error::ProxyError,
    headers,
    metrics::ProxyMetrics,
    operation::OperationKind,
    pool::{PoolError, PooledBody, SendError},
    subgraph::{Pick, Subgraph},
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
    /// The request's trace: every try carries its `traceparent`.
    pub trace: Option<crate::telemetry::RequestTrace>,
}

impl Outgoing {
    /// The request for one try at `ep`. The client's headers move into
    /// the last request that may need them: `keep` leaves a copy for a
    /// possible retry.
    fn request(&mut self, ep: &Endpoint, keep: bool) -> Result<Request<Full<Bytes>>, ProxyError> {
        let uri = match &self.query {
            None => ep.target.clone(),
            Some(q) => {
                let sep = if ep.path.contains('?') { '&' } else { '?' };
                format!("{}{sep}{q}", ep.path).parse().map_err(|e| {
                    ProxyError::BadRequest(format!("cannot forward this request: {e}"))
                })?
            }
        };
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = if keep {
            self.headers.clone()
        } else {
            std::mem::take(&mut self.headers)
        };
        req.headers_mut().insert(header::HOST, ep.host.clone());
        if let Some(trace) = &self.trace {
            crate::telemetry::set_traceparent(req.headers_mut(), trace);
        }
        Ok(req)
    }
}

/// A response whose headers are in; its body streams from `endpoint`.
pub struct Forwarded {
    /// The response (hop-by-hop headers removed).
    pub response: Response<PooledBody>,
    /// Index of the endpoint that answered.
    pub endpoint: usize,
}

/// Why one try failed.
enum TryFailure {
    /// No connection came free in time: saturation, nobody's failure.
    Saturated,
    /// The endpoint went away between the pick and the checkout.
    Ejected,
    /// The deadline passed before the try could finish; nobody's failure.
    Deadline,
    /// The endpoint failed and nothing reached it: safe to try elsewhere.
    NotSent(ProxyError),
    /// The endpoint failed after the request may have reached it.
    MaybeSent(ProxyError),
}

/// Forwards one request to `sg`, answering by `deadline`.
pub async fn forward(
    sg: &Arc<Subgraph>,
    mut out: Outgoing,
    m: &ProxyMetrics,
    deadline: Instant,
) -> Result<Forwarded, ProxyError> {
    let name = sg.name();
    let (permit, transition) = match sg.breaker.admit(Instant::now()) {
        Ok(p) => p,
        Err(_) => {
            m.breaker_rejections.with_label_values(&[name]).inc();
            return Err(ProxyError::CircuitOpen(name.to_string()));
        }
    };
    if let Some(t) = transition {
        sg.note_transition(t.from, t.to, m);
    }
    sg.deposit();
    let mut tried: Vec<usize> = Vec::new();
    let mut last: Option<TryFailure> = None;
    // Whether some try failed because of the subgraph (the breaker's input).
    let mut upstream_failed = false;

    for attempt in 0..=sg.cfg.retry.retries {
        if Instant::now() >= deadline {
            last = Some(TryFailure::Deadline);
            break;
        }
        let Some(pick) = sg.pick(&tried) else { break };
        if attempt > 0 {
            if !sg.withdraw() {
                m.retry_budget_exhausted.with_label_values(&[name]).inc();
                break;
            }
            let reason = match &last {
                Some(TryFailure::Saturated) => "saturated",
                Some(TryFailure::MaybeSent(ProxyError::UpstreamTimeout(_))) => "timeout",
                _ => "unavailable",
            };
            m.failovers.with_label_values(&[name, reason]).inc();
        }
        tried.push(pick.index);
        if pick.panic {
            m.panic_requests.with_label_values(&[name]).inc();
        }
        // A later try needs the headers again only if one can happen.
        let keep = attempt < sg.cfg.retry.retries && tried.len() < sg.endpoints.len();
        let span = tracing::debug_span!(
            "upstream_try",
            otel.kind = "client",
            subgraph = name,
            endpoint = %sg.endpoints[pick.index].addr,
            attempt,
        );
        match try_once(sg, pick, &mut out, keep, m, deadline)
            .instrument(span)
            .await
        {
            Ok(response) => {
                let gateway_error = matches!(
                    response.status(),
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                );
                sg.record_passive(pick.index, !gateway_error, m);
                record(sg, permit, !gateway_error, m);
                return Ok(Forwarded {
                    response,
                    endpoint: pick.index,
                });
            }
            Err(f) => {
                let stop = match &f {
                    TryFailure::Saturated | TryFailure::Ejected => false,
                    TryFailure::Deadline => true,
                    TryFailure::NotSent(_) => {
                        upstream_failed = true;
                        false
                    }
                    TryFailure::MaybeSent(_) => {
                        upstream_failed = true;
                        // A mutation may have run: never twice.
                        out.kind != OperationKind::Query
                    }
                };
                last = Some(f);
                if stop {
                    break;
                }
            }
        }
    }
    if upstream_failed {
        record(sg, permit, false, m);
    } // else: saturation or the deadline — the permit drops unrecorded
    Err(match last {
        Some(TryFailure::Saturated) => ProxyError::Saturated(name.to_string()),
        Some(TryFailure::Deadline) => ProxyError::UpstreamTimeout(name.to_string()),
        Some(TryFailure::NotSent(e) | TryFailure::MaybeSent(e)) => e,
        Some(TryFailure::Ejected) | None => ProxyError::NoHealthyUpstream(name.to_string()),
    })
}

fn record(sg: &Subgraph, permit: crate::breaker::Permit, success: bool, m: &ProxyMetrics) {
    if let Some(t) = sg.breaker.record(permit, success, Instant::now()) {
        sg.note_transition(t.from, t.to, m);
    }
}

/// One try on one endpoint: a connection (within the pool's acquire
/// timeout), then the exchange until response headers (within the per-try
/// timeout), all inside the deadline. Endpoint failures are recorded here.
async fn try_once(
    sg: &Subgraph,
    pick: Pick,
    out: &mut Outgoing,
    keep: bool,
    m: &ProxyMetrics,
    deadline: Instant,
) -> Result<Response<PooledBody>, TryFailure> {
    let i = pick.index;
    let ep = &sg.endpoints[i];
    let name = sg.name();
    // Polled inside the try's span: its id is the edge's in `traceparent`.
    let mut req = out.request(ep, keep).map_err(TryFailure::NotSent)?;
    // A pooled connection the peer closed while it sat idle gives the
    // request back unsent: try again on another connection of the same
    // endpoint, which is not at fault (twice at most).
    for _ in 0..3 {
        let waited = Instant::now();
        let checkout = async {
            if pick.panic {
                ep.pool.get_while_ejected().await
            } else {
                ep.pool.get().await
            }
        };
        let mut conn = match tokio::time::timeout_at(deadline.into(), checkout).await {
            Err(_) => return Err(TryFailure::Deadline),
            Ok(Ok(c)) => c,
            Ok(Err(PoolError::Timeout)) => return Err(TryFailure::Saturated),
            Ok(Err(PoolError::Ejected)) => return Err(TryFailure::Ejected),
            Ok(Err(e)) => {
                tracing::debug!(subgraph = name, endpoint = %ep.addr, error = %e, "no connection");
                sg.record_passive(i, false, m);
                return Err(TryFailure::NotSent(unavailable(name, &e.to_string())));
            }
        };
        m.pool_wait.observe(waited.elapsed().as_secs_f64());
        // Until the response head is in, an interrupted try leaves the
        // connection in an unknown state: never reuse it then.
        conn.discard();
        let per_try = Duration::from_millis(sg.cfg.timeouts.per_try_ms);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let t0 = Instant::now();
        let sent = tokio::time::timeout(per_try.min(remaining), conn.send(req)).await;
        sg.metrics(m).upstream_duration[i].observe(t0.elapsed().as_secs_f64());
        return match sent {
            Ok(Ok(resp)) => {
                conn.keep();
                let (mut parts, body) = resp.into_parts();
                headers::strip_hop_by_hop(&mut parts.headers);
                Ok(Response::from_parts(parts, PooledBody::new(body, conn)))
            }
            Ok(Err(SendError::Stale(back))) => {
                tracing::debug!(subgraph = name, endpoint = %ep.addr, "pooled connection closed by the peer; trying a fresh one");
                req = *back;
                continue;
            }
            Err(_) if remaining < per_try => Err(TryFailure::Deadline),
            Err(_) => {
                tracing::debug!(subgraph = name, endpoint = %ep.addr, "try timed out");
                sg.record_passive(i, false, m);
                Err(TryFailure::MaybeSent(ProxyError::UpstreamTimeout(
                    name.to_string(),
                )))
            }
            Ok(Err(SendError::NotSent(e))) => {
                sg.record_passive(i, false, m);
                Err(TryFailure::NotSent(unavailable(name, &e)))
            }
            Ok(Err(SendError::Sent(e))) => {
                tracing::debug!(subgraph = name, endpoint = %ep.addr, error = %e, "request failed");
                sg.record_passive(i, false, m);
                Err(TryFailure::MaybeSent(unavailable(name, &e)))
            }
        };
    }
    sg.record_passive(i, false, m);
    Err(TryFailure::NotSent(unavailable(
        name,
        "every pooled connection tried was closed by the peer",
    )))
}

fn unavailable(subgraph: &str, detail: &str) -> ProxyError {
    ProxyError::UpstreamUnavailable {
        subgraph: subgraph.to_string(),
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests;
