//! The running daemon as operators see and change it: status, readiness,
//! limits, overrides, blocks, breakers and reloads. The gRPC control API
//! ([`crate::control`]), SIGHUP and `/readyz` all go through [`Live`], so a
//! change made one way is seen the others, logged with who made it, and
//! published on the event stream.
//!
//! Changes made here are runtime changes: the configuration they start from
//! is the file's, and a reload replaces them with what the file says.

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;
use prometheus::Registry;

use crate::{
    blocklist::{BlockError, BlockList},
    breaker::Force,
    config::{Config, KernelConfig, OverrideConfig},
    events::{Event, EventBus, Kind},
    fallback::UserLimiter,
    graphql::persisted::PersistedQueries,
    kernel::{AttachMode, KernelMaps, maps::BlockInfo, maps::ClientInfo},
    proxy::{Policy, Proxy, subgraph::Subgraph},
    ratelimit::RateLimitOverride,
};

/// Why an operator's call was not carried out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LiveError {
    /// The arguments are wrong; nothing changed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The subgraph, override or block does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The part of the daemon the call is about is not running.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A table is full (the block list).
    #[error("{0}")]
    Exhausted(String),
    /// The kernel maps or the block list failed.
    #[error("{0}")]
    Internal(String),
}

impl From<BlockError> for LiveError {
    fn from(e: BlockError) -> Self {
        match e {
            BlockError::Ttl => Self::InvalidArgument(e.to_string()),
            BlockError::Full => Self::Exhausted(e.to_string()),
            BlockError::Maps(_) => Self::Internal(e.to_string()),
        }
    }
}

/// How the kernel-layer limits are enforced.
pub enum Enforcer {
    /// XDP: the pinned maps, and where the program is attached.
    Kernel {
        /// A handle of the daemon's own on the pinned maps.
        maps: Box<Mutex<KernelMaps>>,
        /// Interface → how the program was attached at start.
        attachments: Vec<(String, AttachMode)>,
        /// Where the links are pinned.
        pin_path: PathBuf,
    },
    /// Degraded mode: the proxy listener enforces the limits.
    UserSpace(Arc<UserLimiter>),
    /// `kernel.enabled = false`.
    Disabled,
}

impl Enforcer {
    /// `kernel`, `user_space` or `disabled`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Kernel { .. } => "kernel",
            Self::UserSpace(_) => "user_space",
            Self::Disabled => "disabled",
        }
    }
}

/// The configuration in force and when it was loaded.
struct Running {
    config: Config,
    loaded_unix: u64,
}

/// What [`Live::status`] reports.
#[derive(Clone, Debug)]
pub struct Status {
    /// The daemon's version.
    pub version: &'static str,
    /// Since the daemon started.
    pub uptime_secs: u64,
    /// `kernel`, `user_space` or `disabled`.
    pub enforcement: &'static str,
    /// Interface → how it is enforced (`None`: user space).
    pub interfaces: Vec<(String, Option<AttachMode>)>,
    /// Why the daemon is not ready (empty: ready).
    pub not_ready: Vec<String>,
    /// The configuration file.
    pub config_path: PathBuf,
    /// Unix time the configuration in force was loaded.
    pub config_loaded_unix: u64,
    /// Successful reloads since start.
    pub reloads: u64,
    /// Subgraphs configured.
    pub subgraphs: usize,
    /// Cluster mode, when `[cluster]` is configured.
    pub cluster: Option<ClusterStatus>,
}

/// Where the node stands in cluster mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This node's name.
    pub node: String,
    /// False while its last call to Redis failed.
    pub redis_reachable: bool,
    /// What it does without Redis.
    pub failure_mode: crate::cluster::FailureMode,
    /// `[rate_limit] global`.
    pub global_limits: bool,
    /// Global checks: allowed, limited, unavailable.
    pub checks: [u64; 3],
    /// The block sharing, when on.
    pub blocks: Option<crate::cluster::blocks::BlockSyncStatus>,
}

/// Cluster mode's parts, for the status and the block calls.
pub struct ClusterParts {
    /// This node's name.
    pub node: String,
    /// The global limiter.
    pub limiter: Arc<crate::cluster::GlobalLimiter>,
    /// The shared blocks (`[cluster] blocks`, with a block list).
    pub blocks: Option<Arc<crate::cluster::blocks::SharedBlocks>>,
}

/// The limits in force.
#[derive(Clone, Debug)]
pub struct Limits {
    /// `None` when the kernel layer is disabled.
    pub kernel: Option<KernelConfig>,
    /// The global per-identity limit: requests per minute, burst.
    pub rate_limit: (u32, u32),
    /// Whether it is held across every node (cluster mode).
    pub rate_limit_cluster_wide: bool,
    /// Each subgraph's limit.
    pub subgraphs: Vec<crate::ratelimit::SubgraphLimit>,
}

/// What a reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// What changed and is in force now.
    pub applied: Vec<String>,
    /// What changed in the file and needs a restart.
    pub needs_restart: Vec<String>,
}

/// What the control API and SIGHUP act on.
pub struct Live {
    started: Instant,
    config_path: PathBuf,
    running: Mutex<Running>,
    reloads: AtomicU64,
    enforcer: Enforcer,
    blocks: Option<Arc<BlockList>>,
    proxy: Option<Arc<Proxy>>,
    sagas: Option<Arc<crate::saga::Coordinator>>,
    cluster: Option<ClusterParts>,
    events: EventBus,
    registry: Registry,
    reload_metrics: crate::metrics::ReloadMetrics,
    /// Called with the new configuration after a reload (the control API
    /// re-reads its token files there).
    on_reload: Mutex<Vec<ReloadHook>>,
}

/// Takes the configuration of a reload in; an error rejects the reload.
type ReloadHook = Box<dyn Fn(&Config) -> Result<(), String> + Send + Sync>;

/// What [`Live`] is built from.
pub struct LiveParts {
    /// The configuration loaded at start.
    pub config: Config,
    /// Its file, for reloads.
    pub config_path: PathBuf,
    /// How the kernel limits are enforced.
    pub enforcer: Enforcer,
    /// The block list in force.
    pub blocks: Option<Arc<BlockList>>,
    /// The data path.
    pub proxy: Option<Arc<Proxy>>,
    /// The saga coordinator (`[sagas]`).
    pub sagas: Option<Arc<crate::saga::Coordinator>>,
    /// Cluster mode (`[cluster]`).
    pub cluster: Option<ClusterParts>,
    /// The event stream.
    pub events: EventBus,
    /// Every metric.
    pub registry: Registry,
    /// Reloads, counted.
    pub reload_metrics: crate::metrics::ReloadMetrics,
}

impl Live {
    /// The live state of a daemon that has just started.
    pub fn new(parts: LiveParts) -> Self {
        Self {
            started: Instant::now(),
            config_path: parts.config_path,
            running: Mutex::new(Running {
                config: parts.config,
                loaded_unix: unix_now(),
            }),
            reloads: AtomicU64::new(0),
            enforcer: parts.enforcer,
            blocks: parts.blocks,
            proxy: parts.proxy,
            sagas: parts.sagas,
            cluster: parts.cluster,
            events: parts.events,
            registry: parts.registry,
            reload_metrics: parts.reload_metrics,
            on_reload: Mutex::new(Vec::new()),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration in force, runtime changes included.
    pub fn config(&self) -> Config {
        self.running().config.clone()
    }

    /// The event stream.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// Every metric of the daemon.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The data path, when configured.
    pub fn proxy(&self) -> Option<&Arc<Proxy>> {
        self.proxy.as_ref()
    }

    /// The saga coordinator, when `[sagas]` is configured.
    pub fn sagas(&self) -> Option<&Arc<crate::saga::Coordinator>> {
        self.sagas.as_ref()
    }

    /// Runs `f` with the configuration of every later reload, before
    /// anything else of it is applied; an error rejects the reload.
    pub fn on_reload(&self, f: impl Fn(&Config) -> Result<(), String> + Send + Sync + 'static) {
        self.on_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(f));
    }

    /// Why the daemon cannot serve yet (empty: ready): the kernel program
    /// must be attached (its pinned links present) or the user-space
    /// fallback active, and every subgraph must have a healthy endpoint or
    /// be in panic mode.
    pub fn not_ready(&self) -> Vec<String> {
        let mut why = Vec::new();
        if let Enforcer::Kernel {
            attachments,
            pin_path,
            ..
        } = &self.enforcer
        {
            for (iface, _) in attachments {
                if !pin_path.join(crate::kernel::xdp_link_name(iface)).exists() {
                    why.push(format!("XDP program not attached to {iface}"));
                }
            }
        }
        if let Some(proxy) = &self.proxy {
            for sg in proxy.unready_subgraphs() {
                why.push(format!("no healthy endpoint: {sg}"));
            }
        }
        why
    }

    /// Version, uptime, enforcement, readiness.
    pub fn status(&self) -> Status {
        let interfaces = match &self.enforcer {
            Enforcer::Kernel { attachments, .. } => attachments
                .iter()
                .map(|(i, m)| (i.clone(), Some(*m)))
                .collect(),
            Enforcer::UserSpace(_) => self
                .running()
                .config
                .kernel
                .interfaces
                .iter()
                .map(|i| (i.clone(), None))
                .collect(),
            Enforcer::Disabled => Vec::new(),
        };
        let running = self.running();
        Status {
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: self.started.elapsed().as_secs(),
            enforcement: self.enforcer.name(),
            interfaces,
            not_ready: self.not_ready(),
            config_path: self.config_path.clone(),
            config_loaded_unix: running.loaded_unix,
            reloads: self.reloads.load(Ordering::Relaxed),
            subgraphs: running.config.subgraphs.len(),
            cluster: self.cluster.as_ref().map(|c| {
                let blocks = c.blocks.as_ref().map(|b| b.status());
                ClusterStatus {
                    node: c.node.clone(),
                    redis_reachable: c.limiter.is_up() && blocks.is_none_or(|b| b.synced),
                    failure_mode: c.limiter.failure_mode(),
                    global_limits: running.config.rate_limit.global,
                    checks: c.limiter.counts(),
                    blocks,
                }
            }),
        }
    }

    fn shared_blocks(&self) -> Option<&crate::cluster::blocks::SharedBlocks> {
        self.cluster.as_ref().and_then(|c| c.blocks.as_deref())
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        let cfg = self.config();
        let subgraphs = match &self.proxy {
            Some(p) => {
                let names = p.subgraph_names();
                p.rate_limits().describe(names.iter().map(String::as_str))
            }
            None => Vec::new(),
        };
        Limits {
            kernel: (!matches!(self.enforcer, Enforcer::Disabled)).then_some(cfg.kernel),
            rate_limit: (cfg.rate_limit.requests_per_minute, cfg.rate_limit.burst),
            rate_limit_cluster_wide: cfg.rate_limit.global
                && cfg.rate_limit.requests_per_minute > 0,
            subgraphs,
        }
    }

    /// Validates `next` (the running configuration with one change) and
    /// puts its kernel limits in force; on success it becomes the running
    /// configuration.
    fn change_kernel(&self, next: Config) -> Result<(), LiveError> {
        next.validate()
            .map_err(|e| LiveError::InvalidArgument(e.to_string()))?;
        self.apply_kernel(&next.kernel)?;
        self.running().config = next;
        Ok(())
    }

    fn apply_kernel(&self, cfg: &KernelConfig) -> Result<(), LiveError> {
        match &self.enforcer {
            Enforcer::Kernel { maps, .. } => maps
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .apply(cfg)
                .map_err(|e| LiveError::Internal(format!("updating the kernel maps: {e}"))),
            Enforcer::UserSpace(l) => {
                l.reconfigure(cfg);
                Ok(())
            }
            Enforcer::Disabled => Err(kernel_disabled()),
        }
    }

    fn changed(&self, who: &str, what: String) {
        tracing::warn!(by = who, change = %what, "configuration changed at runtime");
        self.events
            .publish(Event::new(Kind::ConfigChange, "", what).by(who));
    }

    /// Sets the default kernel limits; unset values stay.
    pub fn set_kernel_limits(
        &self,
        who: &str,
        rate: Option<u64>,
        burst: Option<u64>,
        max_conns: Option<u32>,
    ) -> Result<Limits, LiveError> {
        if matches!(self.enforcer, Enforcer::Disabled) {
            return Err(kernel_disabled());
        }
        let mut next = self.config();
        let before = (next.kernel.rate, next.kernel.burst, next.kernel.max_conns);
        next.kernel.rate = rate.unwrap_or(next.kernel.rate);
        next.kernel.burst = burst.unwrap_or(next.kernel.burst);
        next.kernel.max_conns = max_conns.unwrap_or(next.kernel.max_conns);
        let after = (next.kernel.rate, next.kernel.burst, next.kernel.max_conns);
        self.change_kernel(next)?;
        self.changed(
            who,
            format!(
                "kernel limits: rate {} -> {}, burst {} -> {}, max_conns {} -> {}",
                before.0, after.0, before.1, after.1, before.2, after.2
            ),
        );
        Ok(self.limits())
    }

    /// Sets the per-identity limit, globally (`subgraph` `None`) or for one
    /// subgraph; `inherit` drops a subgraph's own limit.
    pub fn set_rate_limit(
        &self,
        who: &str,
        subgraph: Option<&str>,
        requests_per_minute: Option<u32>,
        burst: Option<u32>,
        inherit: bool,
    ) -> Result<Limits, LiveError> {
        let Some(proxy) = &self.proxy else {
            return Err(LiveError::FailedPrecondition(
                "no [proxy] is configured: there is no per-identity limit".into(),
            ));
        };
        let mut next = self.config();
        let what = match subgraph {
            None => {
                if inherit {
                    return Err(LiveError::InvalidArgument(
                        "inherit applies to a subgraph's own limit; name the subgraph".into(),
                    ));
                }
                let rl = &mut next.rate_limit;
                rl.requests_per_minute = requests_per_minute.unwrap_or(rl.requests_per_minute);
                rl.burst = burst.unwrap_or(rl.burst);
                format!(
                    "rate limit: {}/min, burst {}",
                    rl.requests_per_minute, rl.burst
                )
            }
            Some(name) => {
                let global = next.rate_limit.clone();
                let Some(sg) = next.subgraphs.iter_mut().find(|s| s.name == name) else {
                    return Err(LiveError::NotFound(format!("no subgraph named `{name}`")));
                };
                if inherit {
                    if requests_per_minute.is_some() || burst.is_some() {
                        return Err(LiveError::InvalidArgument(
                            "inherit takes no requests_per_minute or burst".into(),
                        ));
                    }
                    sg.rate_limit = None;
                    format!("rate limit of subgraph {name}: the global one")
                } else {
                    let base = sg.rate_limit.unwrap_or(RateLimitOverride {
                        requests_per_minute: global.requests_per_minute,
                        burst: global.burst,
                        global: None,
                    });
                    let own = RateLimitOverride {
                        requests_per_minute: requests_per_minute
                            .unwrap_or(base.requests_per_minute),
                        burst: burst.unwrap_or(base.burst),
                        // Whether it is held across nodes stays as configured.
                        global: base.global,
                    };
                    sg.rate_limit = Some(own);
                    format!(
                        "rate limit of subgraph {name}: {}/min, burst {}",
                        own.requests_per_minute, own.burst
                    )
                }
            }
        };
        next.validate()
            .map_err(|e| LiveError::InvalidArgument(e.to_string()))?;
        proxy.set_rate_limits(
            &next.rate_limit,
            next.subgraphs
                .iter()
                .map(|s| (s.name.as_str(), s.rate_limit)),
        );
        self.running().config = next;
        self.changed(who, what);
        Ok(self.limits())
    }

    /// The CIDR overrides in force.
    pub fn overrides(&self) -> Result<Vec<OverrideConfig>, LiveError> {
        if matches!(self.enforcer, Enforcer::Disabled) {
            return Err(kernel_disabled());
        }
        Ok(self.running().config.kernel.overrides.clone())
    }

    /// Adds an override, or replaces the one for the same network.
    pub fn add_override(&self, who: &str, o: OverrideConfig) -> Result<OverrideConfig, LiveError> {
        let mut next = self.config();
        let cidr = o.cidr.trunc();
        let o = OverrideConfig { cidr, ..o };
        next.kernel.overrides.retain(|x| x.cidr.trunc() != cidr);
        next.kernel.overrides.push(o.clone());
        self.change_kernel(next)?;
        self.changed(
            who,
            format!("override {cidr}: {:?}", o.action).to_lowercase(),
        );
        Ok(o)
    }

    /// Removes the override for `cidr`.
    pub fn remove_override(&self, who: &str, cidr: IpNet) -> Result<OverrideConfig, LiveError> {
        let cidr = cidr.trunc();
        let mut next = self.config();
        let Some(i) = next
            .kernel
            .overrides
            .iter()
            .position(|x| x.cidr.trunc() == cidr)
        else {
            return Err(LiveError::NotFound(format!("no override for {cidr}")));
        };
        let removed = next.kernel.overrides.remove(i);
        self.change_kernel(next)?;
        self.changed(who, format!("override {cidr} removed"));
        Ok(removed)
    }

    fn block_list(&self) -> Result<&BlockList, LiveError> {
        self.blocks.as_deref().ok_or_else(|| {
            LiveError::FailedPrecondition(
                "the kernel layer is disabled (kernel.enabled = false): there is no block list"
                    .into(),
            )
        })
    }

    /// `kernel` or `user_space`: where blocks are enforced.
    pub fn enforced_by(&self) -> &'static str {
        self.blocks
            .as_deref()
            .map_or("disabled", BlockList::enforced_by)
    }

    /// Blocks `addr` for `ttl_secs` (`None`: until unblocked).
    pub fn block(
        &self,
        who: &str,
        addr: IpAddr,
        ttl_secs: Option<u64>,
        reason: &str,
    ) -> Result<BlockInfo, LiveError> {
        let list = self.block_list()?;
        let info = list.block(addr, ttl_secs)?;
        tracing::warn!(client = %addr, ttl_secs, by = who, reason, enforced_by = list.enforced_by(), "client blocked by an operator");
        self.events.block(addr, ttl_secs, who, reason);
        if let Some(shared) = self.shared_blocks() {
            // As stored: every node then names the same client.
            shared.blocked(info.client, ttl_secs, who, reason);
        }
        Ok(info)
    }

    /// Lifts the block of `addr`; false when it was not blocked.
    pub fn unblock(&self, who: &str, addr: IpAddr) -> Result<bool, LiveError> {
        let list = self.block_list()?;
        let removed = list.unblock(addr)?;
        if removed {
            tracing::warn!(client = %addr, by = who, "client unblocked by an operator");
            self.events.unblock(addr, who);
        }
        // Lifted everywhere, even if this node no longer held it (it may
        // have been set elsewhere while this node was away from Redis).
        if let Some(shared) = self.shared_blocks() {
            shared.unblocked(list.client_of(addr)?, who);
        }
        Ok(removed)
    }

    /// The blocks in force.
    pub fn blocks(&self) -> Result<Vec<BlockInfo>, LiveError> {
        Ok(self.block_list()?.list()?)
    }

    /// The `limit` busiest clients of the kernel maps.
    pub fn top_clients(&self, limit: usize) -> Result<Vec<ClientInfo>, LiveError> {
        match &self.enforcer {
            Enforcer::Kernel { maps, .. } => maps
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .top_clients(limit)
                .map_err(|e| LiveError::Internal(format!("reading the kernel maps: {e}"))),
            Enforcer::UserSpace(l) => Ok(l.top_clients(limit)),
            Enforcer::Disabled => Err(kernel_disabled()),
        }
    }

    /// The subgraph called `name`.
    pub fn subgraph(&self, name: &str) -> Result<Arc<Subgraph>, LiveError> {
        let Some(proxy) = &self.proxy else {
            return Err(LiveError::FailedPrecondition(
                "no [proxy] is configured: there are no subgraphs".into(),
            ));
        };
        proxy
            .subgraph(name)
            .ok_or_else(|| LiveError::NotFound(format!("no subgraph named `{name}`")))
    }

    /// Forces a breaker (`Some(Force)`), lifts the force (`Some(None)`), or
    /// resets it (`None`).
    pub fn set_breaker(
        &self,
        who: &str,
        name: &str,
        action: Option<Force>,
    ) -> Result<Arc<Subgraph>, LiveError> {
        let sg = self.subgraph(name)?;
        let what = match action {
            Some(Force::Open) => "forced open",
            Some(Force::Closed) => "forced closed",
            Some(Force::None) => "back to automatic",
            None => "reset",
        };
        match action {
            Some(f) => sg.breaker.force(f),
            None => sg.breaker.reset(),
        }
        tracing::warn!(
            subgraph = name,
            action = what,
            by = who,
            "breaker changed by an operator"
        );
        self.events.publish(
            Event::new(Kind::ConfigChange, name, format!("breaker {what}"))
                .by(who)
                .with("breaker", what),
        );
        Ok(sg)
    }

    /// Re-reads the configuration file and applies what can change live;
    /// an invalid file changes nothing and says why.
    pub fn reload(&self, who: &str) -> Result<ReloadReport, LiveError> {
        let result = self.try_reload();
        self.reload_metrics.record(result.is_ok());
        match &result {
            Ok(report) => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(by = who, applied = ?report.applied, needs_restart = ?report.needs_restart, "configuration reloaded");
                let mut e = Event::new(
                    Kind::Reload,
                    self.config_path.display().to_string(),
                    "reloaded",
                )
                .by(who)
                .with("result", "ok")
                .with("applied", report.applied.join("; "));
                if !report.needs_restart.is_empty() {
                    e = e.with("needs_restart", report.needs_restart.join("; "));
                }
                self.events.publish(e);
            }
            Err(err) => {
                tracing::error!(by = who, error = %err, "reload rejected; keeping the running configuration");
                self.events.publish(
                    Event::new(
                        Kind::Reload,
                        self.config_path.display().to_string(),
                        format!("rejected: {err}"),
                    )
                    .by(who)
                    .with("result", "rejected")
                    .with("error", err),
                );
            }
        }
        result
    }

    fn try_reload(&self) -> Result<ReloadReport, LiveError> {
        let next = Config::load(&self.config_path)
            .map_err(|e| LiveError::FailedPrecondition(format!("invalid configuration: {e}")))?;
        if next.kernel.enabled {
            crate::config::check_interfaces(&next.kernel).map_err(|e| {
                LiveError::FailedPrecondition(format!("invalid configuration: {e}"))
            })?;
        }
        for hook in self
            .on_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            hook(&next).map_err(LiveError::FailedPrecondition)?;
        }
        let current = self.config();
        let mut report = ReloadReport::default();
        let (k0, k1) = (&current.kernel, &next.kernel);
        for (changed, what) in [
            (k0.enabled != k1.enabled, "kernel.enabled"),
            (k0.interfaces != k1.interfaces, "kernel.interfaces"),
            (k0.xdp_mode != k1.xdp_mode, "kernel.xdp_mode"),
            (k0.pin_path != k1.pin_path, "kernel.pin_path"),
            (k0.ipv6_prefix != k1.ipv6_prefix, "kernel.ipv6_prefix"),
            (
                k0.ebpf_debug_log != k1.ebpf_debug_log,
                "kernel.ebpf_debug_log",
            ),
            (current.proxy != next.proxy, "[proxy]"),
            (current.admin != next.admin, "[admin]"),
            (
                current.control.as_ref().map(|c| (&c.socket, c.listen))
                    != next.control.as_ref().map(|c| (&c.socket, c.listen)),
                "[control] socket/listen",
            ),
            (current.runtime != next.runtime, "[runtime]"),
            (current.slow_queries != next.slow_queries, "[slow_queries]"),
            (current.tracing != next.tracing, "[tracing]"),
            (current.sagas != next.sagas, "[sagas]"),
            (current.cluster != next.cluster, "[cluster]"),
            (
                current.rate_limit.global != next.rate_limit.global,
                "rate_limit.global",
            ),
            (
                current.rate_limit.escalation != next.rate_limit.escalation
                    || current.rate_limit.max_keys != next.rate_limit.max_keys,
                "rate_limit.escalation/max_keys",
            ),
            (
                self.proxy.is_none() && (!next.subgraphs.is_empty() || next.auth.is_some()),
                "[[subgraphs]] and [auth] without a running [proxy]",
            ),
        ] {
            if changed {
                report.needs_restart.push(what.to_string());
            }
        }
        let live_kernel = |k: &KernelConfig| {
            (
                k.rate,
                k.burst,
                k.max_conns,
                k.protected_ports.clone(),
                k.drop_event_sampling,
                k.overrides.clone(),
            )
        };
        let kernel_changed = live_kernel(k0) != live_kernel(k1);
        let enabled_both = k0.enabled && k1.enabled;
        if kernel_changed && enabled_both && !matches!(self.enforcer, Enforcer::Disabled) {
            self.apply_kernel(k1)?;
            report
                .applied
                .push("kernel limits, protected ports, overrides, drop-event sampling".to_string());
        }
        let limits = |c: &Config| {
            (
                c.rate_limit.requests_per_minute,
                c.rate_limit.burst,
                c.subgraphs
                    .iter()
                    .map(|s| (s.name.clone(), s.rate_limit))
                    .collect::<Vec<_>>(),
            )
        };
        if let Some(proxy) = &self.proxy {
            // Everything that can fail first, so a failure changes nothing.
            let policy = policy_for(proxy, &current, &next)?;
            report.applied.extend(proxy.reload(&next.subgraphs, policy));
            if limits(&current) != limits(&next) {
                report.applied.push("per-identity rate limits".to_string());
            }
            proxy.set_rate_limits(
                &next.rate_limit,
                next.subgraphs
                    .iter()
                    .map(|s| (s.name.as_str(), s.rate_limit)),
            );
        }
        if current
            .control
            .as_ref()
            .map(|c| (&c.admin_token_file, &c.read_token_file))
            != next
                .control
                .as_ref()
                .map(|c| (&c.admin_token_file, &c.read_token_file))
        {
            report.applied.push("control token files".to_string());
        }
        let mut running = self.running();
        running.config = next;
        running.loaded_unix = unix_now();
        Ok(report)
    }
}

fn kernel_disabled() -> LiveError {
    LiveError::FailedPrecondition("the kernel layer is disabled (kernel.enabled = false)".into())
}

/// The data path's policy for `next`: a new authenticator when `[auth]`
/// changed or reads key files (rotated keys), new persisted queries when
/// `[persisted_queries]` changed or has a safelist file; the running ones
/// otherwise (their caches stay warm).
fn policy_for(proxy: &Proxy, current: &Config, next: &Config) -> Result<Policy, LiveError> {
    let running = proxy.policy();
    let reads_files = |a: &crate::auth::AuthConfig| {
        a.keys
            .iter()
            .any(|k| !matches!(k, crate::auth::KeySource::JwksUrl(_)))
    };
    let auth = match &next.auth {
        Some(a) if current.auth.as_ref() != Some(a) || reads_files(a) => {
            let built = tokio::runtime::Handle::current()
                .block_on(crate::auth::Authenticator::new(a.clone()))
                .map_err(|e| {
                    LiveError::FailedPrecondition(format!("[auth] could not be loaded: {e}"))
                })?;
            Some(Arc::new(built))
        }
        Some(_) => running.auth.clone(),
        None => None,
    };
    let pq = &next.persisted_queries;
    let persisted = if running.persisted.config() != pq || pq.safelist.is_some() {
        Arc::new(PersistedQueries::new(pq).map_err(|e| {
            LiveError::FailedPrecondition(format!("[persisted_queries] could not be loaded: {e}"))
        })?)
    } else {
        Arc::clone(&running.persisted)
    };
    Ok(Policy {
        auth,
        graphql: next.graphql.clone(),
        persisted,
        authz: next.authorization.clone(),
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
