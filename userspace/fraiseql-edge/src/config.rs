//! Daemon configuration (TOML).
//!
//! One struct per subsystem, `deny_unknown_fields`, defaults in explicit
//! `Default` impls with the reason for each value. [`Config::from_toml`]
//! reports the path of a bad key (`kernel.overrides[1].cidr: …`); semantic
//! checks that serde cannot express run in [`Config::validate`].

mod control;
mod kernel;
mod proxy;

use std::path::Path;

pub use control::ControlConfig;
pub use kernel::{
    KernelConfig, OverrideActionConfig, OverrideConfig, XdpModeConfig, check_interfaces,
};
pub use proxy::{
    AdminConfig, HealthConfig, PoolConfig, ProxyConfig, RetryConfig, SubgraphConfig, TimeoutConfig,
};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The kernel enforcement layer (XDP + connection tracker).
    #[serde(default)]
    pub kernel: KernelConfig,
    /// The GraphQL listener; without it the daemon runs the kernel layer only.
    pub proxy: Option<ProxyConfig>,
    /// Metrics and probes; without it no admin listener runs.
    pub admin: Option<AdminConfig>,
    /// The gRPC control API; without it no control listener runs.
    pub control: Option<ControlConfig>,
    /// The subgraphs behind the proxy.
    #[serde(default)]
    pub subgraphs: Vec<SubgraphConfig>,
    /// The daemon's async runtime.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Requests per identity, and escalation to the block list.
    #[serde(default)]
    pub rate_limit: crate::ratelimit::RateLimitConfig,
    /// JWT identification; without it every request is anonymous.
    pub auth: Option<crate::auth::AuthConfig>,
    /// GraphQL document limits, applied to every request.
    #[serde(default)]
    pub graphql: crate::graphql::GraphqlLimits,
    /// Automatic persisted queries and the safelist.
    #[serde(default)]
    pub persisted_queries: crate::graphql::persisted::PersistedQueriesConfig,
    /// Field authorization from the subgraphs' SDLs, and who may reach the
    /// federation entry points.
    #[serde(default)]
    pub authorization: crate::authz::AuthorizationConfig,
    /// Trace context (W3C `traceparent`) and span export over OTLP.
    #[serde(default)]
    pub tracing: crate::telemetry::TracingConfig,
    /// The slow-query log.
    #[serde(default)]
    pub slow_queries: crate::slowlog::SlowQueriesConfig,
    /// The saga coordinator and its durable log (absent: none runs).
    pub sagas: Option<crate::saga::config::SagasConfig>,
    /// Cluster mode: limits shared by every node through Redis (absent:
    /// each node enforces on its own).
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// `[runtime]`: the daemon's async runtime.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Worker threads; unset: one per CPU the daemon may run on (its
    /// affinity mask, or cgroup CPU quota, as the standard library sees it).
    pub worker_threads: Option<usize>,
}

impl RuntimeConfig {
    /// The number of worker threads to start.
    pub fn workers(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

/// A configuration that cannot be used, with the path of the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Syntax error, unknown key or a value of the wrong type.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted path of the key (`kernel.rate`), or `<root>`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Self::from_toml(&text)?;
        config.resolve_files(path.parent().unwrap_or(Path::new(".")))?;
        Ok(config)
    }

    /// Resolves relative file paths against the configuration file's
    /// directory and checks the files: each subgraph's SDL must be readable
    /// GraphQL.
    pub fn resolve_files(&mut self, base: &Path) -> Result<(), ConfigError> {
        if let Some(auth) = &mut self.auth {
            for key in &mut auth.keys {
                match key {
                    crate::auth::KeySource::JwksFile(c) => c.path = base.join(&c.path),
                    crate::auth::KeySource::HmacSecretFile(c) => c.path = base.join(&c.path),
                    crate::auth::KeySource::JwksUrl(_) => {}
                }
            }
        }
        if let Some(control) = &mut self.control {
            for file in [&mut control.admin_token_file, &mut control.read_token_file]
                .into_iter()
                .flatten()
            {
                *file = base.join(&*file);
            }
        }
        if let Some(list) = &mut self.persisted_queries.safelist {
            *list = base.join(&*list);
        }
        for (i, sg) in self.subgraphs.iter_mut().enumerate() {
            let Some(sdl) = &sg.sdl else { continue };
            let resolved = base.join(sdl);
            let key = format!("subgraphs[{i}].sdl");
            let text = std::fs::read_to_string(&resolved).map_err(|e| {
                ConfigError::invalid(&key, format!("cannot read {}: {e}", resolved.display()))
            })?;
            let cst = apollo_parser::Parser::new(&text).parse();
            if let Some(err) = cst.errors().next() {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "{} is not valid GraphQL: {}",
                        resolved.display(),
                        err.message()
                    ),
                ));
            }
            sg.sdl = Some(resolved);
        }
        Ok(())
    }

    /// Parses and validates a configuration from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| {
            let at = e.span().map(|span| position(text, span.start));
            let reason = match at {
                Some((line, col)) => format!("{} (line {line}, column {col})", e.message()),
                None => e.message().to_string(),
            };
            ConfigError::invalid("<root>", reason)
        })?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = match e.path().to_string().as_str() {
                "." | "" => "<root>".to_string(),
                p => p.to_string(),
            };
            ConfigError::invalid(key, e.into_inner().message().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot: ranges, combinations, CIDRs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kernel.validate("kernel")?;
        if let Some(control) = &self.control {
            control.validate("control")?;
        }
        if let Some(auth) = &self.auth {
            auth.validate("auth")
                .map_err(|e| match e.split_once(": ") {
                    Some((key, reason)) => ConfigError::invalid(key, reason),
                    None => ConfigError::invalid("auth", e),
                })?;
        }
        self.graphql
            .validate("graphql")
            .map_err(|e| match e.split_once(": ") {
                Some((key, reason)) if key.starts_with("graphql") => {
                    ConfigError::invalid(key, reason)
                }
                _ => ConfigError::invalid("graphql", e),
            })?;
        self.authorization
            .validate("authorization")
            .map_err(|e| match e.split_once(": ") {
                Some((key, reason)) => ConfigError::invalid(key, reason),
                None => ConfigError::invalid("authorization", e),
            })?;
        self.persisted_queries
            .validate("persisted_queries")
            .map_err(|(key, reason)| ConfigError::invalid(key, reason))?;
        self.rate_limit
            .validate("rate_limit")
            .map_err(|(key, reason)| ConfigError::invalid(key, reason))?;
        self.tracing
            .validate("tracing")
            .map_err(|(key, reason)| ConfigError::invalid(key, reason))?;
        self.slow_queries
            .validate("slow_queries")
            .map_err(|(key, reason)| ConfigError::invalid(key, reason))?;
        if let Some(sagas) = &self.sagas {
            sagas
                .validate("sagas")
                .map_err(|(key, reason)| ConfigError::invalid(key, reason))?;
            if self.proxy.is_none() {
                return Err(ConfigError::invalid(
                    "sagas",
                    "needs [proxy]: sagas run through the data path and are served on its listener",
                ));
            }
        }
        if let Some(cluster) = &self.cluster {
            cluster
                .validate("cluster")
                .map_err(|(key, reason)| ConfigError::invalid(key, reason))?;
        }
        if self.rate_limit.global && self.cluster.is_none() {
            return Err(ConfigError::invalid(
                "rate_limit.global",
                "needs [cluster]: a global limit is kept in Redis",
            ));
        }
        if self.cluster.is_none()
            && let Some(i) = self
                .subgraphs
                .iter()
                .position(|sg| sg.rate_limit.is_some_and(|r| r.global == Some(true)))
        {
            return Err(ConfigError::invalid(
                format!("subgraphs[{i}].rate_limit.global"),
                "needs [cluster]: a global limit is kept in Redis",
            ));
        }
        if matches!(self.runtime.worker_threads, Some(0 | 1025..)) {
            return Err(ConfigError::invalid(
                "runtime.worker_threads",
                "must be between 1 and 1024 (or unset: one per CPU)",
            ));
        }
        proxy::validate(self.proxy.as_ref(), &self.subgraphs)?;
        for (i, sg) in self.subgraphs.iter().enumerate() {
            if let Some(overrides) = &sg.graphql {
                let at = format!("subgraphs[{i}].graphql");
                self.graphql
                    .overridden(overrides)
                    .map_err(|reason| ConfigError::invalid(&at, reason))?
                    .validate(&at)
                    .map_err(|e| match e.split_once(": ") {
                        Some((key, reason)) => ConfigError::invalid(key, reason),
                        None => ConfigError::invalid(&at, e),
                    })?;
            }
            if let Some(limit) = &sg.rate_limit {
                limit
                    .apply(&self.rate_limit)
                    .validate(&format!("subgraphs[{i}].rate_limit"))
                    .map_err(|(key, reason)| ConfigError::invalid(key, reason))?;
            }
        }
        Ok(())
    }
}

/// 1-based line and column of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

#[cfg(test)]
mod tests;

/// The host name (the default node name of `[cluster]` and `[sagas]`), or
/// `localhost` when it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
