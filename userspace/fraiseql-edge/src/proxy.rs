//! The GraphQL data path. A request goes through these phases, in order,
//! all in [`Proxy::handle`]:
//!
//! 1. **accept/http** — method (GET/POST), content type (JSON), body size
//!    (413 above `proxy.max_body_bytes`), GraphQL-over-HTTP shape; a GET may
//!    only carry a query.
//! 2. **route** — the longest matching path prefix picks the subgraph (else
//!    `proxy.default_subgraph`, else 404).
//! 3. **forward** — breaker, healthy endpoint, pooled connection, per-try
//!    timeout, failover ([`forward`]).
//! 4. **respond + observe** — the subgraph's response is streamed back
//!    unchanged (hop-by-hop headers removed); metrics recorded.
//!
//! Identification, rate limiting, GraphQL validation and authorization slot
//! in between 1 and 2 as they are built (see DESIGN's phase list).

pub mod budget;
pub mod endpoint;
pub mod entities;
pub mod error;
pub mod forward;
pub mod headers;
pub mod metrics;
pub mod operation;
pub mod pool;
pub mod subgraph;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Instant};

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

use self::{
    error::{ProxyBody, ProxyError},
    forward::Outgoing,
    metrics::ProxyMetrics,
    operation::OperationKind,
    subgraph::Subgraph,
};
use crate::{
    config::{ProxyConfig, SubgraphConfig},
    fallback::{Refusal, UserLimiter},
};

/// The data path.
pub struct Proxy {
    /// Routes, longest prefix first.
    routes: Vec<(String, Arc<Subgraph>)>,
    default: Option<Arc<Subgraph>>,
    max_body: usize,
    metrics: ProxyMetrics,
    /// Degraded mode only: the kernel layer's limits, enforced here.
    limiter: Option<Arc<UserLimiter>>,
}

impl Proxy {
    /// Builds the subgraphs and starts their background work (pool
    /// maintenance, health checks). Needs a tokio runtime.
    pub fn new(
        cfg: &ProxyConfig,
        subgraphs: &[SubgraphConfig],
        metrics: ProxyMetrics,
        limiter: Option<Arc<UserLimiter>>,
    ) -> Arc<Self> {
        let built: Vec<Arc<Subgraph>> = subgraphs.iter().cloned().map(Subgraph::new).collect();
        for sg in &built {
            sg.spawn_background(metrics.clone());
        }
        let mut routes: Vec<(String, Arc<Subgraph>)> = built
            .iter()
            .map(|sg| (sg.cfg.route(), Arc::clone(sg)))
            .collect();
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        let default = cfg
            .default_subgraph
            .as_ref()
            .and_then(|name| built.iter().find(|sg| sg.name() == name).cloned());
        Arc::new(Self {
            routes,
            default,
            max_body: cfg.max_body_bytes,
            metrics,
            limiter,
        })
    }

    /// The subgraph called `name`.
    pub fn subgraph(&self, name: &str) -> Option<&Arc<Subgraph>> {
        self.routes
            .iter()
            .map(|(_, sg)| sg)
            .find(|sg| sg.name() == name)
    }

    /// Every subgraph, for the admin API.
    pub fn describe(&self) -> serde_json::Value {
        let mut all: Vec<&Arc<Subgraph>> = self.routes.iter().map(|(_, sg)| sg).collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        serde_json::Value::Array(
            all.into_iter()
                .map(|sg| self.describe_subgraph(sg))
                .collect(),
        )
    }

    /// One subgraph: route, breaker, endpoints with health and pool numbers.
    pub fn describe_subgraph(&self, sg: &Subgraph) -> serde_json::Value {
        let breaker = match sg.breaker.state() {
            crate::breaker::State::Closed => "closed",
            crate::breaker::State::Open => "open",
            crate::breaker::State::HalfOpen => "half_open",
        };
        let endpoints: Vec<serde_json::Value> = sg
            .endpoints
            .iter()
            .map(|e| {
                let p = e.pool.stats();
                serde_json::json!({
                    "url": e.uri.to_string(),
                    "healthy": e.is_healthy(),
                    "pool": { "idle": p.idle, "busy": p.busy, "max": p.max, "opened": p.opened },
                })
            })
            .collect();
        serde_json::json!({
            "name": sg.name(),
            "route": sg.cfg.route(),
            "breaker": breaker,
            "endpoints": endpoints,
        })
    }

    /// Subgraphs without a healthy endpoint (for `/readyz`).
    pub fn unready_subgraphs(&self) -> Vec<String> {
        self.routes
            .iter()
            .filter(|(_, sg)| !sg.endpoints.iter().any(|e| e.is_healthy()))
            .map(|(_, sg)| sg.name().to_string())
            .collect()
    }

    fn route(&self, path: &str) -> Option<&Arc<Subgraph>> {
        self.routes
            .iter()
            .find(|(prefix, _)| {
                path.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .map(|(_, sg)| sg)
            .or(self.default.as_ref())
    }

    /// Handles one request through every phase; never fails (errors become
    /// GraphQL-shaped responses in [`ProxyError::into_response`]).
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let started = Instant::now();
        let path = req.uri().path().to_string();
        let sg = self.route(&path).cloned();
        let label = sg.as_ref().map_or("none", |s| s.name()).to_string();
        let (kind, resp) = match self.phases(req, peer, sg, started).await {
            Ok((kind, resp)) => (Some(kind), resp),
            Err((kind, e)) => {
                tracing::debug!(path, error = %e, "refused");
                (kind, e.into_response())
            }
        };
        let op = kind.map_or("unknown", OperationKind::as_str);
        self.metrics
            .requests
            .with_label_values(&[&label, resp.status().as_str(), op])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&[&label])
            .observe(started.elapsed().as_secs_f64());
        resp
    }

    async fn phases(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        sg: Option<Arc<Subgraph>>,
        started: Instant,
    ) -> Result<(OperationKind, Response<ProxyBody>), (Option<OperationKind>, ProxyError)> {
        // 0. degraded mode: the kernel layer's per-client limits.
        if let Some(limiter) = &self.limiter {
            limiter
                .admit_request(peer.ip())
                .map_err(|r| (None, refusal(r)))?;
        }
        // 1. accept/http
        let (parts, body) = req.into_parts();
        let query = parts.uri.query().map(str::to_string);
        let (body, op) = match parts.method {
            Method::POST => {
                let json = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|ct| {
                        let ct = ct.split(';').next().unwrap_or("").trim();
                        ct.eq_ignore_ascii_case("application/json")
                            || ct.eq_ignore_ascii_case("application/graphql-response+json")
                    });
                if !json {
                    return Err((None, ProxyError::UnsupportedMediaType));
                }
                let body = read_body(body, self.max_body)
                    .await
                    .map_err(|e| (None, e))?;
                let op = operation::from_post_body(&body).map_err(|e| (None, e))?;
                (body, op)
            }
            Method::GET => {
                let op = operation::from_query_string(query.as_deref().unwrap_or(""))
                    .map_err(|e| (None, e))?;
                let kind = op.kind;
                if kind != OperationKind::Query {
                    return Err((
                        Some(kind),
                        ProxyError::MethodNotAllowed(format!("GET for a {}", kind.as_str())),
                    ));
                }
                (Bytes::new(), op)
            }
            other => return Err((None, ProxyError::MethodNotAllowed(other.to_string()))),
        };
        let kind = op.kind;
        // 2. route
        let sg = sg.ok_or_else(|| {
            (
                Some(kind),
                ProxyError::NotFound(parts.uri.path().to_string()),
            )
        })?;
        // Only an entity fetch pays for a second look at the body.
        let entity_fetch = op
            .entity_fetch
            .then(|| entities::representations(&body))
            .flatten();
        // 3. forward
        let out = Outgoing {
            method: parts.method.clone(),
            query: if parts.method == Method::GET {
                query
            } else {
                None
            },
            headers: headers::upstream_headers(parts.headers, peer.ip()),
            body,
            kind,
        };
        let resp = forward::forward(&sg, &out, &self.metrics, started)
            .await
            .map_err(|e| {
                if let ProxyError::UpstreamUnavailable { subgraph, detail } = &e {
                    tracing::warn!(subgraph, detail, "upstream unavailable");
                }
                (Some(kind), e)
            })?;
        // 4. respond + observe
        let resp = match entity_fetch {
            Some(typenames) => self.observe_entities(sg.name(), &typenames, resp).await,
            None => resp,
        };
        Ok((kind, resp))
    }

    /// Counts `_entities` outcomes; the body is buffered (when its length is
    /// known and at most [`entities::MAX_INSPECTED_BYTES`]) and sent on unchanged.
    async fn observe_entities(
        &self,
        subgraph: &str,
        typenames: &[String],
        resp: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let small = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n <= entities::MAX_INSPECTED_BYTES);
        if !small {
            return resp;
        }
        let (parts, body) = resp.into_parts();
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                tracing::warn!(subgraph, error = %e, "reading an _entities response");
                return ProxyError::UpstreamUnavailable {
                    subgraph: subgraph.to_string(),
                    detail: e.to_string(),
                }
                .into_response();
            }
        };
        for (typename, (ok, failed)) in entities::outcomes(typenames, &bytes) {
            let m = &self.metrics.entities;
            m.with_label_values(&[subgraph, &typename, "resolved"])
                .inc_by(ok);
            m.with_label_values(&[subgraph, &typename, "failed"])
                .inc_by(failed);
        }
        let body = http_body_util::Full::new(bytes)
            .map_err(|never| match never {})
            .boxed();
        Response::from_parts(parts, body)
    }
}

fn refusal(r: Refusal) -> ProxyError {
    match r {
        Refusal::Rate | Refusal::Conn | Refusal::ConnTableFull => ProxyError::RateLimited,
        Refusal::Block | Refusal::Deny => ProxyError::Forbidden,
    }
}

/// Reads a body up to `limit` bytes (413 beyond).
async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ProxyError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::PayloadTooLarge(limit))
        }
        Err(e) => Err(ProxyError::BadRequest(format!(
            "reading the request body: {e}"
        ))),
    }
}

/// Serves the proxy on `listener` until the task is dropped.
pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Degraded mode: the connection cap and block list at accept time.
        let guard = match &proxy.limiter {
            Some(limiter) => match limiter.admit_connection(peer.ip()) {
                Ok(guard) => Some(guard),
                Err(refusal) => {
                    tracing::debug!(client = %peer.ip(), %refusal, "connection refused");
                    continue;
                }
            },
            None => None,
        };
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            let _guard = guard;
            let service = hyper::service::service_fn(move |req| {
                let proxy = Arc::clone(&proxy);
                async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
