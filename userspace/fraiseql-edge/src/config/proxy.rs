//! `[proxy]`, `[admin]` and `[[subgraphs]]`: the GraphQL data path.

use std::{net::SocketAddr, path::PathBuf};

use http::Uri;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use super::ConfigError;
use crate::breaker::BreakerConfig;

/// `[proxy]`: the GraphQL listener.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Address the GraphQL listener binds.
    pub listen: SocketAddr,
    /// Largest request body accepted (bytes); larger ones get 413.
    pub max_body_bytes: usize,
    /// Subgraph that serves paths no route matches (none: 404).
    pub default_subgraph: Option<String>,
    /// Peers (CIDRs) whose `X-Forwarded-For`/`Forwarded` headers are
    /// believed: from them, the client is the rightmost untrusted address of
    /// those headers. From any other peer, the client is the peer.
    pub trusted_proxies: Vec<IpNet>,
    /// Time a client has to send a request's headers; also how long an idle
    /// keep-alive connection stays open.
    pub header_read_timeout_ms: u64,
    /// Time a client has to send a request's body, once its headers are in
    /// (408 after).
    pub body_read_timeout_ms: u64,
    /// A write to a client that makes no progress for this long closes the
    /// connection (a client that stopped reading its response).
    pub client_write_timeout_ms: u64,
    /// On SIGTERM, how long in-flight requests get to finish before the
    /// daemon exits anyway.
    pub drain_timeout_ms: u64,
    /// Bytes of `_entities` responses buffered for inspection at any one
    /// time, across requests; beyond it responses pass through uncounted.
    pub entities_buffer_bytes: usize,
    /// Distinct `__typename` labels per subgraph in the entity metrics when
    /// the subgraph has no SDL (with an SDL, only its entity types).
    pub entities_max_typenames: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            // The port the kernel layer protects by default.
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            // GraphQL documents are small; 2 MiB leaves room for big variables.
            max_body_bytes: 2 * 1024 * 1024,
            default_subgraph: None,
            // Nobody's headers are believed until the operator says so.
            trusted_proxies: Vec::new(),
            // HAProxy's `timeout http-request` advice; it also bounds
            // keep-alive idleness, as HAProxy's `http-keep-alive` defaults do.
            header_read_timeout_ms: 10_000,
            // A 2 MiB body needs well under this on any working link.
            body_read_timeout_ms: 10_000,
            // HAProxy's `timeout client` in its sample configurations.
            client_write_timeout_ms: 30_000,
            // Kubernetes' default termination grace period.
            drain_timeout_ms: 30_000,
            // Eight of the largest inspected responses at once.
            entities_buffer_bytes: 64 * 1024 * 1024,
            // Far above the entity types of real subgraphs, far below a
            // cardinality problem for Prometheus.
            entities_max_typenames: 100,
        }
    }
}

/// `[admin]`: metrics and probes, on a port of their own.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            // Loopback: scraping goes through the node, not the internet.
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

/// Connection pool of one endpoint.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Idle connections opened at start and kept open.
    pub min_idle: u32,
    /// Connections never exceeded (idle + busy).
    pub max: u32,
    /// How long a request waits for a connection before 503.
    pub acquire_timeout_ms: u64,
    /// TCP connect timeout.
    pub connect_timeout_ms: u64,
    /// Idle connections above `min_idle` are closed after this long.
    pub idle_timeout_secs: u64,
    /// Connections are replaced after this long.
    pub max_lifetime_secs: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            // Warm connections absorb a burst without handshakes.
            min_idle: 10,
            // Caps what one node can do to one subgraph replica.
            max: 100,
            // A second of queueing is already a bad answer.
            acquire_timeout_ms: 1_000,
            // Loopback or same-zone subgraphs connect in well under this.
            connect_timeout_ms: 1_000,
            // Below common 120 s server keep-alive limits.
            idle_timeout_secs: 90,
            // Rebalances across replicas behind a Service every half hour.
            max_lifetime_secs: 1_800,
        }
    }
}

/// Active health checks of each endpoint.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Time between checks.
    pub interval_ms: u64,
    /// A check slower than this fails; must be below the interval.
    pub timeout_ms: u64,
    /// Consecutive successes that bring an endpoint back.
    pub healthy_after: u32,
    /// Consecutive failures (checks or live traffic) that eject it.
    pub unhealthy_after: u32,
    /// `GET` this path instead of POSTing `{ __typename }`.
    pub http_path: Option<String>,
    /// When every endpoint is ejected, send traffic to all of them anyway
    /// (Envoy's panic threshold) instead of refusing every request.
    pub panic_mode: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval_ms: 5_000,
            timeout_ms: 2_000,
            healthy_after: 2,
            unhealthy_after: 3,
            http_path: None,
            // Health checks can be wrong (a network partition between the
            // edge and a live subgraph): trying beats refusing everything.
            panic_mode: true,
        }
    }
}

/// Timeouts of a subgraph.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutConfig {
    /// Whole request, retries included.
    pub overall_ms: u64,
    /// One try, from the moment a connection is in hand until the response
    /// headers arrive (waiting for a pooled connection is not part of it).
    pub per_try_ms: u64,
    /// A response body that sends nothing for this long is cut off (the
    /// whole body is bounded by `overall_ms` as well).
    pub body_idle_ms: u64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            overall_ms: 30_000,
            per_try_ms: 2_000,
            // A live subgraph streams a body without pauses this long.
            body_idle_ms: 10_000,
        }
    }
}

/// Failover retries of a subgraph.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries on another endpoint after a connect failure or a timeout.
    pub retries: u32,
    /// Retries allowed as a share of requests (percent), over 10 s …
    pub budget_percent: u32,
    /// … plus this many per second.
    pub budget_min_per_sec: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            retries: 1,
            // Retries can add at most a fifth to the load of a failing subgraph.
            budget_percent: 20,
            budget_min_per_sec: 10,
        }
    }
}

/// One subgraph.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SubgraphConfig {
    /// Name, used in routes, metrics and logs (letters, digits, `-`, `_`).
    pub name: String,
    /// Path prefix routed here; default `/<name>/graphql`.
    pub route: Option<String>,
    /// Replicas, as `http://host:port/path` URLs.
    #[serde(deserialize_with = "uris")]
    pub endpoints: Vec<Uri>,
    /// The subgraph's SDL, for validation and authorization.
    pub sdl: Option<PathBuf>,
    /// With `[auth]` configured: whether a request needs a valid token
    /// (else it may come anonymous; a token presented is checked anyway).
    #[serde(default = "yes")]
    pub require_authentication: bool,
    /// Connection pool per endpoint.
    #[serde(default)]
    pub pool: PoolConfig,
    /// Active health checks.
    #[serde(default)]
    pub health: HealthConfig,
    /// Circuit breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: TimeoutConfig,
    /// Failover.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Keys of `[graphql]` that differ for this subgraph's route (e.g.
    /// `introspection = true`, `max_cost = 20000`); the rest are global.
    pub graphql: Option<toml::Table>,
    /// The per-identity limit for this subgraph's route, in place of
    /// `[rate_limit]` (its own budget; `requests_per_minute = 0` turns it
    /// off here).
    pub rate_limit: Option<crate::ratelimit::RateLimitOverride>,
}

fn yes() -> bool {
    true
}

/// Parses each URL as its own sequence element, so that a bad one is
/// reported with its index (`subgraphs[0].endpoints[1]`).
fn uris<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Uri>, D::Error> {
    struct Url(Uri);
    impl<'de> Deserialize<'de> for Url {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let s = String::deserialize(d)?;
            s.parse::<Uri>()
                .map(Url)
                .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a URL: {e}")))
        }
    }
    Ok(Vec::<Url>::deserialize(d)?
        .into_iter()
        .map(|u| u.0)
        .collect())
}

impl SubgraphConfig {
    /// A subgraph `name` served by `endpoints`, with every default.
    pub fn new(name: &str, endpoints: Vec<Uri>) -> Self {
        Self {
            name: name.to_string(),
            route: None,
            endpoints,
            sdl: None,
            require_authentication: true,
            pool: PoolConfig::default(),
            health: HealthConfig::default(),
            breaker: BreakerConfig::default(),
            timeouts: TimeoutConfig::default(),
            retry: RetryConfig::default(),
            graphql: None,
            rate_limit: None,
        }
    }

    /// The path prefix routed to this subgraph.
    pub fn route(&self) -> String {
        self.route
            .clone()
            .unwrap_or_else(|| format!("/{}/graphql", self.name))
    }
}

/// Validates the data-path sections together.
pub fn validate(
    proxy: Option<&ProxyConfig>,
    subgraphs: &[SubgraphConfig],
) -> Result<(), ConfigError> {
    let Some(proxy) = proxy else {
        if !subgraphs.is_empty() {
            return Err(ConfigError::invalid(
                "proxy",
                "subgraphs are configured but there is no [proxy] section to serve them",
            ));
        }
        return Ok(());
    };
    if subgraphs.is_empty() {
        return Err(ConfigError::invalid(
            "subgraphs",
            "[proxy] needs at least one [[subgraphs]] entry",
        ));
    }
    let positive = [
        ("proxy.max_body_bytes", proxy.max_body_bytes as u64),
        ("proxy.header_read_timeout_ms", proxy.header_read_timeout_ms),
        ("proxy.body_read_timeout_ms", proxy.body_read_timeout_ms),
        (
            "proxy.client_write_timeout_ms",
            proxy.client_write_timeout_ms,
        ),
        ("proxy.drain_timeout_ms", proxy.drain_timeout_ms),
    ];
    if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return Err(ConfigError::invalid(*key, "must be positive"));
    }
    for (i, sg) in subgraphs.iter().enumerate() {
        let at = format!("subgraphs[{i}]");
        validate_subgraph(&at, sg)?;
        if let Some(j) = subgraphs[..i].iter().position(|o| o.name == sg.name) {
            return Err(ConfigError::invalid(
                format!("{at}.name"),
                format!("`{}` is already the name of subgraphs[{j}]", sg.name),
            ));
        }
        if let Some(j) = subgraphs[..i].iter().position(|o| o.route() == sg.route()) {
            return Err(ConfigError::invalid(
                format!("{at}.route"),
                format!("`{}` is already the route of subgraphs[{j}]", sg.route()),
            ));
        }
    }
    if let Some(default) = &proxy.default_subgraph
        && !subgraphs.iter().any(|s| &s.name == default)
    {
        return Err(ConfigError::invalid(
            "proxy.default_subgraph",
            format!("no subgraph is named `{default}`"),
        ));
    }
    Ok(())
}

fn validate_subgraph(at: &str, sg: &SubgraphConfig) -> Result<(), ConfigError> {
    let name_ok = !sg.name.is_empty()
        && sg
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        return Err(ConfigError::invalid(
            format!("{at}.name"),
            "must be non-empty letters, digits, `-` or `_`",
        ));
    }
    let route = sg.route();
    if !route.starts_with('/') {
        return Err(ConfigError::invalid(
            format!("{at}.route"),
            "must start with `/`",
        ));
    }
    if sg.endpoints.is_empty() {
        return Err(ConfigError::invalid(
            format!("{at}.endpoints"),
            "at least one endpoint is required",
        ));
    }
    for (j, uri) in sg.endpoints.iter().enumerate() {
        let key = format!("{at}.endpoints[{j}]");
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(ConfigError::invalid(
                    key,
                    format!("scheme `{other}` is not supported (use http://)"),
                ));
            }
            None => {
                return Err(ConfigError::invalid(key, format!("`{uri}` needs http://")));
            }
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(ConfigError::invalid(key, format!("`{uri}` has no host")));
        }
    }
    let p = &sg.pool;
    if p.max == 0 {
        return Err(ConfigError::invalid(
            format!("{at}.pool.max"),
            "must be at least 1",
        ));
    }
    if p.min_idle > p.max {
        return Err(ConfigError::invalid(
            format!("{at}.pool.min_idle"),
            format!("{} exceeds pool.max ({})", p.min_idle, p.max),
        ));
    }
    let h = &sg.health;
    if h.interval_ms == 0 || h.timeout_ms == 0 || h.timeout_ms >= h.interval_ms {
        return Err(ConfigError::invalid(
            format!("{at}.health.timeout_ms"),
            "must be positive and below health.interval_ms",
        ));
    }
    if h.healthy_after == 0 || h.unhealthy_after == 0 {
        return Err(ConfigError::invalid(
            format!("{at}.health.unhealthy_after"),
            "healthy_after and unhealthy_after must be at least 1",
        ));
    }
    let b = &sg.breaker;
    if !(b.failure_ratio > 0.0 && b.failure_ratio <= 1.0) {
        return Err(ConfigError::invalid(
            format!("{at}.breaker.failure_ratio"),
            "must be in (0, 1]",
        ));
    }
    if b.window_secs == 0 || b.consecutive_failures == 0 || b.half_open_probes == 0 {
        return Err(ConfigError::invalid(
            format!("{at}.breaker"),
            "window_secs, consecutive_failures and half_open_probes must be at least 1",
        ));
    }
    let t = &sg.timeouts;
    if t.per_try_ms == 0 || t.overall_ms < t.per_try_ms {
        return Err(ConfigError::invalid(
            format!("{at}.timeouts.per_try_ms"),
            "must be positive and at most timeouts.overall_ms",
        ));
    }
    if t.body_idle_ms == 0 {
        return Err(ConfigError::invalid(
            format!("{at}.timeouts.body_idle_ms"),
            "must be positive",
        ));
    }
    // Waiting for a slot and the try itself are separate budgets, but a
    // wait longer than a try means a queue that outlives what it protects.
    if p.acquire_timeout_ms == 0 || p.acquire_timeout_ms >= t.per_try_ms {
        return Err(ConfigError::invalid(
            format!("{at}.pool.acquire_timeout_ms"),
            format!(
                "must be positive and below timeouts.per_try_ms ({} ms)",
                t.per_try_ms
            ),
        ));
    }
    let r = &sg.retry;
    crate::proxy::budget::validate(r.budget_percent, r.budget_min_per_sec)
        .map_err(|reason| ConfigError::invalid(format!("{at}.retry.budget_percent"), reason))?;
    Ok(())
}
