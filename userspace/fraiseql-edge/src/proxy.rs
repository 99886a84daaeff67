//! The GraphQL data path. Every request carries one [`RequestContext`]
//! through the phases of DESIGN's request path, in order, in
//! [`Proxy::phases`]; each phase is a function over the context that
//! returns a typed refusal ([`ProxyError`]):
//!
//! 0. **client** — who the client is: the peer, or the address a trusted
//!    proxy vouched for ([`client_addr`]); degraded mode enforces the kernel
//!    layer's per-client limits here.
//! 1. **accept/http** — method, content type, body size and read deadline
//!    ([`accept`]); then the body (or query string) is parsed, once, into
//!    its GraphQL requests ([`documents`]): a malformed one is a 400.
//! 2. **identify** — the JWT of `[auth]` ([`crate::auth`]): a valid token
//!    gives the request an identity; a bad one, or none where the subgraph
//!    requires it, is 401 with `WWW-Authenticate`.
//! 3. **rate limit** — operations per identity (the subject, else the
//!    client address; each member of a batch counts), globally or per
//!    subgraph; 429 with `Retry-After` and `RateLimit-*`; an address that
//!    keeps being refused is escalated to the block list
//!    ([`crate::ratelimit`]).
//! 4. **graphql** — persisted queries resolved ([`crate::graphql::persisted`]);
//!    each operation parsed once (cached), held to the `[graphql]` limits
//!    (size, tokens, depth, aliases, root fields, directives, cost — a
//!    batch's summed — introspection, batch size; a subgraph may override
//!    them) and validated against the subgraph's SDL ([`crate::graphql`]);
//!    400 with a code per limit. The operation type (retry safety, the GET
//!    rule) comes from the syntax tree.
//! 5. **authorize** — to come.
//! 6. **route** — the subgraph for the path ([`routes`], resolved first so
//!    an unknown path is refused before its body is read), then breaker,
//!    healthy endpoint (or all of them in panic mode), pooled connection,
//!    per-try timeout, failover ([`forward`]).
//! 7. **respond + observe** — the subgraph's response streams back with its
//!    body under deadlines ([`timed_body`]); `_entities` outcomes and
//!    metrics are recorded; a slow request goes to the slow-query log
//!    ([`crate::slowlog`]).
//!
//! Each request runs in a `request` span (its route, subgraph, operation,
//! status and trace id; the trace continues the client's W3C
//! `traceparent`), with a `debug` span per phase and per upstream try
//! ([`crate::telemetry`]).
//!
//! The listener and its client-side deadlines and drain are in [`server`].

pub mod accept;
pub mod budget;
pub mod client_addr;
pub mod context;
pub mod documents;
pub mod endpoint;
pub mod entities;
pub mod error;
pub mod forward;
pub mod headers;
pub mod metrics;
pub mod operation;
pub mod pool;
pub mod routes;
pub mod server;
pub mod subgraph;
pub mod timed_body;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response, header};
use http_body::Body;
use http_body_util::BodyExt as _;
use tokio::sync::Semaphore;
use tracing::{Instrument as _, field::Empty};

pub use self::server::serve;
use self::{
    accept::{AcceptLimits, Accepted},
    client_addr::TrustedProxies,
    context::RequestContext,
    error::{ProxyBody, ProxyError},
    forward::{Forwarded, Outgoing},
    metrics::ProxyMetrics,
    routes::Routes,
    server::ListenerLimits,
    subgraph::{Subgraph, SubgraphLimits},
    timed_body::{BodyTimeout, TimedBody},
};
/// Documents whose outcome is remembered (parse, limits, validation).
const DOCUMENT_CACHE: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(10_000) {
    Some(n) => n,
    None => unreachable!(),
};

use crate::{
    auth::{AuthError, Authenticator},
    authz::{AuthorizationConfig, Filtered, Mode},
    blocklist::BlockList,
    config::{ProxyConfig, SubgraphConfig},
    fallback::{Refusal, UserLimiter},
    graphql::{
        DocumentCache, GraphqlError, GraphqlLimits,
        persisted::{Outcome, PersistedQueries},
    },
    ratelimit::{Escalation, Key, RateLimitConfig, RateLimits},
    slowlog::{SlowLog, SlowQueriesConfig, SlowQuery},
    telemetry::{Tracer, TracingConfig},
};

/// The data path.
pub struct Proxy {
    /// The routing table; a reload swaps it whole.
    routes: ArcSwap<Routes>,
    trusted: TrustedProxies,
    accept: AcceptLimits,
    listener: ListenerLimits,
    metrics: Arc<ProxyMetrics>,
    /// Bytes of `_entities` responses that may be buffered at once.
    entity_buffer: Arc<Semaphore>,
    /// Degraded mode only: the kernel layer's limits, enforced here.
    limiter: Option<Arc<UserLimiter>>,
    /// Requests per identity (`[rate_limit]` and the subgraphs' own);
    /// swapped whole when an operator or a reload changes them.
    rate_limits: ArcSwap<RateLimits>,
    /// Addresses that keep being refused go to `blocks`.
    escalation: Option<Escalation>,
    /// Where escalated addresses are blocked (the kernel map, or the
    /// degraded-mode list); `None` with the kernel layer disabled.
    blocks: Option<Arc<BlockList>>,
    /// Identification, document limits, persisted queries and field
    /// authorization; a reload swaps them whole.
    policy: ArcSwap<Policy>,
    /// Outcomes of checked documents (keyed by schema and limits too, so a
    /// reload never sees a stale outcome).
    documents: DocumentCache,
    /// `proxy.entities_max_typenames`, for subgraphs added by a reload.
    entities_max_typenames: usize,
    /// `proxy.default_subgraph`.
    default_subgraph: Option<String>,
    /// Trace context in and out (`[tracing]`).
    tracer: Tracer,
    /// Slow requests (`[slow_queries]`).
    slow: SlowLog,
    /// The saga coordinator, when `[sagas]` is configured: it serves
    /// `/sagas` on this listener.
    sagas: std::sync::OnceLock<Arc<crate::saga::coordinator::Coordinator>>,
    /// Cluster mode's limiter, when `[cluster]` is configured: the limits
    /// marked global are checked in Redis after the local check.
    cluster: std::sync::OnceLock<Arc<crate::cluster::GlobalLimiter>>,
    /// Cluster mode's shared blocks: escalation blocks go to every node.
    shared_blocks: std::sync::OnceLock<Arc<crate::cluster::blocks::SharedBlocks>>,
}

/// What a reload can change in how requests are judged.
pub struct Policy {
    /// JWT identification (`[auth]`; `None`: every request is anonymous).
    pub auth: Option<Arc<Authenticator>>,
    /// Document limits (`[graphql]`).
    pub graphql: GraphqlLimits,
    /// APQ cache and safelist.
    pub persisted: Arc<PersistedQueries>,
    /// Field authorization (`[authorization]`).
    pub authz: AuthorizationConfig,
}

/// Warns about policies the subgraph's SDL names but the configuration
/// does not define.
fn warn_undefined_policies(sg: &Subgraph, authorization: &AuthorizationConfig) {
    if let Some(schema) = &sg.schema {
        for policy in crate::authz::undefined_policies(schema, &authorization.policies) {
            tracing::warn!(
                subgraph = sg.name(),
                policy,
                "the SDL names a policy that [authorization.policies] does not define: fields requiring it are never authorized"
            );
        }
    }
}

/// What the data path is built from.
pub struct ProxyParts<'a> {
    /// `[proxy]`.
    pub cfg: &'a ProxyConfig,
    /// `[[subgraphs]]`.
    pub subgraphs: &'a [SubgraphConfig],
    /// `[rate_limit]`.
    pub rate_limit: &'a RateLimitConfig,
    /// The data path's metrics.
    pub metrics: ProxyMetrics,
    /// Degraded mode: the kernel layer's limits.
    pub limiter: Option<Arc<UserLimiter>>,
    /// The block list escalations go to.
    pub blocks: Option<Arc<BlockList>>,
    /// JWT identification, when `[auth]` is configured.
    pub auth: Option<Arc<Authenticator>>,
    /// `[graphql]`.
    pub graphql: &'a GraphqlLimits,
    /// `[persisted_queries]`, loaded.
    pub persisted: PersistedQueries,
    /// `[authorization]`.
    pub authorization: &'a AuthorizationConfig,
    /// `[tracing]`.
    pub tracing: &'a TracingConfig,
    /// `[slow_queries]`.
    pub slow_queries: &'a SlowQueriesConfig,
}

impl Proxy {
    /// Builds the subgraphs and starts their background work (pool
    /// maintenance, health checks). Needs a tokio runtime.
    pub fn new(parts: ProxyParts<'_>) -> Arc<Self> {
        let ProxyParts {
            cfg,
            subgraphs,
            rate_limit,
            metrics,
            limiter,
            blocks,
            auth,
            graphql,
            persisted,
            authorization,
            tracing: tracing_cfg,
            slow_queries,
        } = parts;
        let built: Vec<Arc<Subgraph>> = subgraphs
            .iter()
            .cloned()
            .map(|sg| {
                let limits = SubgraphLimits::of(&sg, graphql);
                Subgraph::with_limits(sg, cfg.entities_max_typenames, limits)
            })
            .collect();
        for sg in &built {
            sg.spawn_background(metrics.clone());
            warn_undefined_policies(sg, authorization);
            metrics.slow_queries.with_label_values(&[sg.name()]);
        }
        let ms = Duration::from_millis;
        Arc::new(Self {
            routes: ArcSwap::from_pointee(Routes::new(&built, cfg.default_subgraph.as_deref())),
            trusted: TrustedProxies::new(cfg.trusted_proxies.clone()),
            accept: AcceptLimits {
                max_body: cfg.max_body_bytes,
                body_timeout: ms(cfg.body_read_timeout_ms),
            },
            listener: ListenerLimits {
                header_read: ms(cfg.header_read_timeout_ms),
                write: ms(cfg.client_write_timeout_ms),
                drain: ms(cfg.drain_timeout_ms),
            },
            entity_buffer: Arc::new(Semaphore::new(cfg.entities_buffer_bytes)),
            limiter,
            rate_limits: ArcSwap::from_pointee(RateLimits::new(
                rate_limit,
                subgraphs.iter().map(|sg| (sg.name.as_str(), sg.rate_limit)),
                Instant::now(),
            )),
            escalation: Escalation::new(&rate_limit.escalation),
            blocks,
            policy: ArcSwap::from_pointee(Policy {
                auth,
                graphql: graphql.clone(),
                persisted: Arc::new(persisted),
                authz: authorization.clone(),
            }),
            entities_max_typenames: cfg.entities_max_typenames,
            default_subgraph: cfg.default_subgraph.clone(),
            documents: DocumentCache::with_counters(
                DOCUMENT_CACHE,
                metrics.document_cache.with_label_values(&["hit"]),
                metrics.document_cache.with_label_values(&["miss"]),
            ),
            tracer: Tracer::new(tracing_cfg),
            slow: SlowLog::new(slow_queries),
            metrics: Arc::new(metrics),
            sagas: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            shared_blocks: std::sync::OnceLock::new(),
        })
    }

    /// Serves the saga API with `coordinator` (once; later calls are
    /// ignored).
    pub fn set_sagas(&self, coordinator: Arc<crate::saga::coordinator::Coordinator>) {
        let _ = self.sagas.set(coordinator);
    }

    /// Puts cluster mode's limiter in force (once, at start).
    pub fn set_cluster(&self, limiter: Arc<crate::cluster::GlobalLimiter>) {
        let _ = self.cluster.set(limiter);
    }

    /// Shares escalation blocks with the other nodes (once, at start).
    pub fn set_shared_blocks(&self, shared: Arc<crate::cluster::blocks::SharedBlocks>) {
        let _ = self.shared_blocks.set(shared);
    }

    /// The listener's time limits.
    pub fn listener_limits(&self) -> ListenerLimits {
        self.listener
    }

    /// The subgraph called `name`.
    pub fn subgraph(&self, name: &str) -> Option<Arc<Subgraph>> {
        self.routes
            .load()
            .subgraphs()
            .find(|sg| sg.name() == name)
            .cloned()
    }

    /// One request the edge makes itself (a saga step or compensation)
    /// to the subgraph `name`, through the data path: its breaker, endpoint
    /// choice, pool, per-try timeout and failover (for a mutation, only
    /// while nothing was sent). `body` is the GraphQL request JSON,
    /// `headers` are sent as given (plus `content-type`). Returns the
    /// status and the whole body, read by `deadline`.
    pub async fn send(
        &self,
        name: &str,
        body: Bytes,
        mut headers: http::HeaderMap,
        deadline: Instant,
    ) -> Result<(http::StatusCode, Bytes), ProxyError> {
        let sg = self
            .subgraph(name)
            .ok_or_else(|| ProxyError::NotFound(format!("subgraph `{name}`")))?;
        headers.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let out = forward::Outgoing {
            method: http::Method::POST,
            query: None,
            headers,
            body,
            kind: operation::OperationKind::Mutation,
            trace: None,
        };
        let Forwarded { response, .. } =
            forward::forward(&sg, out, &self.metrics, deadline).await?;
        let (parts, body) = response.into_parts();
        let collected = tokio::time::timeout_at(deadline.into(), body.collect()).await;
        match collected {
            Ok(Ok(c)) => Ok((parts.status, c.to_bytes())),
            Ok(Err(e)) => Err(ProxyError::UpstreamUnavailable {
                subgraph: name.to_string(),
                detail: format!("reading the answer: {e}"),
            }),
            Err(_) => Err(ProxyError::UpstreamTimeout(name.to_string())),
        }
    }

    /// Every subgraph, sorted by name.
    pub fn subgraphs(&self) -> Vec<Arc<Subgraph>> {
        let mut all: Vec<Arc<Subgraph>> = self.routes.load().subgraphs().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// The per-identity limits in force.
    pub fn rate_limits(&self) -> arc_swap::Guard<Arc<RateLimits>> {
        self.rate_limits.load()
    }

    /// Puts new per-identity limits in force: `global`, and for each
    /// subgraph its own limit or `None` for the global one. Identities keep
    /// their state in limiters that change (see [`RateLimits::update`]).
    pub fn set_rate_limits<'a>(
        &self,
        global: &RateLimitConfig,
        subgraphs: impl IntoIterator<Item = (&'a str, Option<crate::ratelimit::RateLimitOverride>)>,
    ) {
        let next = self.rate_limits.load().update(global, subgraphs);
        self.rate_limits.store(Arc::new(next));
    }

    /// Puts a reloaded configuration's subgraphs and `policy` in force;
    /// returns what changed. Unchanged subgraphs are kept as they are; a
    /// changed one (its table, its SDL file's content, or the global
    /// document limits) is rebuilt around the endpoints (pools, health) and
    /// the breaker it can keep; removed ones are dropped once their last
    /// request ends. Requests in flight finish with what they started with.
    pub fn reload(&self, subgraphs: &[SubgraphConfig], policy: Policy) -> Vec<String> {
        let mut changed = Vec::new();
        let old = self.routes.load();
        let before = self.policy.load();
        let graphql_changed = before.graphql != policy.graphql;
        let mut built = Vec::with_capacity(subgraphs.len());
        for cfg in subgraphs {
            let current = old.subgraphs().find(|sg| sg.name() == cfg.name);
            match current {
                Some(sg) if sg.cfg == *cfg && !graphql_changed && sg.sdl_unchanged() => {
                    built.push(Arc::clone(sg));
                }
                _ => {
                    let limits = SubgraphLimits::of(cfg, &policy.graphql);
                    let sg = Subgraph::rebuilt(
                        cfg.clone(),
                        self.entities_max_typenames,
                        limits,
                        current.map(Arc::as_ref),
                    );
                    sg.spawn_background((*self.metrics).clone());
                    self.metrics.slow_queries.with_label_values(&[sg.name()]);
                    warn_undefined_policies(&sg, &policy.authz);
                    match current {
                        Some(c) if c.cfg != *cfg => {
                            changed.push(format!("subgraph {} changed", cfg.name));
                        }
                        Some(c) if !c.sdl_unchanged() => {
                            changed.push(format!("subgraph {} SDL", cfg.name));
                        }
                        Some(_) => {}
                        None => changed.push(format!("subgraph {} added", cfg.name)),
                    }
                    built.push(sg);
                }
            }
        }
        for sg in old.subgraphs() {
            if !subgraphs.iter().any(|c| c.name == sg.name()) {
                changed.push(format!("subgraph {} removed", sg.name()));
            }
        }
        if graphql_changed {
            changed.push("[graphql] limits".into());
        }
        if before.authz != policy.authz {
            changed.push("[authorization]".into());
        }
        if before.persisted.config() != policy.persisted.config()
            || !Arc::ptr_eq(&before.persisted, &policy.persisted)
                && policy.persisted.config().safelist.is_some()
        {
            changed.push("[persisted_queries]".into());
        }
        match (&before.auth, &policy.auth) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => {}
            (None, None) => {}
            _ => changed.push("[auth] and its keys".into()),
        }
        self.routes.store(Arc::new(Routes::new(
            &built,
            self.default_subgraph.as_deref(),
        )));
        self.policy.store(Arc::new(policy));
        changed
    }

    /// The policy in force.
    pub fn policy(&self) -> arc_swap::Guard<Arc<Policy>> {
        self.policy.load()
    }

    /// The slow-query log (for the control API).
    pub fn slow_queries(&self) -> &SlowLog {
        &self.slow
    }

    /// The names of the subgraphs, sorted.
    pub fn subgraph_names(&self) -> Vec<String> {
        self.subgraphs()
            .iter()
            .map(|sg| sg.name().to_string())
            .collect()
    }

    /// Subgraphs that cannot be served (for `/readyz`): no healthy
    /// endpoint, and panic mode off. (A subgraph in panic mode is still
    /// tried on every endpoint, and taking the node out of rotation would
    /// not help: every node sees the same upstreams.)
    pub fn unready_subgraphs(&self) -> Vec<String> {
        self.routes
            .load()
            .subgraphs()
            .filter(|sg| !sg.endpoints.iter().any(|e| e.is_healthy()) && !sg.cfg.health.panic_mode)
            .map(|sg| sg.name().to_string())
            .collect()
    }

    /// Handles one request through every phase; never fails (refusals
    /// become GraphQL-shaped responses in [`ProxyError::into_response`]).
    pub async fn handle<B>(
        &self,
        req: Request<B>,
        peer: std::net::SocketAddr,
    ) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let client = self.trusted.resolve(peer.ip(), req.headers());
        let (span, trace) = self.tracer.start(req.headers(), || {
            tracing::info_span!(
                "request",
                otel.kind = "server",
                route = req.uri().path(),
                client = %client.client,
                subgraph = Empty,
                graphql.operation.name = Empty,
                graphql.operation.type = Empty,
                status = Empty,
                otel.status_code = Empty,
                trace_id = Empty,
            )
        });
        let mut ctx = RequestContext::new(peer, client, req.uri().path().to_string());
        ctx.trace = Some(trace);
        self.handle_traced(ctx, req).instrument(span).await
    }

    /// [`Self::handle`] inside the request's span.
    async fn handle_traced<B>(
        &self,
        mut ctx: RequestContext,
        req: Request<B>,
    ) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let mut refused = None;
        let resp = match self.phases(&mut ctx, req).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(path = ctx.path, client = %ctx.client_ip(), error = %e, "refused");
                refused = Some(e.status_and_code().1);
                let request_error = matches!(e, ProxyError::Graphql(_) | ProxyError::Persisted(_));
                // GraphQL over HTTP: a document that does not parse or
                // validate is 200 in `application/json` (the legacy media
                // type says nothing through its status). The edge's own
                // limits keep their 4xx in either media type: they are the
                // edge's policy, which operators and clients tell by status.
                let invalid_document = matches!(
                    e,
                    ProxyError::Graphql(
                        GraphqlError::ParseFailed { .. }
                            | GraphqlError::ValidationFailed { .. }
                            | GraphqlError::OperationNotFound
                            | GraphqlError::OperationNameRequired { .. }
                    )
                );
                let mut resp = e.into_response();
                if request_error && ctx.graphql_response {
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/graphql-response+json"),
                    );
                } else if invalid_document {
                    *resp.status_mut() = http::StatusCode::OK;
                }
                resp
            }
        };
        let took = ctx.started.elapsed();
        let elapsed = took.as_secs_f64();
        match (&ctx.subgraph, ctx.operation) {
            (Some(sg), Some(op)) if refused.is_none() && resp.status() == http::StatusCode::OK => {
                let hot = sg.metrics(&self.metrics);
                hot.ok(op).inc();
                hot.request_duration.observe(elapsed);
            }
            _ => {
                let op = ctx.operation.map_or("unknown", |k| k.as_str());
                let label = ctx.subgraph_label();
                let code = refused.unwrap_or(metrics::NO_CODE);
                self.metrics
                    .requests
                    .with_label_values(&[label, resp.status().as_str(), op, code])
                    .inc();
                self.metrics
                    .request_duration
                    .with_label_values(&[label])
                    .observe(elapsed);
            }
        }
        self.observe(&ctx, took, resp.status());
        resp
    }

    /// Phase 7, the request's span and the slow-query log.
    fn observe(&self, ctx: &RequestContext, took: Duration, status: http::StatusCode) {
        let span = tracing::Span::current();
        if !span.is_disabled() {
            span.record("subgraph", ctx.subgraph_label());
            span.record("status", status.as_u16());
            if let Some(op) = ctx.operation {
                span.record("graphql.operation.type", op.as_str());
            }
            if status.is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
        }
        if !self.slow.is_slow(took) {
            return;
        }
        let subgraph = ctx.subgraph_label();
        let q = SlowQuery {
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            duration: took,
            operation_name: ctx.operation_name.clone().unwrap_or_default(),
            operation_type: ctx.operation.map_or("unknown", |k| k.as_str()).to_string(),
            document_hash: ctx
                .document
                .as_ref()
                .map(context::DocumentKey::hash)
                .unwrap_or_default(),
            subgraph: subgraph.to_string(),
            client: ctx
                .identity
                .as_ref()
                .and_then(|i| i.subject.clone())
                .unwrap_or_else(|| ctx.client_ip().to_string()),
            status: status.as_u16(),
            trace_id: ctx
                .trace
                .as_ref()
                .map(|t| t.trace_id.to_string())
                .unwrap_or_default(),
        };
        tracing::warn!(
            operation_name = q.operation_name,
            operation_type = q.operation_type,
            document_hash = q.document_hash,
            subgraph = q.subgraph,
            client = q.client,
            duration_ms = took.as_millis() as u64,
            status = q.status,
            trace_id = q.trace_id,
            threshold_ms = self.slow.threshold().as_millis() as u64,
            "slow query"
        );
        self.metrics
            .slow_queries
            .with_label_values(&[subgraph])
            .inc();
        self.slow.record(q);
    }

    /// DESIGN's request path, phase by phase.
    async fn phases<B>(
        &self,
        ctx: &mut RequestContext,
        req: Request<B>,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if let Some(sagas) = self.sagas.get()
            && crate::saga::api::owns(&ctx.path)
        {
            self.client_limits(ctx)?; // 0. client
            return crate::saga::api::handle(self, sagas, ctx, req).await;
        }
        let (sg, accepted, policy) = match self.admit(ctx, req).await? {
            // 0–5
            Admitted::Forward(sg, accepted, policy) => (sg, accepted, policy),
            Admitted::Answer(resp) => return Ok(resp),
        };
        let typenames = self.entity_typenames(ctx, &accepted);
        let forwarded = self
            .forward(ctx, &sg, &policy, accepted) // 6b. forward
            .instrument(tracing::debug_span!("forward", subgraph = sg.name()))
            .await?;
        Ok(self
            .respond(ctx, &sg, forwarded, typenames) // 7. respond + observe
            .instrument(tracing::debug_span!("respond"))
            .await)
    }

    /// The admission phases: everything the edge decides before the
    /// subgraph is involved. Returns the subgraph and the request as it
    /// will be forwarded.
    async fn admit<B>(
        &self,
        ctx: &mut RequestContext,
        req: Request<B>,
    ) -> Result<Admitted, ProxyError>
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        self.client_limits(ctx)?; // 0. client
        // One snapshot of the policy for the whole request, even if a
        // reload swaps it meanwhile.
        let policy = self.policy.load_full();
        let sg = self.route(ctx)?; // 6a. route (the path's subgraph)
        let mut accepted = accept::accept(self.accept, req) // 1. accept/http
            .instrument(tracing::debug_span!("accept"))
            .await?;
        let rewritten = {
            // The body, parsed once: every later phase reads these.
            let docs = documents::of(&accepted)?;
            self.identify(ctx, &policy, &sg, &accepted) // 2. identify
                .instrument(tracing::debug_span!("identify"))
                .await?;
            self.rate_limit(ctx, &sg, docs.len()) // 3. rate limit
                .instrument(tracing::debug_span!("rate_limit"))
                .await?;
            tracing::debug_span!("graphql")
                .in_scope(|| self.graphql(ctx, &policy, &sg, &accepted, &docs))? // 4. graphql + 5. authorize
        };
        match rewritten {
            Rewrite::Body(body) => accepted.body = body,
            Rewrite::Query(qs) => accepted.query = Some(qs),
            Rewrite::Answer(response) => return Ok(Admitted::Answer(json_response(&response))),
            Rewrite::None => {}
        }
        Ok(Admitted::Forward(sg, accepted, policy))
    }

    /// Runs the admission phases (client, route, accept, identify, rate
    /// limit, graphql, authorize) over one request from `peer` without
    /// forwarding it: what fuzzing and benchmarks of the admission pipeline
    /// drive. `Ok` means the request would be sent to the subgraph.
    pub async fn admission<B>(
        &self,
        req: Request<B>,
        peer: std::net::SocketAddr,
    ) -> Result<(), ProxyError>
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let client = self.trusted.resolve(peer.ip(), req.headers());
        let mut ctx = RequestContext::new(peer, client, req.uri().path().to_string());
        self.admit(&mut ctx, req).await.map(drop)
    }

    /// Phase 5, per operation: the federation entry points only for
    /// trusted routers, then the fields the caller may see. Reject mode (or
    /// a batch) refuses the operation; filter mode returns it without the
    /// unauthorized selections.
    #[allow(clippy::too_many_arguments)]
    fn authorize(
        &self,
        ctx: &RequestContext,
        policy: &Policy,
        sg: &Subgraph,
        checked: &crate::graphql::Checked,
        doc: &documents::Document<'_>,
        query: &str,
        batch: bool,
    ) -> Result<Option<Filtered>, ProxyError> {
        let refuse = |reason: &str, e: ProxyError| {
            self.metrics
                .authz_refusals
                .with_label_values(&[reason])
                .inc();
            tracing::debug!(client = %ctx.client_ip(), reason, "authorization refused");
            Err(e)
        };
        if (checked.entity_fetch || checked.service_fetch)
            && !policy
                .authz
                .trusted_router
                .allows(ctx.identity.as_ref(), ctx.client_ip())
        {
            return refuse("entry_point", ProxyError::EntryPointForbidden);
        }
        if checked.authz.is_empty() {
            return Ok(None);
        }
        let no_variables = serde_json::Map::new();
        let variables = doc.variables.as_ref().unwrap_or(&no_variables);
        let typenames = checked.authz.entity_typenames(variables);
        let verdict =
            checked
                .authz
                .evaluate(ctx.identity.as_ref(), &policy.authz.policies, &typenames);
        if verdict.is_authorized() {
            return Ok(None);
        }
        let unauthorized = || ProxyError::Unauthorized(verdict.errors());
        if policy.authz.mode == Mode::Reject || batch {
            return refuse("fields", unauthorized());
        }
        // Filter mode: the document again (only on this path), rewritten.
        let filtered = sg.schema.as_ref().and_then(|schema| {
            let document = apollo_compiler::ast::Document::parse(query, "request.graphql").ok()?;
            let operation =
                crate::graphql::select_operation(&document, doc.operation_name.as_deref()).ok()?;
            Some(crate::authz::filter(schema, &document, operation, &verdict))
        });
        match filtered {
            Some(filtered) => {
                self.metrics
                    .authz_refusals
                    .with_label_values(&["filtered"])
                    .inc();
                Ok(Some(filtered))
            }
            None => refuse("fields", unauthorized()),
        }
    }

    /// Phase 0: degraded mode enforces the kernel layer's per-client limits.
    fn client_limits(&self, ctx: &RequestContext) -> Result<(), ProxyError> {
        match &self.limiter {
            Some(limiter) => limiter.admit_request(ctx.client_ip()).map_err(|r| {
                if matches!(r, Refusal::Rate) {
                    self.metrics
                        .rate_limited
                        .with_label_values(&["degraded"])
                        .inc();
                }
                refusal(r)
            }),
            None => Ok(()),
        }
    }

    /// Phase 2: who the caller is, from its token. A token presented is
    /// always checked; a request without one is anonymous unless the
    /// subgraph requires authentication. A failure is a strike against the
    /// client address.
    async fn identify(
        &self,
        ctx: &mut RequestContext,
        policy: &Policy,
        sg: &Subgraph,
        accepted: &Accepted,
    ) -> Result<(), ProxyError> {
        self.identify_headers(
            ctx,
            policy,
            &accepted.headers,
            sg.cfg.require_authentication,
        )
        .await
    }

    /// [`Self::identify`] over `headers`; a token is `required` or not.
    pub(crate) async fn identify_headers(
        &self,
        ctx: &mut RequestContext,
        policy: &Policy,
        headers: &http::HeaderMap,
        required: bool,
    ) -> Result<(), ProxyError> {
        let Some(auth) = &policy.auth else {
            return Ok(());
        };
        let refused = match auth.authenticate(headers).await {
            Ok(Some(identity)) => {
                ctx.identity = Some(identity);
                return Ok(());
            }
            Ok(None) if !required => return Ok(()),
            Ok(None) => AuthError::MissingToken,
            Err(e) => e,
        };
        self.metrics
            .auth_failures
            .with_label_values(&[refused.reason()])
            .inc();
        tracing::debug!(client = %ctx.client_ip(), reason = refused.reason(), "authentication failed");
        self.strike(ctx.client_ip(), Instant::now());
        Err(ProxyError::Unauthenticated(refused))
    }

    /// Phase 3: the identity's request rate; a refusal is a strike against
    /// the client address, and enough strikes block it.
    async fn rate_limit(
        &self,
        ctx: &RequestContext,
        sg: &Subgraph,
        operations: usize,
    ) -> Result<(), ProxyError> {
        self.limit(ctx, Some(sg.name()), operations).await
    }

    /// Counts `operations` requests of the caller against the limit of
    /// requests to `subgraph` (`None`: the global per-identity limit), on
    /// this node and then, for a limit marked global, across the cluster;
    /// a refusal counts as a strike.
    async fn limit(
        &self,
        ctx: &RequestContext,
        subgraph: Option<&str>,
        operations: usize,
    ) -> Result<(), ProxyError> {
        let now = Instant::now();
        let key = match ctx.identity.as_ref().and_then(|i| i.subject.clone()) {
            Some(subject) => Key::Subject(subject),
            None => Key::Address(ctx.client_ip()),
        };
        let n = u32::try_from(operations).unwrap_or(u32::MAX);
        let global = {
            let limits = self.rate_limits.load();
            let limiter = match subgraph {
                Some(sg) => limits.for_subgraph(sg),
                None => limits.global_limiter(),
            };
            let Some(limiter) = limiter else {
                return Ok(());
            };
            let decision = limiter.check_n(&key, n, now);
            if !decision.allowed {
                return Err(self.refuse(ctx, "identity", decision, now));
            }
            limits.global_params(subgraph)
        };
        let (Some(cluster), Some((scope, rpm, burst))) = (self.cluster.get(), global) else {
            return Ok(());
        };
        let id = match &key {
            Key::Subject(s) => format!("sub:{s}"),
            Key::Address(a) => format!("addr:{a}"),
        };
        match cluster.check(&format!("{scope}:{id}"), rpm, burst, n).await {
            crate::cluster::GlobalDecision::Checked(d) if d.allowed => Ok(()),
            crate::cluster::GlobalDecision::Checked(d) => Err(self.refuse(ctx, "global", d, now)),
            crate::cluster::GlobalDecision::Unavailable => match cluster.failure_mode() {
                crate::cluster::FailureMode::Open => Ok(()),
                crate::cluster::FailureMode::Closed => Err(ProxyError::GlobalLimitUnavailable),
            },
        }
    }

    /// A 429 from `layer`: counted, and a strike against the client.
    fn refuse(
        &self,
        ctx: &RequestContext,
        layer: &str,
        decision: crate::ratelimit::Decision,
        now: Instant,
    ) -> ProxyError {
        self.metrics.rate_limited.with_label_values(&[layer]).inc();
        self.strike(ctx.client_ip(), now);
        ProxyError::TooManyRequests(decision)
    }

    /// Counts a strike against `addr`; blocks it when it reaches the
    /// escalation threshold.
    fn strike(&self, addr: std::net::IpAddr, now: Instant) {
        let Some(ttl) = self.escalation.as_ref().and_then(|e| e.strike(addr, now)) else {
            return;
        };
        let Some(blocks) = &self.blocks else {
            tracing::warn!(client = %addr, "escalation threshold reached, but the kernel layer is disabled: nothing to block with");
            self.metrics
                .escalations
                .with_label_values(&["no_block_list"])
                .inc();
            return;
        };
        match blocks.block(addr, Some(ttl.as_secs())) {
            Ok(info) => {
                tracing::warn!(client = %addr, ttl_secs = ttl.as_secs(), enforced_by = blocks.enforced_by(), "client blocked: too many refused requests");
                self.metrics.events.publish(
                    crate::events::Event::new(
                        crate::events::Kind::Escalation,
                        addr.to_string(),
                        "too many refused requests",
                    )
                    .by("escalation"),
                );
                self.metrics.events.block(
                    addr,
                    Some(ttl.as_secs()),
                    "escalation",
                    "too many refused requests",
                );
                if let Some(shared) = self.shared_blocks.get() {
                    shared.blocked(
                        info.client,
                        Some(ttl.as_secs()),
                        "escalation",
                        "too many refused requests",
                    );
                }
                self.metrics
                    .escalations
                    .with_label_values(&["blocked"])
                    .inc();
            }
            Err(e) => {
                tracing::error!(client = %addr, error = %e, "escalation: the block failed");
                self.metrics
                    .escalations
                    .with_label_values(&["failed"])
                    .inc();
            }
        }
    }

    /// Phase 4: every operation of the request parsed once (outcomes are
    /// cached), held to the `[graphql]` limits and validated against the
    /// subgraph's SDL when it has one. The operation type and entity fetch
    /// come from the syntax tree.
    fn graphql(
        &self,
        ctx: &mut RequestContext,
        policy: &Policy,
        sg: &Subgraph,
        accepted: &Accepted,
        docs: &[documents::Document<'_>],
    ) -> Result<Rewrite, ProxyError> {
        ctx.graphql_response = wants_graphql_response(&accepted.headers);
        let limits = sg.limits.graphql.as_ref().unwrap_or(&policy.graphql);
        let refuse = |e: GraphqlError| self.graphql_refusal(e);
        if docs.len() > 1 {
            crate::graphql::check_batch(docs.len(), limits).map_err(refuse)?;
        }
        let mut kind = operation::OperationKind::Query;
        let mut entity_fetch = false;
        // Documents the edge resolved from a hash, by batch position.
        let mut resolved_docs: Vec<Option<Arc<str>>> = Vec::with_capacity(docs.len());
        let mut rewrite = false;
        let mut batch_cost = 0u64;
        let mut answer = None;
        for (i, doc) in docs.iter().enumerate() {
            let persisted = doc.persisted();
            rewrite |= persisted.is_some();
            let resolved = policy
                .persisted
                .resolve(doc.query.as_deref(), persisted)
                .map_err(|e| {
                    self.metrics
                        .graphql_refusals
                        .with_label_values(&[e.code()])
                        .inc();
                    ProxyError::Persisted(e)
                })?;
            if resolved.outcome != Outcome::Plain {
                self.metrics
                    .persisted_queries
                    .with_label_values(&[resolved.outcome.as_str()])
                    .inc();
            }
            let query: &str = match (&resolved.document, &doc.query) {
                (Some(d), _) => d,
                (None, Some(q)) => q,
                (None, None) => return Err(ProxyError::BadRequest("missing `query`".into())),
            };
            let checked = self
                .documents
                .check(
                    query,
                    doc.operation_name.as_deref(),
                    sg.schema.as_ref(),
                    limits,
                )
                .map_err(refuse)?;
            if i == 0 {
                self.note_operation(ctx, doc, checked.name.as_deref());
            }
            let cost = match &doc.variables {
                Some(vars) => checked.check_variables(vars, limits).map_err(refuse)?,
                None => checked.cost,
            };
            let hot = sg.metrics(&self.metrics);
            hot.depth.observe(f64::from(checked.depth));
            hot.cost.observe(cost as f64);
            // A batch is one request upstream: its operations share the budget.
            batch_cost = batch_cost.saturating_add(cost);
            if batch_cost > limits.max_cost {
                return Err(refuse(GraphqlError::MaxCostExceeded {
                    limit: limits.max_cost,
                    measured: batch_cost,
                }));
            }
            let this = checked.kind;
            if this != operation::OperationKind::Query {
                kind = this;
            }
            entity_fetch |= checked.entity_fetch;
            let filtered = self.authorize(ctx, policy, sg, &checked, doc, query, docs.len() > 1)?;
            let mut forwarded = resolved.document;
            if let Some(filtered) = filtered {
                let Filtered { document, patch } = filtered;
                match document {
                    Some(text) => {
                        forwarded = Some(Arc::from(text));
                        rewrite = true;
                        ctx.patch = Some(patch);
                    }
                    // Nothing the caller may see is left: the edge answers.
                    None => answer = Some(patch.response()),
                }
            }
            resolved_docs.push(forwarded);
        }
        if accepted.method == http::Method::GET && kind != operation::OperationKind::Query {
            // Known only now for a query sent by hash.
            return Err(ProxyError::MethodNotAllowed(format!(
                "GET for a {}",
                kind.as_str()
            )));
        }
        ctx.operation = Some(kind);
        ctx.entity_fetch = entity_fetch;
        if let Some(response) = answer {
            return Ok(Rewrite::Answer(response));
        }
        if rewrite {
            return Ok(match documents::rebuild(accepted, &resolved_docs)? {
                documents::Rewritten::Body(body) => Rewrite::Body(body),
                documents::Rewritten::Query(qs) => Rewrite::Query(qs),
            });
        }
        Ok(Rewrite::None)
    }

    /// The first operation's name (on the request span) and, while the
    /// slow-query log is on, its document.
    fn note_operation(
        &self,
        ctx: &mut RequestContext,
        doc: &documents::Document<'_>,
        name: Option<&str>,
    ) {
        if let Some(name) = name {
            tracing::Span::current().record("graphql.operation.name", name);
        }
        if !self.slow.enabled() {
            return;
        }
        ctx.operation_name = name.map(str::to_string);
        ctx.document = match (doc.persisted(), &doc.query) {
            (Some(p), _) => Some(context::DocumentKey::Persisted(p.sha256_hash.clone())),
            (None, Some(q)) => Some(context::DocumentKey::Text(Arc::from(q.as_ref()))),
            (None, None) => None,
        };
    }

    /// A refusal of the graphql phase, counted.
    fn graphql_refusal(&self, e: GraphqlError) -> ProxyError {
        self.metrics
            .graphql_refusals
            .with_label_values(&[e.code()])
            .inc();
        ProxyError::Graphql(e)
    }

    /// The policy in force (one snapshot for a whole request).
    pub(crate) fn policy_snapshot(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// The accept phase over a saga submission (a JSON `POST` within the
    /// body limits).
    pub(crate) async fn accept_saga<B>(&self, req: Request<B>) -> Result<Accepted, ProxyError>
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        accept::accept(self.accept, req).await
    }

    /// The rate limit over one saga step on `sg`.
    pub(crate) async fn saga_rate_limit(
        &self,
        ctx: &RequestContext,
        sg: &Subgraph,
    ) -> Result<(), ProxyError> {
        self.rate_limit(ctx, sg, 1).await
    }

    /// The rate limit over a read of the saga API (`GET /sagas/{id}`),
    /// which belongs to no subgraph: one request against the global
    /// per-identity limit.
    pub(crate) async fn saga_read_rate_limit(
        &self,
        ctx: &RequestContext,
    ) -> Result<(), ProxyError> {
        self.limit(ctx, None, 1).await
    }

    /// Phases 4 and 5 over one mutation of a saga step: the `[graphql]`
    /// limits, validation against `sg`'s SDL, and field authorization in
    /// reject mode. Returns the operation's type (the caller wants a
    /// mutation).
    pub(crate) fn check_saga_mutation(
        &self,
        ctx: &RequestContext,
        policy: &Policy,
        sg: &Subgraph,
        query: &str,
        variables: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<operation::OperationKind, ProxyError> {
        let limits = sg.limits.graphql.as_ref().unwrap_or(&policy.graphql);
        let checked = self
            .documents
            .check(query, None, sg.schema.as_ref(), limits)
            .map_err(|e| self.graphql_refusal(e))?;
        if let Some(vars) = variables {
            checked
                .check_variables(vars, limits)
                .map_err(|e| self.graphql_refusal(e))?;
        }
        let doc = documents::Document {
            query: Some(std::borrow::Cow::Borrowed(query)),
            operation_name: None,
            variables: variables.cloned(),
            extensions: None,
        };
        // As a batch: reject mode whatever `[authorization] mode` says.
        self.authorize(ctx, policy, sg, &checked, &doc, query, true)?;
        Ok(checked.kind)
    }

    /// Phase 6a: the subgraph serving the path.
    fn route(&self, ctx: &mut RequestContext) -> Result<Arc<Subgraph>, ProxyError> {
        let sg = self
            .routes
            .load()
            .route(&ctx.path)
            .cloned()
            .ok_or_else(|| ProxyError::NotFound(ctx.path.clone()))?;
        ctx.subgraph = Some(Arc::clone(&sg));
        Ok(sg)
    }

    /// The `__typename`s of an entity fetch's representations (phase 7
    /// counts their outcomes).
    fn entity_typenames(&self, ctx: &RequestContext, accepted: &Accepted) -> Option<Vec<String>> {
        ctx.entity_fetch
            .then(|| entities::representations(&accepted.body))
            .flatten()
    }

    /// Phase 6b: breaker, endpoint, connection, tries.
    async fn forward(
        &self,
        ctx: &RequestContext,
        sg: &Arc<Subgraph>,
        policy: &Policy,
        accepted: Accepted,
    ) -> Result<Forwarded, ProxyError> {
        let out = Outgoing {
            method: accepted.method,
            query: accepted.query,
            headers: {
                let mut h = headers::upstream_headers(accepted.headers, &ctx.client);
                if let Some(auth) = &policy.auth {
                    auth.forward_claims(ctx.identity.as_ref(), &mut h);
                }
                if let Some(trace) = &ctx.trace {
                    trace.rewrite(&mut h);
                }
                h
            },
            body: accepted.body,
            kind: ctx.operation.unwrap_or(operation::OperationKind::Mutation),
            trace: ctx.trace.clone(),
        };
        let deadline = ctx.deadline().unwrap_or_else(Instant::now);
        forward::forward(sg, out, &self.metrics, deadline)
            .await
            .inspect_err(|e| {
                if let ProxyError::UpstreamUnavailable { subgraph, detail } = e {
                    tracing::warn!(subgraph, detail, "upstream unavailable");
                }
            })
    }

    /// Phase 7: the response streams back under the body deadlines;
    /// `_entities` outcomes are counted.
    async fn respond(
        &self,
        ctx: &RequestContext,
        sg: &Arc<Subgraph>,
        forwarded: Forwarded,
        typenames: Option<Vec<String>>,
    ) -> Response<ProxyBody> {
        let Forwarded { response, endpoint } = forwarded;
        let (parts, body) = response.into_parts();
        let idle = Duration::from_millis(sg.cfg.timeouts.body_idle_ms);
        let deadline = ctx.deadline().unwrap_or_else(Instant::now);
        let on_timeout = {
            let sg = Arc::clone(sg);
            let m = Arc::clone(&self.metrics);
            Box::new(move |why: BodyTimeout| {
                tracing::warn!(subgraph = sg.name(), endpoint = %sg.endpoints[endpoint].addr, reason = why.as_str(), "response body cut off");
                m.body_timeouts
                    .with_label_values(&[sg.name(), why.as_str()])
                    .inc();
                if why == BodyTimeout::Idle {
                    sg.record_passive(endpoint, false, &m);
                }
            })
        };
        let body = TimedBody::new(body, idle, deadline.into(), on_timeout).boxed();
        let mut resp = Response::from_parts(parts, body);
        if let Some(patch) = &ctx.patch {
            resp = self.patch_response(sg, patch, resp).await;
        }
        match typenames {
            Some(t) => self.observe_entities(sg, &t, resp).await,
            None => resp,
        }
    }

    /// Filter mode: the subgraph's response with the removed fields put back
    /// as `null` (propagated) and their errors. A body that is not JSON
    /// passes unchanged (the removed fields were never asked for).
    async fn patch_response(
        &self,
        sg: &Subgraph,
        patch: &crate::authz::ResponsePatch,
        resp: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let (mut parts, mut body) = resp.into_parts();
        let limit = self.accept.max_body.max(PATCH_MIN);
        let mut buf = bytes::BytesMut::new();
        // The body carries its deadlines: a stall ends the read.
        while let Some(frame) = body.frame().await {
            let detail = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) if buf.len() + data.len() <= limit => {
                        buf.extend_from_slice(&data);
                        continue;
                    }
                    Ok(_) => format!("response larger than {limit} bytes"),
                    Err(_) => continue, // trailers
                },
                Err(e) => e.to_string(),
            };
            tracing::warn!(subgraph = sg.name(), detail, "reading a response to patch");
            return ProxyError::UpstreamUnavailable {
                subgraph: sg.name().to_string(),
                detail,
            }
            .into_response();
        }
        let bytes = buf.freeze();
        let bytes = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(mut value) => {
                patch.apply(&mut value);
                Bytes::from(value.to_string())
            }
            Err(_) => bytes,
        };
        parts
            .headers
            .insert(header::CONTENT_LENGTH, bytes.len().into());
        let body = http_body_util::Full::new(bytes)
            .map_err(|never| match never {})
            .boxed();
        Response::from_parts(parts, body)
    }

    /// Counts `_entities` outcomes. The body is buffered when its length is
    /// known, at most [`entities::MAX_INSPECTED_BYTES`], and fits in the
    /// shared inspection budget; otherwise it passes through uncounted.
    async fn observe_entities(
        &self,
        sg: &Subgraph,
        typenames: &[String],
        resp: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let name = sg.name();
        let len = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n <= entities::MAX_INSPECTED_BYTES);
        let Some(len) = len else {
            self.metrics
                .entities_uninspected
                .with_label_values(&[name, "too_large"])
                .inc();
            return resp;
        };
        let Ok(_budget) = self.entity_buffer.try_acquire_many(len as u32) else {
            self.metrics
                .entities_uninspected
                .with_label_values(&[name, "buffer_full"])
                .inc();
            return resp;
        };
        let (parts, body) = resp.into_parts();
        // The body carries its deadlines: a stall ends the collection.
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                tracing::warn!(subgraph = name, error = %e, "reading an _entities response");
                return ProxyError::UpstreamUnavailable {
                    subgraph: name.to_string(),
                    detail: e.to_string(),
                }
                .into_response();
            }
        };
        for (typename, (ok, failed)) in entities::outcomes(typenames, &bytes) {
            let label = sg.entity_labels.label(&typename);
            let m = &self.metrics.entities;
            m.with_label_values(&[name, label, "resolved"]).inc_by(ok);
            m.with_label_values(&[name, label, "failed"]).inc_by(failed);
        }
        let body = http_body_util::Full::new(bytes)
            .map_err(|never| match never {})
            .boxed();
        Response::from_parts(parts, body)
    }
}

/// Largest subgraph response patched in filter mode is the larger of this
/// and `proxy.max_body_bytes`.
const PATCH_MIN: usize = 16 << 20;

/// What the admission phases decided.
enum Admitted {
    /// Send it to the subgraph.
    Forward(Arc<Subgraph>, Accepted, Arc<Policy>),
    /// The edge answers (filter mode left nothing to ask).
    Answer(Response<ProxyBody>),
}

/// How the graphql and authorize phases change the request.
enum Rewrite {
    /// Forward it as it came.
    None,
    /// A new POST body.
    Body(Bytes),
    /// A new GET query string.
    Query(String),
    /// Do not forward it; answer this.
    Answer(serde_json::Value),
}

/// A 200 `application/json` answer of the edge's own.
pub(crate) fn json_response(value: &serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(
        http_body_util::Full::new(Bytes::from(value.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Whether the edge's own GraphQL answers use
/// `application/graphql-response+json` (GraphQL over HTTP): yes when the
/// client lists it, or lists neither it nor `application/json` (`*/*`, no
/// `Accept` — the spec's default since 2025); no when it asks for
/// `application/json` alone.
fn wants_graphql_response(headers: &http::HeaderMap) -> bool {
    let mut json = false;
    for range in headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let essence = range.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/graphql-response+json") {
            return true;
        }
        json |= essence.eq_ignore_ascii_case("application/json");
    }
    !json
}

fn refusal(r: Refusal) -> ProxyError {
    match r {
        Refusal::Rate | Refusal::Conn | Refusal::ConnTableFull => ProxyError::RateLimited,
        Refusal::Block | Refusal::Deny => ProxyError::Forbidden,
    }
}

#[cfg(test)]
mod tests;
